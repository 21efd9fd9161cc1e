"""Strict and lenient multiple-choice scoring, and the bootstrap intervals reported next to them."""

import numpy as np
import pytest

from medkit.eval.scoring import (
    MCScore,
    accuracy_summary,
    bootstrap_ci,
    extract_choice,
    lenient_choice,
    paired_bootstrap,
    score_mc,
)

OPTIONS = {"A": "Pulmonary embolism", "B": "Pneumonia", "C": "Gout", "D": "Hepatitis B"}
TEN_OPTIONS = {letter: f"Finding {i}" for i, letter in enumerate("ABCDEFGHIJ")}

GOLDEN = [
    # bare letter forms (fast path)
    ("B", "B"),
    ("B.", "B"),
    ("(B)", "B"),
    ("[B]", "B"),
    ("**B**", "B"),
    ("  B \n", "B"),
    ("b", "B"),
    ("a", "A"),
    ("Answer: B.", "B"),
    ("answer: b", "B"),
    ("The answer is (B)", "B"),
    ("The correct answer is: **(C)**.", "C"),
    # explicit answer statements and LaTeX
    ("answer is B because the consolidation is lobar", "B"),
    ("The answer is B, not A.", "B"),
    ("I think the answer is D.", "D"),
    ("The correct option is (C).", "C"),
    ("\\boxed{B}", "B"),
    ("$\\boxed{\\text{B}}$", "B"),
    ("Final answer: $\\boxed{\\textbf{C}}$", "C"),
    ("\\boxed{C. Gout}", "C"),
    # a leading letter, with option text or an explanation after it
    ("B) Pneumonia", "B"),
    ("(b) pneumonia", "B"),
    ("C. Gout", "C"),
    ("**C. Gout**", "C"),
    ("B because option A is unlikely", "B"),
    ("A because the D-dimer is raised", "A"),
    ("C\n\nExplanation: A is less likely.", "C"),
    ("C. The crystals are negatively birefringent.", "C"),
    ("B ... so B", "B"),
    ("I think B", "B"),
    # option text without a letter
    ("pneumonia", "B"),
    ("  GOUT. ", "C"),
    ("The answer is Gout.", "C"),
    ("Hepatitis B", "D"),
    # unparsed: hedges, articles, invalid letters, refusals, contradictions
    ("A or B", None),
    ("A and C", None),
    ("B, C", None),
    ("(A)/(D)", None),
    ("a pneumothorax is present", None),
    ("The answer is a pneumothorax", None),
    ("A 45-year-old man with chest pain", None),
    ("E", None),
    ("(E)", None),
    ("", None),
    ("   \n\t", None),
    ("I cannot answer", None),
    ("I'm not sure.", None),
    ("Option A is wrong. B is right.", None),
    ("likely hepatitis B given the serology", None),
    ("C. Pulmonary embolism", None),
    ("Answer: C. Pulmonary embolism", None),
    ("The answer is B. The answer is C.", None),
    ("B\n\nC", None),
    ("B C", None),
    ("(A)\n(D)", None),
    ("The answer is B or C", None),
    ("Answer: (A)/(D)", None),
    # an answer statement wins over an earlier hedge-looking phrase that is not the answer
    ("Both A and B are wrong; the answer is C", "C"),
    ("A or B? The answer is D.", "D"),
    ("B\n\nB", "B"),
    ("e.g. pneumonia or gout", None),
    ("B-cell lymphoma is likely", None),
    ("C-reactive protein is raised", None),
]


@pytest.mark.parametrize("output, expected", GOLDEN)
def test_strict_extraction_golden_table(output, expected):
    assert extract_choice(output, OPTIONS) == expected


@pytest.mark.parametrize("output, expected", [("I", "I"), ("(I)", "I"), ("I cannot answer", None),
                                               ("I think J", "J"), ("J", "J")])
def test_letter_i_is_a_letter_only_when_it_stands_alone(output, expected):
    assert extract_choice(output, TEN_OPTIONS) == expected


def test_duplicate_option_texts_are_not_resolved_by_text():
    assert extract_choice("normal", {"A": "Normal", "B": "normal.", "C": "Mass"}) is None


