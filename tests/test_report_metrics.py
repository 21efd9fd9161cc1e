"""Tests for medkit.eval.report_metrics (hand-computed expectations)."""
from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest

from medkit.eval import report_metrics as rm
from medkit.eval.report_metrics import MetricResult, score_reports

FIX = Path(__file__).parent / "fixtures" / "report_metrics"
GRAPHS = json.loads((FIX / "radgraph_graphs.json").read_text())["cases"]
COMPONENTS = json.loads((FIX / "radcliq_components.json").read_text())
COMPONENTS.pop("_comment")


def _case(name):
    c = GRAPHS[name]
    return c["hypothesis"], c["reference"]


# ---------------------------------------------------------------- RadGraph
# A: identical graphs -> every level 1.
# B: only "effusion" differs (OBS-DP vs OBS-DA); 2 of 3 keys match at every
#    level (left; pleural(+rel / modify left); effusion mismatched) -> 2/3.
# C: hyp entities {opacity, lobe, right, lower}, ref adds pneumonia.
#    simple: 4 matches, P=4/4, R=4/5 -> F1 = 2*0.8/1.8 = 8/9.
#    partial: hyp "lower" has no relation but ref "lower" does -> keys
#      (lower,ANAT-DP) vs (lower,ANAT-DP,True) differ; 3 matches,
#      P=3/4, R=3/5 -> F1 = 2*.45/1.35 = 2/3.
#    complete: hyp keys {opacity located_at lobe, (lobe), right modify lobe,
#      (lower)} (4); ref keys {right modify lobe, lower modify lobe, (lobe),
#      opacity located_at lobe, opacity suggestive_of pneumonia, (pneumonia)}
#      (6); 3 matches, P=3/4, R=1/2 -> F1 = 0.75/1.25 = 0.6.
# D: duplicate "effusion" collapses (hyp set size 2); "Heart" != "heart"
#    (case-sensitive outside complete-relation keys); ref size 3; 1 match,
#    P=1/2, R=1/3 -> F1 = (1/3)/(5/6) = 0.4 at all levels (no relations).
EXPECTED = {
    "A_identical": {"simple": 1.0, "partial": 1.0, "complete": 1.0},
    "B_negation_flip": {"simple": 2 / 3, "partial": 2 / 3, "complete": 2 / 3},
    "C_relations_differ": {"simple": 8 / 9, "partial": 2 / 3, "complete": 0.6},
    "D_duplicates_and_case": {"simple": 0.4, "partial": 0.4, "complete": 0.4},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_radgraph_reward_levels_hand_computed(name):
    hyp, ref = _case(name)
    got = rm.radgraph_rewards(hyp, ref)
    for level, want in EXPECTED[name].items():
        assert got[level] == pytest.approx(want, abs=1e-12), (name, level)


def test_radgraph_complete_lowercases_related_entities_only():
    hyp = {"entities": {"1": {"tokens": "Mild", "label": "OBS-DP", "relations": [["modify", "2"]]},
                        "2": {"tokens": "Edema", "label": "OBS-DP", "relations": []}}}
    ref = {"entities": {"1": {"tokens": "mild", "label": "OBS-DP", "relations": [["modify", "2"]]},
                        "2": {"tokens": "edema", "label": "OBS-DP", "relations": []}}}
    # simple/partial: no key matches (case differs) -> 0.
    # complete: (mild, OBS-DP, modify, edema) matches after lower-casing;
    #   (Edema) vs (edema) does not -> P=R=1/2 -> 0.5.
    got = rm.radgraph_rewards(hyp, ref)
    assert got == {"simple": 0.0, "partial": 0.0, "complete": pytest.approx(0.5)}


def test_radgraph_no_entities_scores_zero():
    hyp, ref = _case("A_identical")
    empty = {"entities": {}}
    for level in ("simple", "partial", "complete"):
        assert rm.radgraph_reward(empty, ref, level) == 0.0
        assert rm.radgraph_reward(hyp, empty, level) == 0.0
        assert rm.radgraph_reward(empty, empty, level) == 0.0
    with pytest.raises(ValueError, match="level"):
        rm.radgraph_reward(hyp, ref, "exact")


def test_radgraph_combined_f1():
    # C: entity F1 = 8/9 (as simple); relations hyp {opacity->lobe located_at,
    #   right->lobe modify} (2), ref 4 relations, 2 matched -> P=1, R=1/2 ->
    #   2/3; combined = (8/9 + 6/9)/2 = 7/9.
    assert rm.radgraph_combined_f1(*_case("C_relations_differ")) == pytest.approx(7 / 9)
    # D: entity F1 0.4; both sides without relations -> relation F1 0 -> 0.2.
    assert rm.radgraph_combined_f1(*_case("D_duplicates_and_case")) == pytest.approx(0.2)
    assert rm.radgraph_combined_f1(*_case("A_identical")) == pytest.approx(1.0)


def _graph_inputs(names):
    hyps = [GRAPHS[n]["hypothesis_text"] for n in names]
    refs = [GRAPHS[n]["reference_text"] for n in names]
    ann = {"hypotheses": [GRAPHS[n]["hypothesis"] for n in names],
           "references": [GRAPHS[n]["reference"] for n in names]}
    return hyps, refs, ann


def test_score_reports_radgraph_partial_dataset_mean_and_empty_policy():
    names = sorted(EXPECTED)
    hyps, refs, ann = _graph_inputs(names)
    # Fifth pair: empty hypothesis string with a non-empty annotation on both
    # sides -- the package scores it 0 before looking at graphs.
    hyps.append("")
    refs.append(GRAPHS["A_identical"]["reference_text"])
    ann["hypotheses"].append(GRAPHS["A_identical"]["hypothesis"])
    ann["references"].append(GRAPHS["A_identical"]["reference"])
    res = score_reports(hyps, refs, metrics=("radgraph_partial", "radgraph_simple"),
                        radgraph_annotations=ann)
    part = res["radgraph_partial"]
    assert part.status == "ok"
    # (1 + 2/3 + 2/3 + 0.4 + 0) / 5 = 2.7333.../5
    assert part.per_report == pytest.approx((1.0, 2 / 3, 2 / 3, 0.4, 0.0))
    assert part.value == pytest.approx((1 + 2 / 3 + 2 / 3 + 0.4) / 5)
    assert part.metadata["reward_level"] == "partial"
    assert res["radgraph_simple"].value == pytest.approx((1 + 2 / 3 + 8 / 9 + 0.4) / 5)


def test_empty_reference_string_scores_zero():
    hyps, refs, ann = _graph_inputs(["A_identical"])
    res = score_reports(hyps, [""], metrics=("radgraph_partial",), radgraph_annotations=ann)
    assert res["radgraph_partial"].value == 0.0


# ---------------------------------------------------------------- BLEU / ROUGE
def test_bleu_tokenize_matches_cxr_report_metric_prep():
    assert rm.bleu_tokenize("The heart size is normal.") == \
        ["the", "heart", "size", "is", "normal", "."]
    assert rm.bleu_tokenize("  Two  spaces.No gap") == ["two", "spaces", ".no", "gap"]


def test_sentence_bleu_known_examples():
    ref = rm.bleu_tokenize("The heart size is normal.")        # 6 tokens
    hyp = rm.bleu_tokenize("Heart size is normal.")            # 5 tokens
    # all uni/bi/tri/4-grams of hyp occur in ref -> p_n = 1; BP = exp(1-6/5)
    assert rm.sentence_bleu(hyp, [ref], 2) == pytest.approx(math.exp(-0.2), abs=1e-12)
    assert rm.sentence_bleu(hyp, [ref], 4) == pytest.approx(math.exp(-0.2), abs=1e-12)
    # smoothing: hyp [no, pneumothorax, .] vs ref of 6 tokens; p1 = 2/3,
    # p2 = 0/2 -> 0.1/2; BP = exp(1 - 6/3)
    h2 = rm.bleu_tokenize("No pneumothorax.")
    r2 = rm.bleu_tokenize("There is no focal consolidation.")
    assert rm.sentence_bleu(h2, [r2], 2) == pytest.approx(
        math.exp(-1) * math.sqrt((2 / 3) * 0.05), abs=1e-12)
    # clipping: "effusion" x3 clipped to 1 -> p1 = 2/4, p2 = 1/3, BP = 1
    h3 = rm.bleu_tokenize("effusion effusion effusion.")
    r3 = rm.bleu_tokenize("small effusion.")
    assert rm.sentence_bleu(h3, [r3], 2) == pytest.approx(math.sqrt(1 / 6), abs=1e-12)
    # no unigram overlap -> 0; empty hypothesis -> 0
    assert rm.sentence_bleu(["x"], [r3], 2) == 0.0
    assert rm.sentence_bleu([], [r3], 2) == 0.0


def test_rouge_l_known_example():
    # LCS(heart size is normal, the heart size is within normal limits) = 4;
    # P = 4/4, R = 4/7 -> F = 8/11
    assert rm.rouge_l("Heart size is normal.", "The heart size is within normal limits.") \
        == pytest.approx(8 / 11)
    assert rm.rouge_l("", "normal") == 0.0
    assert rm.rouge_l("a b", "c d") == 0.0


def test_score_reports_lexical():
    hyps = ["Heart size is normal.", "effusion effusion effusion."]
    refs = ["The heart size is normal.", "small effusion."]
    res = score_reports(hyps, refs, metrics=("bleu2", "bleu4", "rougeL"))
    b2 = res["bleu2"]
    assert b2.status == "ok"
    assert b2.per_report == pytest.approx((math.exp(-0.2), math.sqrt(1 / 6)))
    assert b2.value == pytest.approx((math.exp(-0.2) + math.sqrt(1 / 6)) / 2)
    # corpus BLEU-2: p1 = (5+2)/(5+4), p2 = (4+1)/(4+3), c = 9, r = 6+3 -> BP 1
    assert b2.metadata["corpus_bleu"] == pytest.approx(math.sqrt((7 / 9) * (5 / 7)))
    assert res["rougeL"].per_report[0] == pytest.approx(2 * 0.8 / 1.8)  # LCS 4, P=1, R=4/5
    assert set(res) == {"bleu2", "bleu4", "rougeL"}


# ---------------------------------------------------------------- RadCliQ
def test_radcliq_v1_published_numbers_at_the_mean_and_one_sd():
    c = rm.RADCLIQ_V1
    assert c.features == ("radgraph_combined", "bertscore", "semb_score", "bleu_score")
    at_mean = {f: [m] for f, m in zip(c.features, c.mean)}
    # all z = 0 -> intercept
    assert rm.radcliq_v1_scores(at_mean)[0] == pytest.approx(2.46655256e-10, abs=1e-15)
    # radgraph one SD above its mean, others at the mean -> coef_radgraph + b
    one_sd = dict(at_mean, radgraph_combined=[c.mean[0] + c.scale[0]])
    assert rm.radcliq_v1_scores(one_sd)[0] == pytest.approx(-0.377083683 + 2.46655256e-10)
    # bertscore one SD below -> -coef_bertscore
    minus = dict(at_mean, bertscore=[c.mean[1] - c.scale[1]])
    assert rm.radcliq_v1_scores(minus)[0] == pytest.approx(0.370300100, abs=1e-9)


def test_radcliq_toy_composition_and_reciprocal_of_mean():
    coef = rm.load_radcliq_coefficients(FIX / "radcliq_toy_coefficients.json")
    # z = ((x-0.5)/0.25, (x-0.5)/0.25, (x-0.5)/0.5, *0), y = -(z1+z2+z3) + 2
    # r1: z=(1, 0, 0)    -> 1 ; r2: z=(-1,-1,-1) -> 5 ; r3: z=(0, 1, 0) -> 1
    assert rm.radcliq_v1_scores(COMPONENTS, coef) == pytest.approx([1.0, 5.0, 1.0])
    res = score_reports(["a", "b", "c"], ["a", "b", "c"],
                        metrics=("radcliq_v1", "radcliq_v1_inv"),
                        component_scores=COMPONENTS, radcliq_coefficients=coef)
    assert res["radcliq_v1"].value == pytest.approx(7 / 3)
    inv = res["radcliq_v1_inv"]
    assert inv.status == "ok"
    assert inv.value == pytest.approx(3 / 7)                       # 1 / mean
    assert inv.value != pytest.approx((1 + 1 / 5 + 1) / 3)         # not mean(1/x)
    assert inv.per_report == pytest.approx((1.0, 5.0, 1.0))        # raw RadCliQ
    assert rm.reciprocal_of_mean([1.0, 5.0, 1.0]) == pytest.approx(3 / 7)


def test_radcliq_uses_own_bleu2_and_radgraph_combined():
    # Only BERTScore and s_emb supplied; BLEU-2 and radgraph_combined are
    # computed here from text and graphs.
    names = ["A_identical", "C_relations_differ"]
    hyps, refs, ann = _graph_inputs(names)
    comps = {"bertscore": [0.6, 0.4], "semb_score": [0.9, 0.7]}
    res = score_reports(hyps, refs, metrics=("radcliq_v1",), radgraph_annotations=ann,
                        component_scores=comps)
    r = res["radcliq_v1"]
    assert r.status == "ok"
    bleu = [rm.sentence_bleu(rm.bleu_tokenize(h), [rm.bleu_tokenize(t)], 2)
            for h, t in zip(hyps, refs)]
    assert bleu[0] == pytest.approx(1.0)
    c = rm.RADCLIQ_V1
    rows = [(1.0, 0.6, 0.9, bleu[0]), (7 / 9, 0.4, 0.7, bleu[1])]
    want = [sum(k * (x - m) / s for x, m, s, k in zip(row, c.mean, c.scale, c.coef))
            + c.intercept for row in rows]
    assert r.per_report == pytest.approx(tuple(want))
    assert r.metadata["component_sources"]["bleu_score"] == "computed"


def test_radcliq_inv_nonpositive_mean_is_not_a_number():
    c = rm.RADCLIQ_V1
    good = {f: [m + s] for f, m, s in zip(c.features, c.mean, c.scale)}  # < 0
    res = score_reports(["x"], ["y"], metrics=("radcliq_v1_inv",), component_scores=good)
    assert res["radcliq_v1_inv"].value is None
    assert res["radcliq_v1_inv"].status.startswith("not computed")
    with pytest.raises(ValueError):
        rm.reciprocal_of_mean([-1.0, 0.5])


def test_bad_coefficients_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"features": ["a"], "mean": [0.0], "scale": [1.0]}))
    with pytest.raises(ValueError, match="coef"):
        rm.load_radcliq_coefficients(p)


