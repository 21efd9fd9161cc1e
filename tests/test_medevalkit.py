"""The MedEvalKit-protocol score reproduces the reference rule's readings, its misreadings included.

``fixtures/medevalkit/golden.csv``: outputs written for this test, each read by the reference
implementation (alibaba-damo-academy/MedEvalKit at 9b12e3b: ``utils/utils.py`` ``judge_multi_choice`` with
the option form of the benchmark's dataset module, and ``utils/MMMU/eval_utils.py``
``parse_multi_choice_response`` for MMMU). ``reads`` is the one gold letter for which the reference counts
the output correct (for MMMU, the letter it parses; ``random`` where it falls back to a random option).
The reference was run outside the repository; only its readings are kept here.
"""

import csv
from pathlib import Path

import pytest

from medkit.eval.medevalkit import (
    RULES,
    answer_tag_content,
    boxed_content,
    judge_multi_choice,
    medevalkit_score,
    mmmu_choice,
    rule_for,
    written_choices,
)
from medkit.eval.scoring import score_mc, summarise_scores

GOLDEN = Path(__file__).parent / "fixtures" / "medevalkit" / "golden.csv"
OPTIONS = {
    "dx4": {"A": "Pulmonary embolism", "B": "Pneumonia", "C": "Gout", "D": "Hepatitis B"},
    "yn3": {"A": "yes", "B": "no", "C": "maybe"},
    "f5": {"A": "Femur", "B": "Tibia", "C": "Fibula", "D": "Patella", "E": "Radius"},
}


def golden_rows():
    with GOLDEN.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def row_id(row):
    return f"{row['benchmark']}:{row['output'][:30]!r}"


@pytest.mark.parametrize("row", golden_rows(), ids=row_id)
def test_golden_table_reads_as_the_reference_does(row):
    options = OPTIONS[row["options"]]
    for gold in options:
        score = medevalkit_score(row["output"], options, gold, row["benchmark"], item_id="golden")
        if row["reads"] == "random":
            assert score.fallback and score.letter in options
        else:
            assert score.letter == row["reads"]
            assert score.correct == (gold == row["reads"]), f"gold {gold}"


def test_golden_table_covers_the_bracketed_forms_the_reference_misreads():
    rows = {(r["benchmark"], r["output"]): r["reads"] for r in golden_rows()}
    # "Answer: (E)" is not read as E under judge_multi_choice: "(e)" is neither a letter nor an option,
    # so the similarity step picks A; MMMU's parser reads the bracket
    assert rows[("medqa", "Answer: (E)")] == "A"
    assert rows[("mmmu_med", "Answer: (E)")] == "E"
    assert rows[("mmlu_med", "(B)")] == "D"
    assert rows[("medbullets", "**E**")] == "A"
    # the strict rule reads every one of them
    assert score_mc("Answer: (E)", OPTIONS["f5"], "E").correct
    assert score_mc("(B)", OPTIONS["dx4"], "B").correct
    # MMMU's parser has no reading for markdown or a closing bracket alone and guesses
    assert rows[("mmmu_med", "**B**")] == rows[("mmmu_med", "C)")] == "random"


def test_similarity_step_is_a_fallback_and_letters_are_not():
    options = OPTIONS["dx4"]
    assert not judge_multi_choice("b", options, "B", "X. text").fallback
    assert not judge_multi_choice("b. pneumonia", options, "B", "X. text").fallback
    guessed = judge_multi_choice("(b)", options, "B", "X. text")
    assert guessed.fallback


def test_option_form_changes_what_the_similarity_step_picks():
    options = OPTIONS["dx4"]
    assert written_choices(options, "X. text")[1] == "B. Pneumonia"
    assert written_choices(options, "X.text")[1] == "B.Pneumonia"
    assert written_choices(options, "text")[1] == "Pneumonia"
    # "(b)" is most like "b. pneumonia" when options carry their letters, and like "hepatitis b" when not
    assert judge_multi_choice("(b)", options, "B", "X. text").letter == "B"
    assert judge_multi_choice("(b)", options, "B", "text").letter == "D"


def test_exact_option_text_in_the_written_form_reads_as_that_option():
    options = OPTIONS["dx4"]
    assert judge_multi_choice("gout", options, "C", "text") == judge_multi_choice("gout", options, "C", "text")
    score = judge_multi_choice("gout", options, "C", "text")
    assert (score.letter, score.correct, score.fallback) == ("C", True, False)


def test_mmmu_random_pick_is_seeded_by_the_item():
    options = {letter: f"Finding {letter}" for letter in "ABCDEFGHIJ"}
    picks = {mmmu_choice("**B**", options, f"item-{i}") for i in range(40)}
    assert len(picks) > 3  # the seed is the item, not one fixed letter
    assert mmmu_choice("**B**", options, "item-1") == mmmu_choice("**B**", options, "item-1")
    letter, fallback = mmmu_choice("**B**", options, "item-1")
    assert fallback and letter in options


def test_mmmu_last_mention_wins():
    options = OPTIONS["dx4"]
    assert mmmu_choice("The answer is B because A is less likely", options, "x") == ("A", False)
    assert mmmu_choice("(A) is tempting but (C) fits", options, "x") == ("C", False)


