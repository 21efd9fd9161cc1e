"""How much the scoring protocol alone moves a multiple-choice score (``paper_tables/scoring_protocols.*``).

Every row names the rule MedEvalKit applies to that benchmark (its parser, the form its dataset module writes
options in, the module it follows), so in reviewer mode, with no result files, the table lists one row per
multiple-choice benchmark with the rule alone. With fresh results it has one row per (benchmark, model): the paper's strict score with its unparsed rate, the
kit's lenient reading and the MedEvalKit-protocol score (:mod:`medkit.eval.medevalkit`) with how often that
rule fell back to a guess, and each one's difference from strict. For results on the native release the
row also shows what the MedGPT-OSS paper prints for that model and benchmark; a synthetic counterpart's
scores are never put beside a printed number.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from medkit.eval.medevalkit import rule_for
from medkit.reporting.cross_paper import medgpt_oss_paper_values, percent
from medkit.reporting.tables import NOT_COMPUTED, column_names, paper_columns

PREDATES = (f"{NOT_COMPUTED}: the result file predates the MedEvalKit-protocol score (medkit eval --rescore "
            "recomputes it from the prediction store without the model)")


SCORE_COLUMNS = ("Items from", "n", "Strict (paper's rule)", "Unparsed", "Lenient", "MedEvalKit protocol",
                 "MedEvalKit guessed", "Lenient - strict", "MedEvalKit - strict", "Paper prints")


def rule_text(benchmark: str) -> str:
    rule = rule_for(benchmark)
    if rule.parser == "mmmu":
        return "MMMU parser (random fallback)"
    return f"judge_multi_choice, options '{rule.choice_form}'" + ("" if rule.answer_tag_first else ", no <answer> pass")


def rule_sources(benchmarks: list[tuple[str, str]]) -> str:
    """One footnote naming, per benchmark shown, what its rule follows."""
    return "MedEvalKit rule after: " + "; ".join(f"{title}: {rule_for(name).note}" for name, title in benchmarks) + "."


def protocol_row(record: dict[str, Any], paper_label: str | None, printed: dict[tuple[str, str], float]) -> dict[str, Any]:
    """One result's row; ``paper_label`` is the paper column its model stands for (None: not a paper model)."""
    metrics = record["metrics"]
    strict, lenient = percent(metrics["accuracy"]), percent(metrics.get("lenient_accuracy"))
    medevalkit = percent(metrics.get("medevalkit_accuracy"))
    native = record.get("source") == "native"
    return {
        "MedEvalKit rule": rule_text(record["benchmark"]),
        "Items from": record.get("source", "–"),
        "n": record["n"],
        "Strict (paper's rule)": strict,
        "Unparsed": percent(metrics.get("unparsed_rate")),
        "Lenient": lenient,
        "MedEvalKit protocol": medevalkit if medevalkit is not None else PREDATES,
        "MedEvalKit guessed": percent(metrics.get("medevalkit_fallback_rate")) if medevalkit is not None else PREDATES,
        "Lenient - strict": lenient - strict if lenient is not None else float("nan"),
        "MedEvalKit - strict": medevalkit - strict if medevalkit is not None else PREDATES,
        "Paper prints": printed.get((paper_label, record["benchmark"]), float("nan")) if native else float("nan"),
    }


def rules_only() -> pd.DataFrame:
    """Reviewer mode: one row per multiple-choice benchmark with its MedEvalKit rule, no scores."""
    from medkit.eval.benchmarks import all_benchmarks

    mc = [b for b in all_benchmarks() if b.scorer == "strict_mc"]
    rows = [{"MedEvalKit rule": rule_text(b.name), **dict.fromkeys(SCORE_COLUMNS, "–")} for b in mc]
    frame = pd.DataFrame(rows, index=[b.title for b in mc])
    frame.attrs["benchmarks"] = [(b.name, b.title) for b in mc]
    return frame


def scoring_protocols(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Every multiple-choice result scored three ways, side by side (module docstring)."""
    mc = sorted((r for r in results if "accuracy" in r.get("metrics", {})),
                key=lambda r: (r.get("table", ""), r["benchmark"], r["model"]))
    columns, printed = column_names(r["model"] for r in mc), medgpt_oss_paper_values()
    # a shared label's header is "<label> [<model>]"; the paper's value is looked up by the label itself
    paper_of = paper_columns(columns)
    if mc:
        frame = pd.DataFrame([protocol_row(r, paper_of.get(columns[r["model"]]), printed) for r in mc],
                             index=[f"{r.get('title', r['benchmark'])} · {columns[r['model']]}" for r in mc])
        shown = list(dict.fromkeys((r["benchmark"], r.get("title", r["benchmark"])) for r in mc))
    else:
        frame = rules_only()
        shown = frame.attrs["benchmarks"]
    frame.index.name = "Benchmark · model"
    frame.attrs.update(
        caption="One set of outputs, three multiple-choice rules (accuracy and rates, %).",
        decimals=2, rank=False, missing="–",
        footnotes=["Strict: the paper's rule; an output that commits to no single option is unparsed and wrong. "
                   "Lenient: the kit's reading of the same outputs, naming an option wherever the output does. "
                   "MedEvalKit protocol: the MedEvalKit harness's own rule, which never leaves an output "
                   "unparsed; 'guessed' is the share it read by string similarity (or, for MMMU, a random "
                   "option).",
                   "Paper prints: the MedGPT-OSS paper's value for that model, shown for results on the native "
                   "release only.",
                   "MedEvalKit rule: how MedEvalKit scores the benchmark (the form its dataset module writes "
                   "options in changes the similarity step), written from the rule's definition and checked "
                   "against the reference's readings (tests/test_medevalkit.py).",
                   rule_sources(shown)]
                  + ([] if mc else ["No fresh results: the rules alone. Run medkit eval (or notebooks 06, 07, "
                                    "09) and medkit tables for the scores."]))
    return frame