# ---------------------------------------------------------------- offline backends
def _block(monkeypatch, *modules):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # import -> ImportError


def test_offline_model_metrics_not_computed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _block(monkeypatch, "radgraph", "RaTEScore", "bert_score", "f1chexbert")
    res = score_reports(["No acute findings."], ["No acute cardiopulmonary process."])
    assert list(res) == list(rm.DEFAULT_METRICS)
    for name in ("radgraph_partial", "ratescore", "radcliq_v1_inv"):
        r = res[name]
        assert isinstance(r, MetricResult)
        assert r.value is None and r.per_report is None
        assert r.status.startswith("not computed: needs"), r.status
        assert not r.computed
    assert "radgraph==0.1.18" in res["radgraph_partial"].status
    assert "radgraph-xl" in res["radgraph_partial"].status
    assert res["radgraph_partial"].metadata["model_type"] == "radgraph-xl"
    assert "RaTEScore==0.6.0" in res["ratescore"].status
    assert "bert-score" in res["radcliq_v1_inv"].status
    assert "f1chexbert" in res["radcliq_v1_inv"].status
    for name in ("bleu2", "bleu4", "rougeL"):
        assert res[name].computed and isinstance(res[name].value, float)


def test_backend_installed_but_weights_missing(monkeypatch):
    fake = types.ModuleType("radgraph")

    class RadGraph:  # stands in for the real class; weights cannot be fetched
        def __init__(self, model_type=None, **kw):
            raise OSError("Cannot download the file: offline")

    fake.RadGraph = RadGraph
    monkeypatch.setitem(sys.modules, "radgraph", fake)
    res = score_reports(["a"], ["b"], metrics=("radgraph_partial",))
    r = res["radgraph_partial"]
    assert r.value is None
    assert r.status.startswith("not computed: needs package radgraph==0.1.18")
    assert "OSError" in r.status


