"""Patient-trial loading: TrialGPT's retrieved_trials.json or the judged-pairs fallback, cohort-local 1-shot
exemplars and line-aware sentence numbering (invented fixtures in the real layouts)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from medkit.data.schema import message_text
from medkit.eval.benchmarks import BenchmarkDataError, MissingBenchmarkFile, load_benchmark
from medkit.eval.benchmarks.base import stable_int
from medkit.eval.benchmarks.in_context import ExemplarPool, sentences

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
# every fixture pair has a qrels grade; trec-1 x NCT90000004 is judged but was not retrieved
RETRIEVED = {"sigir-sigir-1-NCT90000001", "sigir-sigir-1-NCT90000002", "sigir-sigir-2-NCT90000002",
             "sigir-sigir-2-NCT90000001", "trec_2021-trec-1-NCT90000003", "trec_2021-trec-2-NCT90000004",
             "trec_2021-trec-2-NCT90000003"}
JUDGED_ONLY = "trec_2021-trec-1-NCT90000004"


def data_root(tmp_path: Path, cohorts: dict[str, str], *, retrieved: bool = True) -> Path:
    """A data root whose patient_trial/<cohort> folders copy the fixture cohorts named by the values."""
    for cohort, source in cohorts.items():
        target = tmp_path / "patient_trial" / cohort
        shutil.copytree(FIXTURES / "patient_trial" / source, target)
        if not retrieved:
            (target / "retrieved_trials.json").unlink()
    return tmp_path


def load(name: str, root: Path = FIXTURES):
    return load_benchmark(name, data_root=root)


def pair_key(item) -> str:
    return item.id.split("-", 1)[1]


def test_retrieved_trials_json_gives_the_items_and_the_count_note_says_so():
    loaded = load("patient_trial_0shot")
    assert {pair_key(i) for i in loaded.items} == RETRIEVED
    assert {i.meta["pairs_from"] for i in loaded.items} == {"retrieved_trials.json"}
    assert "4,936 expected (Table 3), got 7" in loaded.count_note
    assert ("sigir: 4 from retrieved_trials.json (retrieved candidates); trec_2021: 3 from retrieved_trials.json"
            in loaded.count_note)  # what this load read, cohort by cohort
    assert "each cohort's retrieved_trials.json (TrialGPT's retrieved candidate trials" in loaded.count_note


def test_without_retrieved_trials_json_every_judged_pair_with_a_note_on_the_difference(tmp_path):
    root = data_root(tmp_path, {"sigir": "sigir", "trec_2021": "trec_2021"}, retrieved=False)
    loaded = load("patient_trial_0shot", root)
    assert {pair_key(i) for i in loaded.items} == RETRIEVED | {JUDGED_ONLY}
    assert {i.meta["pairs_from"] for i in loaded.items} == {"qrels/test.tsv"}
    assert "got 8" in loaded.count_note
    assert "from qrels/test.tsv (all judged pairs, not the paper's set)" in loaded.count_note
    assert "falls back to all its judged pairs" in loaded.count_note
    assert "75,061 over the three cohorts, a larger set than Table 3's" in loaded.count_note


def test_each_cohort_reads_its_own_layout(tmp_path):
    root = data_root(tmp_path, {"sigir": "sigir"})
    data_root(tmp_path, {"trec_2021": "trec_2021"}, retrieved=False)
    items = load("patient_trial_0shot", root).items
    assert {i.meta["cohort"]: i.meta["pairs_from"] for i in items} == {"sigir": "retrieved_trials.json",
                                                                      "trec_2021": "qrels/test.tsv"}
    assert JUDGED_ONLY in {pair_key(i) for i in items}


def test_a_cohort_folder_without_either_layout_names_both(tmp_path):
    (tmp_path / "patient_trial" / "trec_2022").mkdir(parents=True)
    with pytest.raises(MissingBenchmarkFile, match=r"trec_2022: expected retrieved_trials.json .*, or queries.jsonl"):
        load("patient_trial_0shot", tmp_path)


def test_one_shot_prompts_do_not_change_when_a_cohort_is_added_or_removed(tmp_path):
    both = {pair_key(i): i for i in load("patient_trial_1shot").items}
    sigir_only = load("patient_trial_1shot", data_root(tmp_path / "one", {"sigir": "sigir"})).items
    three = load("patient_trial_1shot", data_root(tmp_path / "three", {"sigir": "sigir", "trec_2021": "trec_2021",
                                                                        "trec_2022": "trec_2021"})).items
    for item in [*sigir_only, *three]:
        if item.meta["cohort"] != "trec_2022":
            assert item.messages == both[pair_key(item)].messages, pair_key(item)
            assert item.meta["exemplar_key"] == both[pair_key(item)].meta["exemplar_key"]
    for item in both.values():  # the exemplar is another patient of the item's own cohort
        shot = both[item.meta["exemplar_key"]]
        assert shot.meta["cohort"] == item.meta["cohort"] and shot.meta["patient_id"] != item.meta["patient_id"]


def test_a_cohort_with_one_patient_has_no_exemplar_and_says_where(tmp_path):
    root = data_root(tmp_path, {"trec_2021": "trec_2021"})
    path = root / "patient_trial" / "trec_2021" / "retrieved_trials.json"
    path.write_text(json.dumps(json.loads(path.read_text())[:1]))
    with pytest.raises(BenchmarkDataError, match=rf"{root / 'patient_trial' / 'trec_2021'}: no 1-shot exemplar"
                                                 r" for item 'trec_2021-trec-1-NCT90000003'"):
        load("patient_trial_1shot", root)


def test_exemplar_pool_draws_what_a_filtered_scan_draws():
    rng = random.Random(0)
    entries = [(f"e{i}", f"g{rng.randrange(6)}") for i in range(60)]
    pool = ExemplarPool(entries, lambda e: e[1], "task", "here")
    for key, group in [(f"item{i}", f"g{i % 7}") for i in range(200)]:  # g6: a group with no entries
        others = [e for e in entries if e[1] != group]
        expected = others[random.Random(stable_int("task-exemplar", key)).randrange(len(others))]
        assert pool.draw(key, group) == expected


def test_numbered_list_items_stay_one_sentence_each():
    items = {pair_key(i): i for i in load("patient_trial_0shot").items}
    text = message_text(items["trec_2021-trec-2-NCT90000004"].messages[-1])
    assert ("1. Echo showed an EF of 30%.\n2. Past Medical History:\n3. 1. Mild asthma\n4. 2. HTN\n"
            "5. 3. Gout, last flare 2 years ago\n6. Medications:\n7. - furosemide 40 mg daily\n8. - allopurinol\n"
            in text)
    assert sentences("History:\n 1.  Rare migraines\n2. HTN. Treated.\n\n(3) Gout") == [
        "History:", "1. Rare migraines", "2. HTN.", "Treated.", "(3) Gout"]


@pytest.mark.parametrize("edit, message", [
    (lambda entries: entries[0]["2"].append(entries[0]["0"][0]),
     r"item 0 \(patient 'sigir-1'\) grade 0 trial 0: trial 'NCT90000002' is listed twice"),
    (lambda entries: entries[1].update({"1": "NCT90000001"}),
     r"item 1 \(patient 'sigir-2'\): grade 1 must be a list of trials"),
    (lambda entries: entries[1]["2"][0].pop("NCTID"), r"item 1 \(patient 'sigir-2'\) grade 2 trial 0: field 'NCTID'"),
    (lambda entries: entries.append(entries[0]), r"item 2: patient 'sigir-1' is listed twice"),
])
def test_bad_retrieved_records_are_errors_naming_file_and_record(tmp_path, edit, message):
    root = data_root(tmp_path, {"sigir": "sigir"})
    path = root / "patient_trial" / "sigir" / "retrieved_trials.json"
    entries = json.loads(path.read_text())
    edit(entries)
    path.write_text(json.dumps(entries))
    with pytest.raises(BenchmarkDataError, match=rf"{path} {message}"):
        load("patient_trial_0shot", root)