def test_box_and_answer_tag_helpers():
    assert boxed_content("so \\boxed{A} then \\boxed{\\text{C}}") == "\\text{C}"
    assert boxed_content("boxed but no box") == "None"
    assert boxed_content("\\boxed{unclosed") == "None"
    assert answer_tag_content("x <answer>B</answer> y <answer>C</answer>") == "B C"
    assert answer_tag_content("<answer></answer> text") == "<answer></answer> text"
    assert answer_tag_content("<answer>unclosed") == "<answer>unclosed"


def test_rules_name_every_multiple_choice_benchmark():
    from medkit.eval.benchmarks import all_benchmarks

    mc = {b.name for b in all_benchmarks() if b.scorer == "strict_mc"}
    in_medevalkit = mc - {n for n in mc if n.startswith("patient_trial")}
    assert in_medevalkit <= set(RULES), sorted(in_medevalkit - set(RULES))
    assert rule_for("patient_trial_0shot").parser == "judge_multi_choice"
    assert {rule_for(n).parser for n in ("mmmu_med", "mmmu_pro_med_4", "mmmu_pro_med_10")} == {"mmmu"}


def test_options_must_run_from_a():
    with pytest.raises(ValueError, match="lettered A, B, C"):
        judge_multi_choice("b", {"B": "x", "C": "y"}, "B", "X. text")


def test_summary_puts_the_three_scores_side_by_side():
    options = OPTIONS["dx4"]
    outputs = ["B", "(B)", "Answer: (E)", "I think it is B, clearly", "A or B", "gout"]
    scores = [score_mc(o, options, "B", benchmark="medqa", item_id=str(i)) for i, o in enumerate(outputs)]
    summary = summarise_scores(scores, n_boot=200, seed=0)
    assert summary["n"] == 6
    assert summary["accuracy"] == pytest.approx(sum(s.correct for s in scores) / 6)
    assert summary["medevalkit_accuracy"] == pytest.approx(sum(s.medevalkit_correct for s in scores) / 6)
    assert summary["medevalkit_fallback_rate"] == pytest.approx(sum(s.medevalkit_fallback for s in scores) / 6)
    assert summary["medevalkit_ci_low"] <= summary["medevalkit_accuracy"] <= summary["medevalkit_ci_high"]
    # the strict CI is the same whether or not the third score rides along (same resampled items)
    from medkit.eval.scoring import accuracy_summary

    two = accuracy_summary([s.correct for s in scores], [s.status == "unparsed" for s in scores],
                           [s.lenient_correct for s in scores], n_boot=200, seed=0)
    assert (two["ci_low"], two["ci_high"]) == (summary["ci_low"], summary["ci_high"])


def test_protocol_table_puts_each_result_three_ways():
    from medkit.reporting.protocols import PREDATES, scoring_protocols

    results = [
        {"model": "medkit", "benchmark": "medqa", "title": "MedQA", "table": "5", "source": "native", "n": 1273,
         "metrics": {"accuracy": 0.5, "unparsed_rate": 0.2, "lenient_accuracy": 0.6,
                     "medevalkit_accuracy": 0.65, "medevalkit_fallback_rate": 0.25}},
        {"model": "medkit", "benchmark": "slake", "title": "SLAKE (English)", "table": "4", "source": "synthetic",
         "n": 100, "metrics": {"accuracy": 0.4, "unparsed_rate": 0.1, "lenient_accuracy": 0.45}},
        {"model": "medkit", "benchmark": "mimic_cxr_report", "table": "figure2", "n": 10,
         "metrics": {"bleu2": {"value": 0.1}}},
    ]
    frame = scoring_protocols(results)
    assert list(frame.index) == ["SLAKE (English) · MedGPT-OSS", "MedQA · MedGPT-OSS"]  # table 4 first, no reports
    medqa = frame.loc["MedQA · MedGPT-OSS"]
    assert medqa["Strict (paper's rule)"] == pytest.approx(50.0)
    assert medqa["MedEvalKit protocol"] == pytest.approx(65.0)
    assert medqa["MedEvalKit - strict"] == pytest.approx(15.0)
    assert medqa["MedEvalKit guessed"] == pytest.approx(25.0)
    assert medqa["Paper prints"] == pytest.approx(70.11)  # native release: the paper's MedGPT-OSS MedQA
    slake = frame.loc["SLAKE (English) · MedGPT-OSS"]
    assert slake["MedEvalKit protocol"] == PREDATES  # an older result file says so, never a number
    assert slake["Paper prints"] != slake["Paper prints"]  # NaN: a synthetic run is not set beside the paper


def test_protocol_table_finds_the_paper_value_for_models_sharing_a_label():
    # medkit and medgpt-oss-20b both stand for MedGPT-OSS, so their headers are "MedGPT-OSS [<model>]"; each
    # native row must still show the paper's MedGPT-OSS value (a lookup by header finds nothing)
    from medkit.reporting.protocols import scoring_protocols

    results = [{"model": model, "benchmark": "medqa", "title": "MedQA", "table": "5", "source": "native",
                "n": 1273, "metrics": {"accuracy": 0.5, "unparsed_rate": 0.0, "lenient_accuracy": 0.5}}
               for model in ("medkit", "medgpt-oss-20b")]
    frame = scoring_protocols(results)
    assert list(frame.index) == ["MedQA · MedGPT-OSS [medgpt-oss-20b]", "MedQA · MedGPT-OSS [medkit]"]
    assert list(frame["Paper prints"]) == pytest.approx([70.11, 70.11])