def test_radgraph_backend_used_when_available(monkeypatch):
    # A fake RadGraph returning fixture graphs checks the wiring: texts sent as
    # non-empty hyps then refs, results keyed "0".."2n-1".
    hyp, ref = _case("C_relations_differ")
    seen = []
    fake = types.ModuleType("radgraph")

    class RadGraph:
        def __init__(self, model_type=None, **kw):
            seen.append(model_type)

        def __call__(self, texts):
            seen.append(list(texts))
            return {"0": hyp, "1": ref}

    fake.RadGraph = RadGraph
    monkeypatch.setitem(sys.modules, "radgraph", fake)
    res = score_reports(["h", ""], ["r", "r2"], metrics=("radgraph_partial",
                                                          "radgraph_complete"))
    assert seen == ["radgraph-xl", ["h", "r"]]
    assert res["radgraph_partial"].per_report == pytest.approx((2 / 3, 0.0))
    assert res["radgraph_complete"].per_report == pytest.approx((0.6, 0.0))


def test_backend_failing_while_scoring_is_not_computed(monkeypatch):
    # An installed backend that loads but breaks when used (e.g. a transformers API it calls
    # was removed) gives a status, never an exception or a number.
    fake = types.ModuleType("radgraph")

    class RadGraph:
        def __init__(self, model_type=None, **kw):
            pass

        def __call__(self, texts):
            raise AttributeError("BertTokenizer has no attribute encode_plus")

    fake.RadGraph = RadGraph
    monkeypatch.setitem(sys.modules, "radgraph", fake)
    r = score_reports(["a"], ["b"], metrics=("radgraph_partial",))["radgraph_partial"]
    assert r.value is None
    assert r.status.startswith("not computed: needs package radgraph==0.1.18")
    assert "scoring failed: AttributeError: BertTokenizer has no attribute encode_plus" in r.status