def test_letter_outside_a_through_j_is_rejected_in_options():
    with pytest.raises(ValueError, match="'K'"):
        extract_choice("some long output that is not a bare letter form at all", {"A": "x", "K": "y"})


def test_empty_options_raise():
    with pytest.raises(ValueError, match="options must not be empty"):
        extract_choice("B", {})


LENIENT_GOLDEN = [
    # strict wins when it parses
    ("B", "B"),
    ("C. Gout", "C"),
    ("Both A and B are wrong; the answer is C", "C"),
    # else the first valid letter the output names, never an option it did not name (D "Hepatitis B")
    ("A or B", "A"),
    ("A and C", "A"),
    ("AB", "A"),
    ("Answer: BC", "B"),
    ("The answer is B or C", "B"),
    ("the answer is b or c", "B"),  # lowercase after an answer statement
    ("the answer is a pulmonary embolism", "A"),  # the article: option A's text decides, not the letter
    ("the answer is a gout flare", "C"),
    ("**B** or **C**", "B"),
    ("B\n\nC", "B"),
    ("(C)/(A)", "C"),
    ("Option C is likely, not A", "C"),
    ("E or B", "B"),  # E is not an option
    ("The answer is B. The answer is C.", "B"),
    # letters inside option texts are not mentions: the nearest option text decides
    ("likely hepatitis B given the serology", "D"),
    ("most consistent with gout given the crystals", "C"),
    ("a pulmonary embolus is present", "A"),
    ("A pulmonary embolus is present", "A"),  # the article, not option A's letter
    ("   ", None),
]


@pytest.mark.parametrize("output, expected", LENIENT_GOLDEN)
def test_lenient_golden_table(output, expected):
    assert lenient_choice(output, OPTIONS) == expected


def test_lenient_maps_any_nonempty_output_to_an_option():
    assert lenient_choice("I cannot answer", OPTIONS) in OPTIONS
    assert lenient_choice("E", OPTIONS) in OPTIONS


def test_score_mc_statuses():
    assert score_mc("B", OPTIONS, "B") == MCScore("B", True, "B", True, "correct", "B", True, False)
    assert score_mc("(C)", OPTIONS, "B") == MCScore("C", False, "C", False, "wrong", "C", False, True)
    unparsed = score_mc("probably pneumonia, maybe gout", OPTIONS, "B")
    assert (unparsed.parsed, unparsed.correct, unparsed.status) == (None, False, "unparsed")
    assert unparsed.lenient in OPTIONS
    hedge = score_mc("A or B", OPTIONS, "A")
    assert (hedge.status, hedge.lenient, hedge.lenient_correct) == ("unparsed", "A", True)


def test_score_mc_rejects_an_answer_outside_the_options():
    with pytest.raises(ValueError, match="'E'"):
        score_mc("B", OPTIONS, "E")


def test_score_mc_is_frozen():
    with pytest.raises(AttributeError):
        score_mc("B", OPTIONS, "B").correct = False


def correct_vector(n: int, accuracy: float, seed: int) -> list[bool]:
    return list(np.random.default_rng(seed).random(n) < accuracy)


def test_accuracy_summary_values_and_interval():
    correct = [True] * 6 + [False] * 4
    unparsed = [False] * 8 + [True] * 2
    lenient = [True] * 8 + [False] * 2
    summary = accuracy_summary(correct, unparsed, lenient, n_boot=2000, seed=0)
    assert summary["n"] == 10
    assert summary["accuracy"] == pytest.approx(0.6)
    assert summary["unparsed_rate"] == pytest.approx(0.2)
    assert summary["lenient_accuracy"] == pytest.approx(0.8)
    assert summary["ci_low"] < 0.6 < summary["ci_high"]
    assert summary["lenient_ci_low"] < 0.8 < summary["lenient_ci_high"]
    assert 0 <= summary["ci_low"] and summary["ci_high"] <= 1


