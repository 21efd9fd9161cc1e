"""Reviewer mode's claims audit: the paper's comparisons tested at Table 3's n, from published numbers only."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from medkit.reporting.claims import (check_claim, claims_audit, compare_proportions, item_counts, load_claims,
                                     printable_from)


def test_two_proportion_interval_matches_newcombes_worked_example():
    """Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80, hybrid score interval
    for the difference 0.0524 to 0.3339 (method 10)."""
    test = compare_proportions(100 * 56 / 70, 100 * 48 / 80, 70, 80)
    assert test.difference == pytest.approx(20.0)
    assert (test.ci_low, test.ci_high) == (pytest.approx(5.24, abs=0.01), pytest.approx(33.39, abs=0.01))


def test_two_proportion_z_test_matches_the_pooled_formula():
    """SLAKE, Lingshu 72.24 vs MedGPT-OSS 71.53 on 836 items: counts 604 and 598; the pooled z statistic
    worked by hand gives p = erfc(|z| / sqrt 2)."""
    n, k_a, k_b = 836, 604, 598
    pooled = (k_a + k_b) / (2 * n)
    z = (k_a / n - k_b / n) / math.sqrt(pooled * (1 - pooled) * 2 / n)
    test = compare_proportions(72.24, 71.53, n)
    assert test.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert test.p_value == pytest.approx(0.744, abs=0.001) and not test.supported


def test_printed_percentages_are_checked_against_whole_counts():
    assert printable_from(71.53, 836) == "598/836"
    assert printable_from(49.23, 2000) is None  # 984/2000 = 49.20, 985/2000 = 49.25: not scored on 2,000 items
    assert printable_from(50.0, 2) == "1/2"


def test_each_claim_is_decided_from_the_published_numbers():
    counts = item_counts()
    decided = {c.id: check_claim(c, counts) for c in load_claims()}
    holds = {cid: cells["Holds"] for cid, cells in decided.items()}
    # MMMU-Med-Pro (4 opt): Lingshu 52.67, Hulu-Med 52.45, MedGPT-OSS 52.34 -- third, not second
    assert holds == {"medxqa_lead": "yes", "medframeqa_first": "yes", "mmmu_med_first": "yes",
                     "mmmu_pro4_gap": "no", "slake_gap": "yes", "mmmu_pro10_second": "yes",
                     "medqa_beats_medgemma": "yes", "mmlu_med_beats_medgemma": "no", "first_on_8_of_17": "yes",
                     "radgraph_doubles_medgemma": "yes", "radgraph_exceeds_octomed": "yes", "icl_gain_trial": "yes",
                     "icl_loss_hulu_trial": "yes", "icl_loss_lingshu_impression": "yes"}
    assert "(3rd)" in decided["mmmu_pro4_gap"]["Recomputed"]
    significant = {cid: cells["Supported at n (p < 0.05)"] for cid, cells in decided.items()}
    assert significant["medxqa_lead"] == "yes" and significant["icl_gain_trial"] == "yes"
    assert significant["medframeqa_first"].startswith("no")  # 63.01 vs 62.82 on 2,851 items
    assert significant["first_on_8_of_17"] == ("2 of the 6 testable first places (accuracies) are significant at "
                                               "their n; 2 are RaTEScores (n/c)")
    assert significant["icl_loss_lingshu_impression"].startswith("not computed: a RaTEScore")
    assert decided["icl_loss_hulu_trial"]["Difference (points)"] == "-4.01"
    assert significant["mmlu_med_beats_medgemma"] == "no: the opposite is significant (p < 0.05)"  # 72.59 vs 80.65


def test_a_claim_whose_number_the_tables_do_not_give_does_not_hold():
    counts = item_counts()
    lead = next(c for c in load_claims() if c.id == "medxqa_lead")
    assert check_claim(replace(lead, printed=14.0), counts)["Holds"] == "no"
    assert check_claim(replace(lead, row="SLAKE"), counts)["Holds"] == "no"  # second there, not first
    count = next(c for c in load_claims() if c.id == "first_on_8_of_17")
    assert check_claim(replace(count, printed=[9, 17]), counts)["Holds"] == "no"
    change = next(c for c in load_claims() if c.id == "icl_loss_hulu_trial")
    assert check_claim(replace(change, direction="gain"), counts)["Holds"] == "no"
    first = next(c for c in load_claims() if c.id == "medframeqa_first")
    assert check_claim(first, counts)["Holds"] == "yes" and check_claim(first, counts)["Printed"] == "score 63.01"
    assert check_claim(replace(first, score=63.1), counts)["Holds"] == "no"  # the sentence's own score differs


def test_every_row_of_tables_4_to_6_is_audited_first_against_second():
    frame = claims_audit()
    rows = frame[frame.index.str.startswith("Table ")]
    assert len(rows) == 16
    slake = rows.loc["Table 4 · SLAKE"]
    assert slake["Compared"] == "first Lingshu 72.24 vs second MedGPT-OSS 71.53"
    assert (slake["Difference (points)"], slake["Supported at n (p < 0.05)"]) == ("+0.71", "no")
    assert slake["Whole counts at n"] == "Lingshu none; MedGPT-OSS 598/836"
    assert rows.loc["Table 5 · MedMCQA", "Supported at n (p < 0.05)"] == "yes"
    assert rows.loc["Table 6 · Impression (0-shot)", "p"].startswith("not computed")


def test_cross_paper_pairs_the_baselines_with_their_own_papers_numbers():
    """Lingshu-32B is the only model both the MedGPT-OSS paper and another paper report: nine benchmarks."""
    from medkit.reporting.cross_paper import cross_paper, load_other_papers

    frame = cross_paper()
    paired = [i for i in frame.index if frame.at[i, "MedGPT-OSS paper"] != "not in this paper"]
    assert [i.split(" · ")[1] for i in paired] == ["MMMU-Med", "SLAKE", "MedXpertQA-MM", "MMLU-Med", "PubMedQA",
                                                         "MedMCQA", "MedQA", "Medbullets", "MedXpertQA-Text"]
    slake = frame.loc["Lingshu-32B · SLAKE"]
    assert (slake["MedGPT-OSS paper"], slake["Other paper"], slake["Difference (other - this paper)"]) == \
        ("72.24", "89.2", "+16.96")
    assert "2,094" in slake["Protocol differences"] and "nearest option text" in slake["Protocol differences"]
    assert "Table 6" in slake["Source"] and slake["medkit strict (fresh)"] == "–"
    assert len(load_other_papers().values) == 194  # every number of the reference file ships


def test_cross_paper_shows_fresh_scores_for_that_model():
    from medkit.reporting.cross_paper import cross_paper

    fresh = [{"model": "lingshu-32b", "benchmark": "slake", "source": "native", "n": 836,
              "metrics": {"accuracy": 0.5, "lenient_accuracy": 0.625, "medevalkit_accuracy": 0.75}},
             {"model": "lingshu-32b", "benchmark": "medqa", "source": "synthetic", "n": 100,
              "metrics": {"accuracy": 0.9, "lenient_accuracy": None}}]
    frame = cross_paper(fresh)
    row = frame.loc["Lingshu-32B · SLAKE"]
    assert (row["medkit strict (fresh)"], row["medkit lenient (fresh)"], row["medkit MedEvalKit protocol (fresh)"],
            row["medkit n (fresh)"]) == ("50.00", "62.50", "75.00", "836")
    assert frame.loc["Lingshu-32B · MedQA", "medkit strict (fresh)"] == "–"  # a synthetic counterpart never joins


def test_cross_paper_lists_the_seed_papers_own_models_with_fresh_scores():
    from medkit.reporting.cross_paper import cross_paper

    fresh = [{"model": "medmo-8b", "benchmark": "medqa", "source": "native", "n": 1273,
              "metrics": {"accuracy": 0.8, "lenient_accuracy": 0.85, "medevalkit_accuracy": 0.875}}]
    frame = cross_paper(fresh)
    medmo = frame.loc["MedMO-8B · MedQA (MedMO Table 1)"]
    assert (medmo["Other paper"], medmo["MedGPT-OSS paper"], medmo["Difference (other - this paper)"]) == \
        ("90.4", "not in this paper", "–")
    assert (medmo["medkit strict (fresh)"], medmo["medkit MedEvalKit protocol (fresh)"]) == ("80.00", "87.50")
    assert "MedEvalKit" in medmo["Protocol differences"]
    lingshu7 = [i for i in frame.index if i.startswith("Lingshu-7B · ")]
    assert len(lingshu7) == 3 + 6 + 3 + 9  # Lingshu Tables 6, 7, 9 and MedMO Table 1, accuracy only
    assert frame.loc["Lingshu-7B · MedQA (Lingshu Table 7)", "medkit strict (fresh)"] == "–"  # not run


def write_result(eval_out, model, benchmark, correct, ids=None):
    import json

    folder = eval_out / "results" / model
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"{benchmark}-{i}" for i in range(len(correct))]
    record = {"model": model, "benchmark": benchmark, "title": benchmark.upper(), "table": "5", "source": "native",
              "n": len(correct), "metrics": {"accuracy": sum(correct) / len(correct), "ci_low": 0.0, "ci_high": 1.0,
                                             "unparsed_rate": 0.0, "lenient_accuracy": sum(correct) / len(correct)}}
    (folder / f"{benchmark}.json").write_text(json.dumps(record))
    (folder / f"{benchmark}.items.json").write_text(json.dumps([{"id": i, "correct": c} for i, c in zip(ids, correct)]))


def test_fresh_audit_pairs_first_and_second_on_the_same_items(tmp_path):
    from medkit.reporting.paired import fresh_claims_audit
    from medkit.reporting.tables import load_results

    # 200 items: model a right on 110, b on the same 110 minus 10 -> a leads by 5 points, always on the
    # same items, so the paired test is decisive where an unpaired one at n=200 is not
    a = [i < 110 for i in range(200)]
    b = [i < 100 for i in range(200)]
    write_result(tmp_path, "medmo-8b", "medqa", a)
    write_result(tmp_path, "lingshu-7b", "medqa", b)
    write_result(tmp_path, "medmo-8b", "pubmedqa", [True, False])  # one model only: no row
    frame = fresh_claims_audit(load_results(tmp_path), tmp_path, seed=0)
    row = frame.loc["MEDQA"]
    assert (row["First"], row["Second"], row["n"]) == ("medmo-8b", "lingshu-7b", 200)
    assert row["Difference"] == pytest.approx(5.0)
    assert 0 < row["CI low"] < 5 < row["CI high"] and float(row["p (paired)"]) < 0.01 and row["p < 0.05"] == "yes"
    assert list(frame.index) == ["MEDQA"]
    from statsmodels.stats.proportion import proportions_ztest

    assert proportions_ztest([110, 100], [200, 200])[1] > 0.05  # unpaired: not significant at this n


def test_fresh_audit_refuses_to_pair_different_items(tmp_path):
    from medkit.reporting.paired import fresh_claims_audit
    from medkit.reporting.tables import load_results

    write_result(tmp_path, "medmo-8b", "medqa", [True, True, False])
    write_result(tmp_path, "lingshu-7b", "medqa", [True, False, False], ids=["x", "y", "z"])
    row = fresh_claims_audit(load_results(tmp_path), tmp_path).loc["MEDQA"]
    assert row["Difference"].startswith("not computed: models were scored on different ids")
