"""Loaders on invented records in the public releases' own layouts (tests/fixtures/benchmarks/public_release/).

SLAKE as ``Slake1.0/test.json`` (both languages, open and closed), Medbullets as ChallengeClinicalQA's
``medbullets_op{4,5}.csv`` (with repeated question stems), MedXpertQA as the GitHub release's
``eval/data/medxpertqa/input/medxpertqa_{text,mm}_input.jsonl``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medkit.data.schema import message_text
from medkit.eval.benchmarks import BenchmarkDataError, MissingBenchmarkFile, get_benchmark, load_benchmark

RELEASE = Path(__file__).parent / "fixtures" / "benchmarks" / "public_release"


def slake(**options):
    return {int(i.meta["source_id"]): i for i in load_benchmark("slake", data_root=RELEASE, options=options).items}


def copy_release(tmp_path: Path, folder: str) -> Path:
    shutil.copytree(RELEASE / folder, tmp_path / folder)
    return tmp_path / folder


def rewrite_json_lines(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    change(records)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def options_and_answer(item) -> tuple[dict[str, str], str]:
    return item.meta["options"], item.meta["answer"]


# ---------------------------------------------------------------------------------------------------
# SLAKE: language and answer-type selection


def test_slake_defaults_select_closed_questions_of_both_languages():
    loaded = load_benchmark("slake", data_root=RELEASE)
    assert loaded.options == {"languages": ("en", "zh"), "answer_types": ("CLOSED",)}
    assert sorted(int(i.meta["source_id"]) for i in loaded.items) == [*range(9101, 9109), *range(9201, 9207)]
    assert {i.meta["q_lang"] for i in loaded.items} == {"en", "zh"}
    assert get_benchmark("slake").options == {"languages": ("en", "zh"), "answer_types": ("CLOSED",)}


def test_slake_count_note_names_the_english_label_as_the_cause():
    note = load_benchmark("slake", data_root=RELEASE, options={"languages": ["en"]}).count_note
    assert note.startswith("836 expected (Table 3), got 8: ")
    assert "English and Chinese (416 + 420)" in note and "labels SLAKE 'English'" in note
    assert "fixture/subset or a different release" not in note


def test_slake_language_and_answer_type_options():
    assert sorted(slake(languages=["en"])) == list(range(9101, 9109))
    assert sorted(slake(languages="zh")) == list(range(9201, 9207))
    both = slake(answer_types=["CLOSED", "OPEN"])
    assert len(both) == 16 and both[9109].meta["options_source"] == "answer_pool"
    assert both[9207].meta["options"][both[9207].meta["answer"]] == "肝脏"  # its distractor is Chinese too


def test_slake_unknown_option_values_refused():
    with pytest.raises(ValueError, match="languages.*'fr'"):
        slake(languages=["fr"])
    with pytest.raises(ValueError, match="answer_types"):
        slake(answer_types=[])


# ---------------------------------------------------------------------------------------------------
# SLAKE: options of questions that name their alternatives


def test_slake_every_alternative_of_a_listed_question_is_an_option():
    items = slake()
    assert options_and_answer(items[9102]) == ({"A": "MRI", "B": "CT", "C": "X-Ray"}, "C")
    assert options_and_answer(items[9105]) == ({"A": "Liver", "B": "Spleen", "C": "Kidney"}, "A")  # "spleen, or"
    assert all(items[q].meta["options_source"] == "question" for q in (9102, 9105))


def test_slake_alternatives_without_a_comma_are_whole():
    items = slake()
    assert options_and_answer(items[9103]) == ({"A": "T1 weighted", "B": "T2 weighted"}, "B")  # gold "T2"
    assert options_and_answer(items[9104]) == ({"A": "Small bowel", "B": "Colon"}, "B")
    assert options_and_answer(items[9106]) == ({"A": "Hyperdense", "B": "Hypodense"}, "B")


def test_slake_option_casing_does_not_mark_the_gold():
    # the gold is written "Coronal Plane"; both options take the question's casing
    assert options_and_answer(slake()[9108]) == ({"A": "Transverse plane", "B": "Coronal plane"}, "B")


def test_slake_chinese_alternatives_and_polar_answers():
    items = slake()
    assert options_and_answer(items[9201]) == ({"A": "包含", "B": "不包含"}, "B")
    assert options_and_answer(items[9202]) == ({"A": "核磁共振", "B": "CT", "C": "X光"}, "B")
    assert options_and_answer(items[9203]) == ({"A": "T1加权", "B": "T2加权"}, "A")  # gold "T1"
    assert options_and_answer(items[9204]) == ({"A": "肾脏", "B": "肝脏"}, "A")  # 或者
    assert options_and_answer(items[9205]) == ({"A": "肝脏", "B": "脾脏"}, "B")  # 和 ... 哪个
    assert options_and_answer(items[9206]) == ({"A": "白色", "B": "灰色"}, "B")  # 白色的还是灰色的


def test_slake_answer_the_question_does_not_offer_is_added_last():
    item = slake()[9107]  # "kidney or spleen?" annotated "Bladder"
    assert options_and_answer(item) == ({"A": "Kidney", "B": "Spleen", "C": "Bladder"}, "C")
    assert item.meta["options_source"] == "question+answer"
    assert "C. Bladder" in message_text(item.messages[-1])


def test_slake_answer_named_in_question_but_not_an_alternative_is_an_error(tmp_path):
    folder = copy_release(tmp_path, "slake")
    records = json.loads((folder / "test.json").read_text(encoding="utf-8"))
    records[3] = {**records[3], "question": "Is the lesion in the left lobe or right?", "answer": "Left lobe"}
    (folder / "test.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=r"test.json item 3: the answer 'Left lobe' is named in"):
        load_benchmark("slake", data_root=tmp_path)


# ---------------------------------------------------------------------------------------------------
# Medbullets: repeated stems and the 5-option file


def test_medbullets_keeps_the_first_row_of_each_question_stem():
    items = load_benchmark("medbullets", data_root=RELEASE).items
    assert [i.id for i in items] == ["medbullets-0000", "medbullets-0001", "medbullets-0003"]
    assert [i.meta["dropped_repeat_rows"] for i in items] == [[2], [4], []]
    # row 4 repeats row 1's stem with other distractors: row 1's options are the ones kept
    assert options_and_answer(items[1]) == (
        {"A": "Influenza", "B": "Parainfluenza virus", "C": "Epiglottitis", "D": "Asthma"}, "B")


def test_medbullets_count_explanation_gives_the_duplicates():
    note = load_benchmark("medbullets", data_root=RELEASE).count_note
    # what this load dropped, then why the count differs from Table 3
    assert note.startswith("298 expected (Table 3), got 3 (medbullets_op4.csv: 5 rows, 2 repeating an earlier "
                           "question stem dropped): ")
    assert "308 rows, 10 of which repeat an earlier question stem" in note and "308 - 10 = 298" in note


def test_medbullets_op5_file_by_option():
    loaded = load_benchmark("medbullets", data_root=RELEASE, options={"n_options": 5})
    assert loaded.options == {"n_options": 5}
    assert [i.id for i in loaded.items] == ["medbullets-0000", "medbullets-0001", "medbullets-0002"]
    first = loaded.items[0]
    assert list(first.meta["options"]) == list("ABCDE") and first.meta["answer"] == "E"
    assert first.meta["dropped_repeat_rows"] == [3]
    assert "E. Plantar fasciitis" in message_text(first.messages[-1])


def test_medbullets_bad_n_options_and_bad_op5_row(tmp_path):
    with pytest.raises(ValueError, match="n_options.*3"):
        load_benchmark("medbullets", data_root=RELEASE, options={"n_options": 3})
    path = copy_release(tmp_path, "medbullets") / "medbullets_op5.csv"
    path.write_text("link,question,opa,opb,opc,opd,answer_idx\nx,q,a,b,c,d,A\n", encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=rf"{path} line 2: option column 'ope'"):
        load_benchmark("medbullets", data_root=tmp_path, options={"n_options": 5})


# ---------------------------------------------------------------------------------------------------
# MedXpertQA: the GitHub release layout


def test_medxpertqa_text_github_layout():
    items = load_benchmark("medxpertqa_text", data_root=RELEASE).items
    assert [i.id for i in items] == ["medxpertqa_text-Text-0", "medxpertqa_text-Text-1"]
    assert list(items[0].meta["options"]) == list("ABCDEFGHIJ") and items[0].meta["answer"] == "J"
    assert items[0].meta["options"]["J"] == "Invented drug j"
    text = message_text(items[0].messages[-1])
    assert "Answer Choices" not in text and "\nJ. Invented drug j\n" in text


def test_medxpertqa_options_only_inline_are_read_from_the_question():
    item = load_benchmark("medxpertqa_text", data_root=RELEASE).items[1]
    # option B quotes "(E)", as one real MM option does: the text is cut at the letters in sequence only
    assert item.meta["options"] == {"A": "Observe", "B": "Biopsy, unless the added option (E) applies",
                                    "C": "Excision", "D": "Amputation", "E": "Radiotherapy"}
    assert item.meta["answer"] == "C" and "Answer Choices" not in message_text(item.messages[-1])


def test_medxpertqa_mm_github_layout():
    items = load_benchmark("medxpertqa_mm", data_root=RELEASE).items
    assert [(i.id, i.meta["answer"]) for i in items] == [("MM-0", "B"), ("MM-1", "E")]
    assert [Path(p).name for p in items[0].images] == ["MM-0-a.jpeg", "MM-0-b.jpeg"]
    assert items[0].meta["options"]["B"] == "Invented rash B" and items[0].num_image_parts == 2
    assert "Answer Choices" not in message_text(items[0].messages[-1])


def test_medxpertqa_github_image_names_and_letter_labels_accepted(tmp_path):
    path = copy_release(tmp_path, "medxpertqa") / "input" / "medxpertqa_mm_input.jsonl"

    def plain_fields(records):
        records[1].update(images=["MM-1-a.jpeg"], label="D")

    rewrite_json_lines(path, plain_fields)
    item = load_benchmark("medxpertqa_mm", data_root=tmp_path).items[1]
    assert item.meta["answer"] == "D" and [Path(p).name for p in item.images] == ["MM-1-a.jpeg"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r[1].update(label=["A", "B"]), "label' must hold exactly one letter"),
    (lambda r: r[1]["options"][2].pop("content"), "must be an object with 'letter' and 'content'"),
    (lambda r: r[1].update(options=[], question="No choices in this invented question?"), "no 'options' field"),
])
def test_medxpertqa_github_bad_record_names_file_and_line(tmp_path, change, message):
    path = copy_release(tmp_path, "medxpertqa") / "input" / "medxpertqa_mm_input.jsonl"
    rewrite_json_lines(path, change)
    with pytest.raises(BenchmarkDataError, match=rf"{path} line 2: .*{message}"):
        load_benchmark("medxpertqa_mm", data_root=tmp_path)


def test_medxpertqa_missing_files_name_both_layouts(tmp_path):
    (tmp_path / "medxpertqa").mkdir()
    with pytest.raises(MissingBenchmarkFile, match=r"Text/test.jsonl.*input/medxpertqa_text_input.jsonl"):
        load_benchmark("medxpertqa_text", data_root=tmp_path)
    for name, subset in (("medxpertqa_text", "text"), ("medxpertqa_mm", "mm")):
        assert f"input/medxpertqa_{subset}_input.jsonl" in get_benchmark(name).native_files[0]
