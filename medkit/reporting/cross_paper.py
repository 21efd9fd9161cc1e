"""Reviewer mode: the baselines' numbers in the MedGPT-OSS paper beside what other papers print for the
same model and benchmark (``paper_tables/cross_paper.{md,csv,tex}``), with the protocol differences that
plausibly explain a gap.

The other papers' numbers ship as data (``medkit/configs/other_papers.yaml``, each with its paper, table and
the split or subset as stated there). A row is a (model, benchmark) both the MedGPT-OSS paper (Tables 4-6)
and another paper report; with fresh results for that model (its baseline adapter's result files) the row
also shows the kit's strict, lenient and MedEvalKit-protocol scores on the same benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medkit.config import ConfigError, load_yaml
from medkit.profiles import BASELINES_PATH, CONFIG_DIR
from medkit.reporting.published import load_published, model_labels, result_spec

OTHER_PAPERS_PATH = CONFIG_DIR / "other_papers.yaml"


@dataclass(frozen=True)
class OtherPaper:
    citation: str
    harness: str


@dataclass(frozen=True)
class PrintedValue:
    paper: str
    table: str
    model: str
    benchmark: str  # as that paper names it
    variant: str
    metric: str
    value: float


@dataclass(frozen=True)
class OtherPapers:
    papers: dict[str, OtherPaper]
    benchmarks: dict[str, str]  # the other papers' benchmark name -> medkit registry name
    models: dict[str, str]  # the other papers' model name -> the MedGPT-OSS paper's column
    values: list[PrintedValue]
    protocol: dict[str, dict[str, str]] = field(default_factory=dict)  # paper -> benchmark (or "all") -> note
    # the other papers' models with no MedGPT-OSS paper column that the kit runs itself -> baseline name
    self_reported: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for v in self.values:
            if v.paper not in self.papers:
                raise ConfigError(f"{OTHER_PAPERS_PATH}: value of unknown paper {v.paper!r}")
            if v.benchmark not in self.benchmarks:
                raise ConfigError(f"{OTHER_PAPERS_PATH}: unknown benchmark {v.benchmark!r} ({v.paper} {v.table})")
        unknown = sorted(set(self.models.values()) - set(model_labels()))
        if unknown:
            raise ConfigError(f"{OTHER_PAPERS_PATH}: models map to unknown paper columns {unknown}")
        # read off the YAML: reviewer mode does not import the evaluation adapters (torch, transformers)
        baselines = {b["name"] for b in yaml.safe_load(BASELINES_PATH.read_text())["baselines"]}
        unknown = sorted(set(self.self_reported.values()) - baselines)
        if unknown:
            raise ConfigError(f"{OTHER_PAPERS_PATH}: self_reported names unknown baselines {unknown}")


@cache
def load_other_papers(path: str | Path = OTHER_PAPERS_PATH) -> OtherPapers:
    return load_yaml(OtherPapers, Path(path))


def medgpt_oss_paper_values() -> dict[tuple[str, str], float]:
    """(paper column, registry benchmark) -> the accuracy the MedGPT-OSS paper prints (Tables 4-6)."""
    values = {}
    for table in ("4", "5", "6"):
        for row in result_spec(table).rows:
            if row.metric != "accuracy":
                continue
            for model, value in zip(model_labels(), row.values):
                if value is not None:
                    values[(model, row.benchmark)] = value
    return values


def protocol_note(data: OtherPapers, paper: str, benchmark: str) -> str:
    notes = data.protocol.get(paper, {})
    return "; ".join(n for n in (notes.get(benchmark), notes.get("all")) if n)


FRESH_COLUMNS = ("medkit strict (fresh)", "medkit lenient (fresh)", "medkit MedEvalKit protocol (fresh)",
                 "medkit n (fresh)")


def percent(value: Any) -> float | None:
    """A rate as a percentage; None where the result file has no number."""
    return 100.0 * value if isinstance(value, (int, float)) else None


def percent_cell(value: Any) -> str:
    """A rate as a table cell: two decimals, as the papers print them, or '–'."""
    pct = percent(value)
    return "–" if pct is None else f"{pct:.2f}"


def fresh_scores(results: list[dict[str, Any]], adapters: set[str], benchmark: str) -> dict[str, str]:
    """The kit's own scores for one of ``adapters`` (result-folder names of one model) on that benchmark, from
    fresh result files of the native release (a synthetic counterpart's numbers are never put beside a
    paper's); else '–'."""
    record = next((r for r in results if r.get("model") in adapters and r.get("benchmark") == benchmark
                   and r.get("source") == "native"), None)
    if record is None:
        return dict.fromkeys(FRESH_COLUMNS, "–")
    metrics = record.get("metrics", {})
    return dict(zip(FRESH_COLUMNS, (percent_cell(metrics.get("accuracy")), percent_cell(metrics.get("lenient_accuracy")),
                                    percent_cell(metrics.get("medevalkit_accuracy")), f"{record.get('n', '–')}")))


def paper_adapters(column: str) -> set[str]:
    return set(next(m.adapters for m in load_published().models if m.label == column))


def printed_columns(v: PrintedValue, data: OtherPapers) -> dict[str, str]:
    return {"Other paper": f"{v.value:.1f}", "Source": f"{v.paper} ({data.papers[v.paper].citation}), {v.table}",
            "Split or subset as stated there": v.variant,
            "Protocol differences": protocol_note(data, v.paper, data.benchmarks[v.benchmark])}


def cross_paper(results: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Every (model, benchmark) both the MedGPT-OSS paper and another paper report, side by side; then the
    seed papers' own models (``self_reported``) with their printed numbers and, when run, the kit's scores."""
    data, ours, results = load_other_papers(), medgpt_oss_paper_values(), results or []
    records, index = [], []
    for v in data.values:
        column, benchmark = data.models.get(v.model), data.benchmarks[v.benchmark]
        if column is None or v.metric != "accuracy" or (column, benchmark) not in ours:
            continue
        here = ours[(column, benchmark)]
        printed = printed_columns(v, data)
        records.append({"MedGPT-OSS paper": f"{here:.2f}", "Other paper": printed.pop("Other paper"),
                        "Difference (other - this paper)": f"{v.value - here:+.2f}", **printed,
                        **fresh_scores(results, paper_adapters(column), benchmark)})
        index.append(f"{v.model} · {v.benchmark}")
    for v in data.values:
        adapter = data.self_reported.get(v.model)
        if adapter is None or v.metric != "accuracy":
            continue
        printed = printed_columns(v, data)
        records.append({"MedGPT-OSS paper": "not in this paper", "Other paper": printed.pop("Other paper"),
                        "Difference (other - this paper)": "–", **printed,
                        **fresh_scores(results, {adapter}, data.benchmarks[v.benchmark])})
        index.append(f"{v.model} · {v.benchmark} ({v.paper} {v.table})")
    frame = pd.DataFrame(records, index=index)
    frame.index.name = "Model · benchmark"
    frame.attrs.update(
        caption="Cross-paper check: a baseline's score in the MedGPT-OSS paper beside the same model's score "
                "in another paper (accuracy, %).",
        rank=False, missing="–",
        footnotes=["Rows: the (model, benchmark) pairs both papers report; then the seed papers' own models "
                   f"the kit can run as baselines ({', '.join(f'{m} as {a}' for m, a in data.self_reported.items())}) "
                   "with the numbers their papers print for them. The other papers' numbers ship in "
                   "medkit/configs/other_papers.yaml with their tables and stated splits.",
                   "medkit strict / lenient / MedEvalKit protocol (fresh): the kit's own scores for that model "
                   "on the native release, where its baseline adapter's results exist; the MedEvalKit-protocol "
                   "score applies the harness the other papers report with to the same outputs."])
    return frame