def test_accuracy_interval_narrows_with_more_items():
    widths = []
    for n in (50, 500, 5000):
        correct = correct_vector(n, 0.7, seed=n)
        summary = accuracy_summary(correct, [False] * n, correct, n_boot=1000, seed=0)
        assert summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"]
        widths.append(summary["ci_high"] - summary["ci_low"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.05


def test_same_seed_gives_identical_intervals_and_other_seeds_differ():
    correct = correct_vector(200, 0.6, seed=1)
    first = accuracy_summary(correct, [False] * 200, correct, seed=7)
    assert first == accuracy_summary(correct, [False] * 200, correct, seed=7)
    values = np.random.default_rng(3).normal(size=300)
    assert bootstrap_ci(values, n_boot=500, seed=7) == bootstrap_ci(values, n_boot=500, seed=7)
    assert bootstrap_ci(values, n_boot=500, seed=7) != bootstrap_ci(values, n_boot=500, seed=8)


def test_bootstrap_ci_of_a_per_item_metric():
    values = np.random.default_rng(0).normal(loc=2.0, scale=1.0, size=400)
    low, high = bootstrap_ci(values, n_boot=2000, seed=0)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / 20, rel=0.2)  # normal theory: 2 * 1.96 * sd / sqrt(n)
    assert bootstrap_ci([3.0], n_boot=10, seed=0) == (3.0, 3.0)
    narrow = bootstrap_ci(values, n_boot=2000, seed=0, alpha=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_handles_many_items_in_chunks():
    values = np.arange(100_000) % 2
    low, high = bootstrap_ci(values, n_boot=200, seed=0)
    assert low < 0.5 < high and high - low < 0.01


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        accuracy_summary([True], [False], [True], alpha=alpha)


def test_bad_inputs_to_summaries():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        accuracy_summary([True, False], [False], [True, False])


def test_paired_bootstrap_identical_models():
    scores = {f"item{i}": float(i % 3 == 0) for i in range(100)}
    result = paired_bootstrap(scores, dict(scores), n_boot=1000, seed=0)
    assert result["diff"] == 0.0
    assert result["ci_low"] == result["ci_high"] == 0.0
    assert result["p_value"] == 1.0


def test_paired_bootstrap_clearly_better_model():
    rng = np.random.default_rng(0)
    ids = [f"q{i}" for i in range(300)]
    better = {i: float(rng.random() < 0.8) for i in ids}
    worse = {i: float(rng.random() < 0.5) for i in ids}
    result = paired_bootstrap(better, worse, n_boot=2000, seed=0)
    assert result["diff"] == pytest.approx(result["mean_a"] - result["mean_b"])
    assert result["diff"] > 0.15
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]
    assert result["p_value"] < 0.05
    reverse = paired_bootstrap(worse, better, n_boot=2000, seed=0)
    assert reverse["diff"] == pytest.approx(-result["diff"])
    assert reverse["p_value"] < 0.05


def test_paired_bootstrap_small_difference_is_not_significant():
    rng = np.random.default_rng(1)
    ids = [f"q{i}" for i in range(60)]
    a = {i: float(rng.random() < 0.6) for i in ids}
    b = {i: (1.0 - a[i]) if n < 2 else a[i] for n, i in enumerate(ids)}  # differs on two items only
    assert paired_bootstrap(a, b, n_boot=1000, seed=0)["p_value"] > 0.05


def test_paired_bootstrap_ignores_mapping_order():
    a = {f"q{i}": float(i % 2) for i in range(50)}
    b = {f"q{i}": float(i % 3 == 0) for i in range(50)}
    shuffled = dict(reversed(list(b.items())))
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, shuffled, seed=3)


def test_paired_bootstrap_names_mismatched_ids():
    a = {f"q{i}": 1.0 for i in range(10)}
    b = {f"q{i}": 1.0 for i in range(3, 13)}
    with pytest.raises(ValueError) as error:
        paired_bootstrap(a, b)
    message = str(error.value)
    assert "3 only in a ['q0', 'q1', 'q2']" in message
    assert "3 only in b ['q10', 'q11', 'q12']" in message
    many = {f"z{i}": 0.0 for i in range(20)}
    with pytest.raises(ValueError, match=r"20 only in b \['z0', 'z1', 'z10', 'z11', 'z12'\]"):
        paired_bootstrap({}, many)