def test_bertscore_scoring_failure_names_the_component(monkeypatch):
    calls = []
    fake = types.ModuleType("bert_score")

    class Tokenizer:  # transformers 4 style: the compatibility step leaves it alone
        def build_inputs_with_special_tokens(self, ids):
            return [0] + ids + [2]

    tok = Tokenizer()

    class BERTScorer:
        def __init__(self, **kw):
            calls.append(kw)
            self._tokenizer = tok

        def score(self, cands, refs):
            raise IndexError("list index out of range")

    fake.BERTScorer = BERTScorer
    monkeypatch.setitem(sys.modules, "bert_score", fake)
    hyps, refs, ann = _graph_inputs(["A_identical"])
    res = score_reports(hyps, refs, metrics=("radcliq_v1",), radgraph_annotations=ann,
                        component_scores={"semb_score": [0.9]})
    r = res["radcliq_v1"]
    assert r.value is None
    assert "bertscore: package bert-score==0.3.13" in r.status
    assert "scoring failed: IndexError" in r.status
    assert calls == [{"batch_size": 64, **rm.BERTSCORE_OPTIONS}]


def test_ratescore_count_mismatch_is_not_a_number(monkeypatch):
    fake = types.ModuleType("RaTEScore")

    class RaTEScore:
        def __init__(self, **kw):
            pass

        def compute_score(self, cands, refs):
            return [0.7]  # one report dropped by its sentence splitter

    fake.RaTEScore = RaTEScore
    monkeypatch.setitem(sys.modules, "RaTEScore", fake)
    r = score_reports(["", "b c d"], ["x y z", "b c d"], metrics=("ratescore",))["ratescore"]
    assert r.value is None and r.per_report is None
    assert "RaTEScore returned 1 scores for 2 reports" in r.status


