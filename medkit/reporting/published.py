"""The paper's published numbers (Tables 3-6, Figure 2) loaded strictly from ``configs/published.yaml``.

Result tables come back as DataFrames in the paper's layout: index = the printed row labels, columns =
the models in the paper's order, values as printed (NaN where the paper prints no number). Each frame
carries its rendering facts in ``frame.attrs`` (caption, decimals, unit, footnotes, marks, the benchmark
and metric behind each row, and ``missing`` = the text shown for an unknown cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd

from medkit.config import ConfigError, load_yaml
from medkit.profiles import CONFIG_DIR

PUBLISHED_PATH = CONFIG_DIR / "published.yaml"
RESULT_TABLES = ("4", "5", "6", "figure2")
NOT_PRINTED = "not printed"


@dataclass(frozen=True)
class PaperModel:
    label: str  # the column header as printed
    adapters: list[str]  # result-folder names that stand for this column


@dataclass(frozen=True)
class Table3Row:
    task: str
    dataset: str
    images_mean: float | None  # None where the paper prints "-" (text-only)
    images_sd: float | None
    examples: int
    ood: bool
    benchmarks: list[str]  # registry names the printed row covers


@dataclass(frozen=True)
class Table3:
    caption: str
    footnotes: list[str]
    rows: list[Table3Row]


@dataclass(frozen=True)
class ResultRow:
    label: str
    benchmark: str
    metric: str  # key in the result file's metrics (accuracy, ratescore, radgraph_partial, ...)
    values: list[float | None]  # one per model, None = not printed


@dataclass(frozen=True)
class ResultTable:
    caption: str
    unit: Literal["percent", "score"]
    decimals: int
    footnotes: list[str]
    rows: list[ResultRow]
    column_marks: dict[str, str] = field(default_factory=dict)
    row_marks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    models: list[PaperModel]
    table3: Table3
    results: dict[str, ResultTable]

    def __post_init__(self) -> None:
        expected = {table_key(t) for t in RESULT_TABLES}
        if set(self.results) != expected:
            raise ConfigError(f"published results need exactly {sorted(expected)}, got {sorted(self.results)}")
        for name, table in self.results.items():
            for row in table.rows:
                if len(row.values) != len(self.models):
                    raise ConfigError(f"{name} row {row.label!r}: {len(row.values)} values for "
                                      f"{len(self.models)} models")


def table_key(table: str | int) -> str:
    """'4' / 4 -> 'table4'; 'figure2' stays."""
    table = str(table)
    if table == "figure2":
        return table
    if table not in RESULT_TABLES:
        raise ConfigError(f"no published result table {table!r}; known: {list(RESULT_TABLES)} (Table 3: published_table(3))")
    return f"table{table}"


@cache
def load_published(path: str | Path = PUBLISHED_PATH) -> Published:
    return load_yaml(Published, Path(path))


def model_labels(path: str | Path = PUBLISHED_PATH) -> list[str]:
    return [m.label for m in load_published(path).models]


def adapter_labels(path: str | Path = PUBLISHED_PATH) -> dict[str, str]:
    """Result-folder name -> the paper's column label (e.g. ``octomed-7b`` -> ``OctoMed``)."""
    return {a: m.label for m in load_published(path).models for a in m.adapters}


def result_spec(table: str | int, path: str | Path = PUBLISHED_PATH) -> ResultTable:
    return load_published(path).results[table_key(table)]


def _result_frame(spec: ResultTable, models: list[str]) -> pd.DataFrame:
    values = [[float("nan") if v is None else v for v in row.values] for row in spec.rows]
    frame = pd.DataFrame(values, index=[r.label for r in spec.rows], columns=models, dtype=float)
    frame.index.name = "Dataset" if spec.unit == "percent" else "Metric"
    frame.attrs.update(
        caption=spec.caption, unit=spec.unit, decimals=spec.decimals, footnotes=list(spec.footnotes),
        column_marks=dict(spec.column_marks), row_marks=dict(spec.row_marks), missing=NOT_PRINTED,
        benchmarks=[r.benchmark for r in spec.rows], metrics=[r.metric for r in spec.rows],
        # a ranking among the printed cells only would mislead where bars are unknown (Figure 2)
        rank=not frame.isna().to_numpy().any(),
    )
    return frame


def _images_text(row: Table3Row) -> str:
    if row.images_mean is None:
        return "-"
    return f"{row.images_mean:.2f} ± {row.images_sd:.2f}"


def table3_frame(path: str | Path = PUBLISHED_PATH) -> pd.DataFrame:
    """Table 3 as printed: task on a group's first row only, counts with thousands separators."""
    spec = load_published(path).table3
    rows, previous = [], None
    for r in spec.rows:
        rows.append({"Task": r.task if r.task != previous else "", "Dataset": r.dataset,
                     "No. Images": _images_text(r), "No. Examples": f"{r.examples:,}",
                     "OOD": "✓" if r.ood else "-"})
        previous = r.task
    frame = pd.DataFrame(rows).set_index("Task")
    # the paper's marks: OOD carries a dagger, the in-context group an asterisk (both explained in footnotes)
    frame.attrs.update(caption=spec.caption, footnotes=list(spec.footnotes), decimals=2, rank=False,
                       column_marks={"OOD": "†"}, row_marks={"In-context learning": " *"})
    return frame


def table3_counts(path: str | Path = PUBLISHED_PATH) -> dict[str, int]:
    """Registry benchmark name -> the item count Table 3 prints for it."""
    return {b: r.examples for r in load_published(path).table3.rows for b in r.benchmarks}


def published_table(n: int | str, path: str | Path = PUBLISHED_PATH) -> pd.DataFrame:
    """Table 3, 4, 5 or 6 of the paper as a DataFrame (see the module docstring for the layout)."""
    if str(n) == "3":
        return table3_frame(path)
    if str(n) == "figure2":
        return published_figure2(path)
    return _result_frame(result_spec(n, path), model_labels(path))


def published_figure2(path: str | Path = PUBLISHED_PATH) -> pd.DataFrame:
    """Figure 2's printed values: rows RadGraph-F1 / RaTEScore / 1/RadCliQ-v1, NaN = not printed."""
    return _result_frame(result_spec("figure2", path), model_labels(path))
