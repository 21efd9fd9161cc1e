"""Benchmark registry, native converters (on invented fixtures in each native format) and synthetic counterparts."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medkit.data.schema import message_text
from medkit.eval.benchmarks import (
    Benchmark,
    BenchmarkDataError,
    DuplicateBenchmarkError,
    MissingBenchmarkFile,
    UnknownBenchmarkError,
    all_benchmarks,
    benchmark_names,
    get_benchmark,
    load_benchmark,
    register,
)
from medkit.eval.benchmarks.in_context import TRIAL_OPTIONS, clean_criteria, sentences
from medkit.eval.benchmarks.prompts import MC_CONSTRAINT

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"

MC_BENCHMARKS = ["medxpertqa_mm", "slake", "medframeqa", "mmmu_med", "mmmu_pro_med_4", "mmmu_pro_med_10",
                 "medqa", "medmcqa", "pubmedqa", "mmlu_med", "medxpertqa_text", "medbullets"]
OTHER_BENCHMARKS = ["mimic_cxr_report", "patient_trial_0shot", "patient_trial_1shot", "impression_0shot",
                    "impression_1shot"]
TABLE3 = {"medxpertqa_mm": 2000, "slake": 836, "medframeqa": 2851, "mmmu_med": 175, "mmmu_pro_med_4": 286,
          "mmmu_pro_med_10": 286, "medqa": 1273, "medmcqa": 4183, "pubmedqa": 500, "mmlu_med": 1395,
          "medxpertqa_text": 2450, "medbullets": 298, "mimic_cxr_report": 2231, "patient_trial_0shot": 4936,
          "patient_trial_1shot": 4936, "impression_0shot": 1564, "impression_1shot": 1564}


def native(name: str, root: Path = FIXTURES):
    return load_benchmark(name, data_root=root)


def user_text(sample) -> str:
    return message_text(sample.messages[-1])


def rel(paths: list[str], root: Path = FIXTURES) -> list[str]:
    return [Path(p).relative_to(root.resolve()).as_posix() for p in paths]


def copy_fixture(tmp_path: Path, folder: str) -> Path:
    shutil.copytree(FIXTURES / folder, tmp_path / folder)
    return tmp_path


# ---------------------------------------------------------------------------------------------------
# Registry


def test_all_paper_benchmarks_registered_with_table3_counts():
    assert benchmark_names() == MC_BENCHMARKS + OTHER_BENCHMARKS
    for name, count in TABLE3.items():
        assert get_benchmark(name).expected_count == count
    assert all(get_benchmark(n).kind == "mc" and get_benchmark(n).scorer == "strict_mc" for n in MC_BENCHMARKS)
    assert get_benchmark("mimic_cxr_report").kind == "report"
    assert get_benchmark("impression_1shot").scorer == "ratescore" and get_benchmark("impression_1shot").shots == 1
    assert benchmark_names(table=4) == MC_BENCHMARKS[:6]
    assert benchmark_names(table="5") == MC_BENCHMARKS[6:]
    assert benchmark_names(table=6) == OTHER_BENCHMARKS[1:]


def test_unknown_benchmark_error_lists_known_names():
    with pytest.raises(UnknownBenchmarkError, match="unknown benchmark 'nope'.*medqa"):
        get_benchmark("nope")


def test_duplicate_registration_refused():
    with pytest.raises(DuplicateBenchmarkError, match="medqa"):
        register(get_benchmark("medqa"))


def test_benchmark_rejects_bad_kind():
    b = get_benchmark("medqa")
    with pytest.raises(ValueError, match="kind"):
        Benchmark(**{**{f: getattr(b, f) for f in b.__dataclass_fields__}, "name": "x", "kind": "open"})


def test_load_benchmark_needs_exactly_one_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        load_benchmark("medqa")
    with pytest.raises(ValueError, match="exactly one"):
        load_benchmark("medqa", data_root=tmp_path, corpus_dir=tmp_path)


def test_missing_native_folder_and_file_named(tmp_path):
    with pytest.raises(MissingBenchmarkFile, match=str(tmp_path / "medqa")):
        native("medqa", tmp_path)
    (tmp_path / "pubmedqa").mkdir()
    with pytest.raises(FileNotFoundError, match="ori_pqal.json"):
        native("pubmedqa", tmp_path)


def test_count_note_mentions_table3_and_limit():
    loaded = native("slake")
    assert "836 expected (Table 3), got 6" in loaded.count_note  # 5 English + 1 Chinese closed question
    limited = load_benchmark("medqa", data_root=FIXTURES, limit=2)
    assert len(limited.items) == 2 and "1,273 expected (Table 3), got 3" in limited.count_note
    assert "limited to the first 2" in limited.count_note
    assert "308" in native("medbullets").count_note


# ---------------------------------------------------------------------------------------------------
# VQA converters


def test_medxpertqa_mm():
    items = native("medxpertqa_mm").items
    assert [i.id for i in items] == ["MM-001", "MM-002"]
    first = items[0]
    assert first.meta["answer"] == "C" and list(first.meta["options"]) == list("ABCDE")
    assert rel(first.images) == ["medxpertqa/images/mm-001-a.png", "medxpertqa/images/mm-001-b.png"]
    assert first.num_image_parts == 2 and first.meta["body_system"] == "Integumentary"
    text = user_text(first)
    assert "Answer Choices" not in text and "C. Gamma" in text and text.endswith(MC_CONSTRAINT)
    assert all(m["role"] != "assistant" for m in first.messages)


def test_slake_english_closed_only_with_options():
    items = {i.id: i for i in load_benchmark("slake", data_root=FIXTURES, options={"languages": ("en",)}).items}
    assert sorted(items) == ["slake-1", "slake-2", "slake-3", "slake-4", "slake-5"]  # open + Chinese dropped
    assert items["slake-1"].meta["options"] == {"A": "Yes", "B": "No"} and items["slake-1"].meta["answer"] == "B"
    assert items["slake-2"].meta["answer"] == "A"  # lower-case "yes"
    assert items["slake-3"].meta["options"] == {"A": "Liver", "B": "Spleen"} and items["slake-3"].meta["answer"] == "A"
    assert items["slake-4"].meta["options"] == {"A": "MRI", "B": "CT"} and items["slake-4"].meta["answer"] == "B"
    assert items["slake-5"].meta["options_source"] == "answer_pool"
    assert items["slake-5"].meta["options"][items["slake-5"].meta["answer"]] == "Spleen"
    assert rel(items["slake-4"].images) == ["slake/imgs/xmlab2/source.jpg"]


def test_medframeqa_frames_in_order_skipping_empty():
    items = native("medframeqa").items
    q1, q2 = items
    assert rel(q1.images) == ["medframeqa/frames/q1_1.png", "medframeqa/frames/q1_2.png", "medframeqa/frames/q1_3.png"]
    assert q1.meta["options"]["A"] == "Frame one" and q1.meta["answer"] == "B"  # "A. " prefixes stripped
    assert q2.meta["options"] == {"A": "Cyst", "B": "Mass", "C": "Normal", "D": "Calcification"}
    assert q2.meta["answer"] == "D" and len(q2.images) == 1
    assert "Frame 1" in message_text(q1.messages[-1])


def png_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), shade).save(buffer, format="PNG")
    return buffer.getvalue()


def mmmu_row(item_id: str, question: str, options: list[str], answer: str, images: dict[int, int], **extra):
    row = {"id": item_id, "question": question, "options": repr(options), "answer": answer, **extra}
    for k in range(1, 8):
        row[f"image_{k}"] = {"bytes": png_bytes(images[k]), "path": f"{item_id}_{k}.png"} if k in images else None
    return row


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


@pytest.fixture(scope="module")
def mmmu_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mmmu_native")
    subjects = ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
                "Public_Health"]
    for s in subjects:
        write_parquet(root / "mmmu" / s / "dev-00000-of-00001.parquet", [
            mmmu_row(f"dev_{s}_1", "Compare <image 2> with <image 1>. Which is invented?", ["First", "Second"], "B",
                     {1: 10, 2: 20}, question_type="multiple-choice", subfield="Invented")])
        write_parquet(root / "mmmu" / s / "validation-00000-of-00001.parquet", [
            mmmu_row(f"validation_{s}_1", "Invented question without a tag?", ["a", "b", "c"], "C", {1: 30},
                     question_type="multiple-choice"),
            mmmu_row(f"validation_{s}_2", "Open invented question <image 1>", [], "42", {1: 40},
                     question_type="open")])
    for n in (4, 10):
        options = [f"opt{i}" for i in range(n)]
        write_parquet(root / "mmmu_pro" / f"standard ({n} options)" / "test-00000-of-00001.parquet", [
            mmmu_row("pro_1", "Which invented drug <image 1>?", options, "D", {1: 50}, subject="Pharmacy"),
            mmmu_row("pro_2", "Invented art question <image 1>?", options, "A", {1: 60}, subject="Art"),
            mmmu_row("pro_3", "Invented clinical question <image 1>?", options, "B", {1: 70},
                     subject="Clinical Medicine"),
        ])
    return root


def test_mmmu_med_parquet_images_decoded_in_tag_order(mmmu_root):
    items = native("mmmu_med", mmmu_root).items
    assert len(items) == 10  # 5 subjects x (1 dev + 1 multiple-choice validation); open questions dropped
    first = items[0]
    assert first.id == "mmmu_med-dev_Basic_Medical_Science_1" and first.meta["answer"] == "B"
    assert first.meta["options"] == {"A": "First", "B": "Second"}
    # <image 2> appears first in the question, so image_2 comes first
    assert [Image.open(p).getpixel((0, 0)) for p in first.images] == [20, 10]
    assert all(Path(p).is_file() and ".medkit_images" in p for p in first.images)
    assert "<image 2>" in message_text(first.messages[-1])
    untagged = items[1]
    assert untagged.meta["answer"] == "C" and len(untagged.images) == 1
    again = native("mmmu_med", mmmu_root).items  # cached images are reused, same paths
    assert [i.images for i in again] == [i.images for i in items]


@pytest.mark.parametrize("n", [4, 10])
def test_mmmu_pro_medical_subjects_only(mmmu_root, n):
    items = native(f"mmmu_pro_med_{n}", mmmu_root).items
    assert [i.meta["source_id"] for i in items] == ["pro_1", "pro_3"]
    assert len(items[0].meta["options"]) == n and items[0].meta["answer"] == "D"
    assert items[1].meta["answer"] == "B" and len(items[1].images) == 1


def test_mmmu_bad_options_string_names_row(tmp_path):
    write_parquet(tmp_path / "mmmu_pro" / "standard (4 options)" / "test-00000-of-00001.parquet",
                  [{"id": "x", "question": "q", "options": "['a', 'b'", "answer": "A", "subject": "Pharmacy"}])
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001.parquet row 0.*options"):
        native("mmmu_pro_med_4", tmp_path)


# ---------------------------------------------------------------------------------------------------
# Text QA converters


def test_medqa():
    items = native("medqa").items
    assert [i.meta["answer"] for i in items] == ["C", "A", "D"]
    assert items[2].meta["options"]["D"] == "Vit K" and items[0].images == []
    assert "D. Vit K" in user_text(items[2])


def test_medmcqa_cop_zero_based():
    items = native("medmcqa").items
    assert [i.meta["answer"] for i in items] == ["B", "D"]
    assert items[0].meta["options"] == {"A": "Tibia", "B": "Femur", "C": "Humerus", "D": "Radius"}
    assert items[0].meta["subject"] == "Anatomy"


def test_pubmedqa_test_pmids_with_labelled_context():
    items = native("pubmedqa").items
    assert [i.id for i in items] == ["pubmedqa-10000002", "pubmedqa-10000001"]  # ground-truth order, test only
    assert items[0].meta["options"] == {"A": "yes", "B": "no", "C": "maybe"}
    assert [i.meta["answer"] for i in items] == ["C", "A"]
    text = user_text(items[1])
    assert "BACKGROUND: We studied a made-up cohort.\nRESULTS: Symptom B fell" in text
    assert text.index("BACKGROUND") < text.index("Does invented compound A")


def test_mmlu_med_seven_subjects():
    items = native("mmlu_med").items
    assert len(items) == 14 and len({i.meta["subject"] for i in items}) == 7
    assert items[0].meta["answer"] == "A" and items[1].meta["answer"] == "B"


def test_medxpertqa_text_ten_options():
    items = native("medxpertqa_text").items
    assert list(items[0].meta["options"]) == list("ABCDEFGHIJ") and items[0].meta["answer"] == "J"
    assert "Answer Choices" not in user_text(items[0])


def test_medbullets_op4_csv():
    items = native("medbullets").items
    assert [i.meta["answer"] for i in items] == ["A", "C"]
    assert items[0].meta["options"] == {"A": "ECG", "B": "CT", "C": "MRI", "D": "Discharge"}
    assert "with a comma" in user_text(items[0])


def test_malformed_jsonl_record_names_file_and_line(tmp_path):
    copy_fixture(tmp_path, "medqa")
    path = tmp_path / "medqa" / "test.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["answer_idx"] = "F"
    path.write_text("\n".join([lines[0], json.dumps(bad), lines[2]]) + "\n")
    with pytest.raises(BenchmarkDataError, match=rf"{path} line 2: gold answer 'F'"):
        native("medqa", tmp_path)
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(BenchmarkDataError, match=rf"{path} line 2: not valid JSON"):
        native("medqa", tmp_path)


def test_malformed_csv_and_json_key_named(tmp_path):
    copy_fixture(tmp_path, "medbullets")
    path = tmp_path / "medbullets" / "medbullets_op4.csv"
    path.write_text("link,question,opa,opb,opc,answer_idx\nx,q,a,b,c,A\n")
    with pytest.raises(BenchmarkDataError, match=rf"{path} line 2: option column 'opd'"):
        native("medbullets", tmp_path)
    copy_fixture(tmp_path, "pubmedqa")
    truth = tmp_path / "pubmedqa" / "test_ground_truth.json"
    truth.write_text(json.dumps({"10000001": "yes", "99999999": "no"}))
    with pytest.raises(BenchmarkDataError, match=r"ori_pqal.json key '99999999'"):
        native("pubmedqa", tmp_path)


def test_missing_image_named(tmp_path):
    copy_fixture(tmp_path, "medxpertqa")
    (tmp_path / "medxpertqa" / "images" / "mm-002-a.png").unlink()
    with pytest.raises(MissingBenchmarkFile, match=r"test.jsonl line 2: image file .*mm-002-a.png is missing"):
        native("medxpertqa_mm", tmp_path)


# ---------------------------------------------------------------------------------------------------
# Report and in-context converters


def test_mimic_cxr_report_current_then_prior_images():
    items = {i.id: i for i in native("mimic_cxr_report").items}
    s1 = items["mimic_cxr_report-s1"]
    assert rel(s1.images) == ["mimic_cxr/files/s1/pa.png", "mimic_cxr/files/s1/lat.png",
                              "mimic_cxr/files/s1prior/pa.png"]
    assert s1.meta["answer"] == ("FINDINGS: Invented small right effusion, slightly larger.\n\n"
                                 "IMPRESSION: Invented enlarging right effusion.")
    assert s1.meta["n_priors"] == 1 and s1.num_image_parts == 3
    text = user_text(s1)
    assert "70-year-old female" in text and "6 months earlier" in text and "change since the prior" in text
    assert "prior" not in user_text(items["mimic_cxr_report-s2"]).lower()


def test_mimic_cxr_missing_findings_names_record(tmp_path):
    copy_fixture(tmp_path, "mimic_cxr")
    path = tmp_path / "mimic_cxr" / "report_test.json"
    studies = json.loads(path.read_text())
    del studies[1]["findings"]
    path.write_text(json.dumps(studies))
    with pytest.raises(BenchmarkDataError, match=rf"{path} item 1: field 'findings'"):
        native("mimic_cxr_report", tmp_path)


def test_impression_excludes_missing_impression_or_image():
    items = native("impression_0shot").items
    assert [i.meta["study_key"] for i in items] == ["s3", "s4", "s5", "s8"]
    s3 = items[0]
    assert s3.meta["answer"] == "Invented left basal opacity." and len(s3.images) == 2
    assert "55-year-old male" in user_text(s3) and "Indication: Invented cough." in user_text(s3)
    assert "IMPRESSION" in user_text(s3)


def test_impression_one_shot_exemplar_other_patient_images_first():
    zero = {i.meta["study_key"]: i for i in native("impression_0shot").items}
    for item in native("impression_1shot").items:
        key, shot = item.meta["study_key"], item.meta["exemplar_key"]
        assert shot != key
        assert {key, shot} != {"s3", "s8"}  # s3 and s8 are the same patient (p3)
        roles = [m["role"] for m in item.messages]
        assert roles == ["system", "user", "assistant", "user"]
        assert item.messages[2]["content"] == zero[shot].meta["answer"]
        assert item.images == zero[shot].images + zero[key].images
        assert item.meta["answer"] == zero[key].meta["answer"]
    again = native("impression_1shot").items
    assert [i.meta["exemplar_key"] for i in again] == [i.meta["exemplar_key"] for i in native("impression_1shot").items]


def test_patient_trial_pairs_labels_and_rendering():
    items = {i.id.split("-", 1)[1]: i for i in native("patient_trial_0shot").items}
    assert len(items) == 7  # the retrieved_trials.json pairs (tests/test_patient_trial.py covers the fallback)
    labels = {k: i.meta["label"] for k, i in items.items()}
    assert labels == {"sigir-sigir-1-NCT90000001": "eligible", "sigir-sigir-1-NCT90000002": "not eligible",
                      "sigir-sigir-2-NCT90000002": "eligible", "sigir-sigir-2-NCT90000001": "partially eligible",
                      "trec_2021-trec-1-NCT90000003": "partially eligible",
                      "trec_2021-trec-2-NCT90000004": "eligible", "trec_2021-trec-2-NCT90000003": "not eligible"}
    for item in items.values():
        assert sorted(item.meta["options"].values()) == sorted(TRIAL_OPTIONS)
        assert item.meta["options"][item.meta["answer"]] == item.meta["label"]
    text = user_text(items["sigir-sigir-2-NCT90000001"])
    assert "0. An invented 8-year-old girl has wheeze and night cough.\n1. Spirometry improved" in text
    assert "Title: Invented angina drug study" in text and "Target diseases: Angina" in text
    assert "Interventions: Drug AA" in text and "Summary: Tests invented drug AA." in text
    assert "Inclusion criteria:\nAge 40 to 75 years\nStable angina\nWilling to consent\nExclusion criteria:\n" \
           "Recent MI\nPregnancy" in text


def test_trial_option_shuffle_deterministic_and_varies():
    first = [i.meta["options"] for i in native("patient_trial_0shot").items]
    second = [i.meta["options"] for i in native("patient_trial_0shot").items]
    assert first == second
    assert len({tuple(o.values()) for o in first}) > 1
    one_shot = [i.meta["options"] for i in native("patient_trial_1shot").items]
    assert one_shot == first  # the same pair shows the same order with or without an exemplar


def test_trial_one_shot_exemplar_valid_and_never_the_item():
    zero = {i.id.split("-", 1)[1]: i for i in native("patient_trial_0shot").items}
    for item in native("patient_trial_1shot").items:
        key = item.id.split("-", 1)[1]
        shot = item.meta["exemplar_key"]
        assert shot != key and shot in zero
        assert zero[shot].meta["patient_id"] != item.meta["patient_id"]
        assert item.meta["exemplar_label"] in ("eligible", "partially eligible", "not eligible")
        assert [m["role"] for m in item.messages] == ["system", "user", "assistant", "user"]
        assert item.messages[2]["content"] == zero[shot].meta["answer"]
        assert user_text(zero[shot]) == message_text(item.messages[1])


def test_qrels_bad_score_and_unknown_trial_named(tmp_path):
    copy_fixture(tmp_path, "patient_trial")
    (tmp_path / "patient_trial" / "sigir" / "retrieved_trials.json").unlink()  # the qrels are read only without it
    qrels = tmp_path / "patient_trial" / "sigir" / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nsigir-1\tNCT90000001\t3\n")
    with pytest.raises(BenchmarkDataError, match=rf"{qrels} line 2: score must be"):
        native("patient_trial_0shot", tmp_path)
    qrels.write_text("query-id\tcorpus-id\tscore\nsigir-1\tNCT00000000\t2\n")
    with pytest.raises(BenchmarkDataError, match=rf"{qrels} line 2: trial 'NCT00000000'"):
        native("patient_trial_0shot", tmp_path)


def test_criteria_cleaning_and_sentences():
    assert clean_criteria("Inclusion Criteria:\n\n  1. Age >= 18\n  - a) 1.5 mg/dL creatinine\n  * x\n") == [
        "Age >= 18", "1.5 mg/dL creatinine"]
    assert sentences("He is 40. BP was 120/80.\nNo fever.") == ["He is 40.", "BP was 120/80.", "No fever."]


# ---------------------------------------------------------------------------------------------------
# Synthetic counterparts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from medkit.data.synthetic import generate_corpus

    out = tmp_path_factory.mktemp("bench_corpus") / "corpus"
    generate_corpus(out, seed=0)
    return out


def test_every_benchmark_has_a_deterministic_synthetic_counterpart_of_100_items(corpus):
    from medkit.eval.benchmarks.synthetic import MAX_ITEMS

    assert MAX_ITEMS >= 100  # below that a 95% CI spans more than +-10 points
    for benchmark in all_benchmarks():
        loaded = load_benchmark(benchmark.name, corpus_dir=corpus)
        assert len(loaded.items) == MAX_ITEMS, benchmark.name
        assert "synthetic counterpart" in loaded.count_note
        again = load_benchmark(benchmark.name, corpus_dir=corpus).items
        assert [s.to_json() for s in again] == [s.to_json() for s in loaded.items]
        for item in loaded.items:
            assert item.meta["benchmark"] == benchmark.name and item.meta["source"] == "synthetic"
            assert item.messages[-1]["role"] == "user"
            assert all(Path(p).is_absolute() and Path(p).is_file() for p in item.images)
            if benchmark.kind == "mc":
                assert item.meta["answer"] in item.meta["options"]
                assert user_text(item).endswith(MC_CONSTRAINT)
            else:
                assert item.meta["answer"].strip()


def test_synthetic_family_subsets_disjoint_and_from_eval_split(corpus):
    for family in (MC_BENCHMARKS[:6], MC_BENCHMARKS[6:]):
        seen: dict[str, str] = {}
        for name in family:
            for item in load_benchmark(name, corpus_dir=corpus).items:
                assert item.meta["source_id"] not in seen, (name, seen.get(item.meta["source_id"]))
                seen[item.meta["source_id"]] = name
    eval_ids = {json.loads(line)["id"] for task in ("vqa_mc", "text_mc", "reasoning")
                for line in (corpus / f"{task}.jsonl").read_text().splitlines()
                if json.loads(line)["meta"]["split"] == "eval"}
    assert set(seen) <= eval_ids


def test_synthetic_one_shot_exemplars_from_train_split(corpus):
    train = {json.loads(line)["id"] for task in ("trial", "impression")
             for line in (corpus / f"{task}.jsonl").read_text().splitlines()
             if json.loads(line)["meta"]["split"] == "train"}
    for name in ("patient_trial_1shot", "impression_1shot"):
        items = load_benchmark(name, corpus_dir=corpus).items
        assert all(i.meta["exemplar_key"] in train for i in items)
        assert [m["role"] for m in items[0].messages] == ["system", "user", "assistant", "user"]
    trial = load_benchmark("patient_trial_1shot", corpus_dir=corpus).items
    assert all(i.meta["exemplar_label"] in ("eligible", "partially eligible", "not eligible") for i in trial)
    assert len({tuple(i.meta["options"].values()) for i in trial}) > 1


def test_synthetic_items_rerendered_with_unified_prompt(corpus):
    item = load_benchmark("patient_trial_0shot", corpus_dir=corpus).items[0]
    text = user_text(item)
    assert "\n0. " in text and "Target diseases:" in text and text.endswith(MC_CONSTRAINT)
    report = load_benchmark("mimic_cxr_report", corpus_dir=corpus).items
    assert any(i.meta["n_priors"] > 0 and "Prior study 1" in user_text(i) for i in report)