def test_backends_table_names_the_pins_in_statuses():
    assert {k: v[2] for k, v in rm.BACKENDS.items()} == {
        "radgraph": rm.RADGRAPH_PACKAGE, "ratescore": rm.RATESCORE_PACKAGE,
        "bertscore": rm.BERTSCORE_PACKAGE, "chexbert": rm.CHEXBERT_PACKAGE}


def test_ratescore_from_component_scores():
    res = score_reports(["a", "b"], ["c", "d"], metrics=("ratescore",),
                        component_scores={"ratescore": [0.5, 0.7]})
    assert res["ratescore"].value == pytest.approx(0.6)


# ---------------------------------------------------------------- validation
def test_bad_input_errors_name_the_index():
    with pytest.raises(ValueError, match="length mismatch.*index 1"):
        score_reports(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"hypotheses\[1\]"):
        score_reports(["a", 3], ["a", "b"])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        score_reports(["a"], [None])
    with pytest.raises(ValueError, match="sequence of strings"):
        score_reports("abc", "abc")
    with pytest.raises(ValueError, match=r"\['bertscore'\]\[1\]"):
        score_reports(["a", "b"], ["a", "b"], metrics=("bleu2",),
                      component_scores={"bertscore": [0.1, "x"]})
    with pytest.raises(ValueError, match=r"radgraph_annotations\['hypotheses'\] has 1"):
        score_reports(["a", "b"], ["a", "b"], metrics=("radgraph_partial",),
                      radgraph_annotations={"hypotheses": [{}], "references": [{}, {}]})
    with pytest.raises(ValueError, match="unknown metrics"):
        score_reports(["a"], ["a"], metrics=("bleu9",))
