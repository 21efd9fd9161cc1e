"""Tables in the paper's layout (Markdown, LaTeX, CSV), result-file readers and the fresh-vs-published view.

Frames: index = printed row labels, columns = models (paper order first), cells = a number, NaN (shown as
``frame.attrs["missing"]``) or text (shown verbatim, never as a number). Rendering facts travel in
``frame.attrs``: caption, decimals, footnotes, column_marks, row_marks, rank.

"Not computed" cells (a text cell starting with "not computed", e.g. "not computed: needs the RadGraph model
weights (...)"): in Markdown and LaTeX the cell reads ``n/c [k]`` and the full status text is printed once,
as footnote ``[k] <status>`` under the table (after the frame's own footnotes). Footnotes are numbered 1, 2, ...
in the order their reason first appears, row by row and left to right; cells with the identical status share
one number. Plain ASCII in every format: no superscripts for LaTeX to choke on, and ``[k]`` is neither a
Markdown link (there is no ``[k]:`` definition) nor a list marker. The CSV is for machine readers and has no
place for footnotes, so its cells keep the full status text (each cell says why on its own; a reader never
resolves a reference). Output stays byte-deterministic: the numbering depends only on the frame.

Markdown paragraphs outside the table (caption, footnotes) are written as literal text: a line starting with a
list marker ("* ", "- ", "+ ", "1. ", "1) "), a heading "#" or a quote ">" gets that marker backslash-escaped,
so the paper's "* opt = answer options." stays a footnote, not a bullet.

Marking convention (common in this literature, the plain-text paper does not preserve formatting): per row,
the best value is **bold** and the second best is underlined; ties on the printed (rounded) value share
the mark, text and unknown cells are never ranked, higher is better everywhere (all of Tables 4-6 and
Figure 2's metrics, 1/RadCliQ-v1 included).

Result files read (reviewer mode: no model needed):

* evaluation: ``<eval_out>/results/<model>/<benchmark>.json`` written by :mod:`medkit.eval.runner`;
* encoder ablation: ``<run>/results.json`` written by :mod:`medkit.training.ablation`.
"""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from medkit.reporting.inputs import check_ablation, load_result_files, read_ablation
from medkit.reporting.provenance import Stamp
from medkit.reporting.published import adapter_labels, model_labels, result_spec

FIRST, SECOND = "first", "second"
NOT_RUN = "–"
NOT_COMPUTED = "not computed"
NOT_COMPUTED_MARK = "n/c"  # the cell of a not-computed metric; its reason goes to a numbered footnote


# ---------------------------------------------------------------- cells and ranking

def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def format_cell(value: Any, decimals: int, missing: str = NOT_RUN, thousands: bool = False) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, numbers.Integral):
        return f"{value:,}" if thousands else str(value)
    return f"{value:.{decimals}f}"


def row_marks(values: Iterable[Any], decimals: int) -> list[str | None]:
    """FIRST / SECOND / None per cell of one row, ranked on the printed (rounded) values."""
    values = list(values)
    printed = [round(v, decimals) if is_number(v) else None for v in values]
    distinct = sorted({p for p in printed if p is not None}, reverse=True)
    place = {v: mark for v, mark in zip(distinct, (FIRST, SECOND))}
    return [place.get(p) if p is not None else None for p in printed]


def frame_marks(frame: pd.DataFrame) -> list[list[str | None]]:
    """Marks per cell; only the columns in ``attrs["rank_columns"]`` (default: all) compete."""
    if not frame.attrs.get("rank", True):
        return [[None] * frame.shape[1] for _ in range(frame.shape[0])]
    decimals = frame.attrs.get("decimals", 2)
    ranked = set(frame.attrs.get("rank_columns", frame.columns))
    competing = [c in ranked for c in frame.columns]
    marks = []
    for row in frame.itertuples(index=False):
        place = iter(row_marks([v for v, c in zip(row, competing) if c], decimals))
        marks.append([next(place) if c else None for c in competing])
    return marks


# ---------------------------------------------------------------- renderers

def _labels(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    column_marks = frame.attrs.get("column_marks", {})
    row_marks_ = frame.attrs.get("row_marks", {})
    columns = [f"{c} {column_marks[c]}" if c in column_marks else str(c) for c in frame.columns]
    rows = [f"{r}{row_marks_[r]}" if r in row_marks_ else str(r) for r in frame.index]
    return rows, columns


def is_not_computed(value: Any) -> bool:
    """A status text of a metric that could not be computed ("not computed", "not computed: needs ...")."""
    return isinstance(value, str) and value.strip().lower().startswith(NOT_COMPUTED)


def not_computed_notes(frame: pd.DataFrame) -> dict[str, int]:
    """Status text -> footnote number (1, 2, ...) for every not-computed cell, numbered in the order the text
    first appears row by row, left to right; identical texts share a number."""
    numbers_: dict[str, int] = {}
    for row in frame.itertuples(index=False):
        for value in row:
            if is_not_computed(value):
                numbers_.setdefault(value.strip(), len(numbers_) + 1)
    return numbers_


def note_ref(number: int) -> str:
    return f"[{number}]"


def _footnotes(frame: pd.DataFrame) -> list[str]:
    """The frame's own footnotes, then one ``[k] <status>`` line per distinct not-computed reason."""
    return list(frame.attrs.get("footnotes", [])) + [f"{note_ref(k)} {text}"
                                                      for text, k in not_computed_notes(frame).items()]


def _cells(frame: pd.DataFrame, wrap: dict[str | None, str]) -> list[list[str]]:
    decimals = frame.attrs.get("decimals", 2)
    missing = frame.attrs.get("missing", NOT_RUN)
    thousands = frame.attrs.get("thousands", False)  # printed like the paper; the CSV keeps plain integers
    notes = not_computed_notes(frame)

    def cell(value: Any, mark: str | None) -> str:
        if is_number(value):  # only numbers are ranked: text cells never carry a mark
            return wrap[mark].format(format_cell(value, decimals, missing, thousands))
        if is_not_computed(value):
            return f"{NOT_COMPUTED_MARK} {note_ref(notes[value.strip()])}"
        return format_cell(value, decimals, missing, thousands)

    return [[cell(v, mark) for v, mark in zip(row, marks)]
            for row, marks in zip(frame.itertuples(index=False), frame_marks(frame))]


def to_markdown(frame: pd.DataFrame, stamp: Stamp | None = None) -> str:
    rows, columns = _labels(frame)
    cells = _cells(frame, {FIRST: "**{}**", SECOND: "<u>{}</u>", None: "{}"})
    header = [frame.index.name or ""] + columns
    lines = []
    if frame.attrs.get("caption"):
        lines += [markdown_note(frame.attrs["caption"]), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * len(columns)) + "|")
    lines += ["| " + " | ".join([label] + row) + " |" for label, row in zip(rows, cells)]
    for note in _footnotes(frame):  # each its own paragraph: one line would run them together
        lines += ["", markdown_note(note)]
    if stamp is not None:
        lines += ["", f"<!-- {stamp.line()} -->"]
    return "\n".join(lines) + "\n"


# a line that would open a block instead of a paragraph: up to 3 spaces, then a bullet ("*", "-", "+"), an
# ordered-list number ("1." / "1)"), a heading ("#" to "######") or a quote (">"); list and heading markers
# count only when a space, a tab or the line end follows (CommonMark)
_MARKDOWN_BLOCK_MARKER = re.compile(r"^( {0,3})(?:([*+-]|#{1,6})(?=[ \t]|$)|(\d{1,9})([.)])(?=[ \t]|$)|(>))")


def _escape_block_marker(match: re.Match) -> str:
    indent, symbol, digits, delimiter, quote = match.groups()
    if digits is not None:
        return f"{indent}{digits}\\{delimiter}"
    return f"{indent}\\{symbol if symbol is not None else quote}"


def markdown_note(text: str) -> str:
    """A footnote (or caption) as literal text: the paper's "* opt = answer options." would render as a bullet,
    "1. ..." as a numbered list; the marker of every such line is backslash-escaped."""
    return "\n".join(_MARKDOWN_BLOCK_MARKER.sub(_escape_block_marker, line) for line in text.split("\n"))


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "<": r"\textless{}", ">": r"\textgreater{}",  # OT1 would print them as ¡ and ¿
                   "±": r"$\pm$", "†": r"$^\dagger$", "✓": r"\checkmark", "–": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(frame: pd.DataFrame, stamp: Stamp | None = None) -> str:
    rows, columns = _labels(frame)
    cells = _cells(frame, {FIRST: r"\textbf{{{}}}", SECOND: r"\underline{{{}}}", None: "{}"})
    header = [latex_escape(frame.index.name or "")] + [latex_escape(c) for c in columns]
    lines = [r"\begin{table}[t]", r"\centering"]
    if frame.attrs.get("caption"):
        lines.append(r"\caption{" + latex_escape(frame.attrs["caption"]) + "}")
    lines += [r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule", " & ".join(header) + r" \\",
              r"\midrule"]
    for label, row in zip(rows, cells):
        body = [c if c.startswith(("\\textbf", "\\underline")) else latex_escape(c) for c in row]
        lines.append(" & ".join([latex_escape(label)] + body) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in _footnotes(frame):
        lines.append(r"\par\footnotesize " + latex_escape(note))
    lines.append(r"\end{table}")
    if stamp is not None:
        lines.append(f"% {stamp.line()}")
    return "\n".join(lines) + "\n"


def to_csv(frame: pd.DataFrame) -> str:
    """Plain values as printed (no marks); a not-computed cell keeps its full status text (a CSV has no
    footnotes, and a machine reader wants the reason in the cell); provenance goes to the sidecar JSON."""
    decimals = frame.attrs.get("decimals", 2)
    missing = frame.attrs.get("missing", NOT_RUN)
    text = frame.map(lambda v: format_cell(v, decimals, missing))
    return text.to_csv(lineterminator="\n")


def render_table(frame: pd.DataFrame, name: str, out_dir: str | Path, stamp: Stamp | None = None) -> dict[str, Path]:
    """Write ``<name>.md``, ``<name>.tex``, ``<name>.csv`` (+ ``<name>.provenance.json`` with a stamp)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {"markdown": (".md", to_markdown(frame, stamp)), "latex": (".tex", to_latex(frame, stamp)),
             "csv": (".csv", to_csv(frame))}
    if stamp is not None:
        texts["provenance"] = (".provenance.json", stamp.to_json())
    written = {}
    for fmt, (suffix, text) in texts.items():
        path = out_dir / f"{name}{suffix}"
        path.write_text(text, encoding="utf-8")
        written[fmt] = path
    return written


# ---------------------------------------------------------------- paper tables 1 and 2

def table1() -> pd.DataFrame:
    from medkit.data.registry import table1_frame

    frame = table1_frame().set_index("Modality")
    frame.attrs.update(caption="Training datasets of MedGPT-OSS (paper Table 1).", rank=False, thousands=True,
                       footnotes=["PT: pretraining; MT: mid-training; IT: instruction tuning; "
                                  "(R): the dataset carries reasoning traces."])
    return frame


def table2() -> pd.DataFrame:
    from medkit.training.stages import load_curriculum, table2_rows

    frame = pd.DataFrame(table2_rows(load_curriculum()), columns=["Hyperparameter", "Value"]).set_index("Hyperparameter")
    frame.attrs.update(caption="Default hyperparameters, rendered from the stage configs (paper Table 2).",
                       rank=False, footnotes=["The paper gives the warmup ratio as a range (0.01-0.03) with no "
                                              "value per stage; the stage configs use 0.03."])
    return frame


# ---------------------------------------------------------------- evaluation result files

def load_results(eval_out: str | Path) -> list[dict[str, Any]]:
    """Every ``results/<model>/<benchmark>.json`` under ``eval_out`` (per-item ``*.items.json`` skipped),
    each checked for what the tables read (:class:`~medkit.reporting.inputs.ResultFileError` names a bad
    file; two files for one model and benchmark are refused)."""
    return [record for _, record in load_result_files(eval_out)]


def _scale(value: float | None, unit: str) -> float | None:
    if value is None:
        return None
    return value * 100.0 if unit == "percent" else value


def metric_cell(metrics: dict[str, Any], metric: str, unit: str) -> tuple[float | str | None, tuple | None]:
    """(display value or status text, (ci_low, ci_high) in display units or None) of one metric."""
    entry = metrics if metric == "accuracy" else metrics.get(metric)
    if entry is None:
        return f"{NOT_COMPUTED}: no {metric} in the result file", None
    key = "accuracy" if metric == "accuracy" else "value"
    status = entry.get("status", "ok")
    if status != "ok" or entry.get(key) is None:
        return (status if status != "ok" else NOT_COMPUTED), None
    low, high = entry.get("ci_low"), entry.get("ci_high")
    ci = (_scale(low, unit), _scale(high, unit)) if low is not None and high is not None else None
    return _scale(entry[key], unit), ci


def column_names(models: Iterable[str]) -> dict[str, str]:
    """Model name -> its column header: the paper's label where the name is a known adapter (``medkit`` ->
    ``MedGPT-OSS``), else the name. Where several models would share a header (``medkit`` and
    ``medgpt-oss-20b`` both stand for MedGPT-OSS), each gets ``<label> [<model>]``: two models' results
    side by side, never one silently replacing the other's cells."""
    labels = adapter_labels()
    wanted = {m: labels.get(m, m) for m in sorted(set(models))}
    sharing = {label for label, count in Counter(wanted.values()).items() if count > 1}
    return {m: f"{label} [{m}]" if label in sharing else label for m, label in wanted.items()}


def _column_order(columns: dict[str, str]) -> list[str]:
    """Headers in the paper's column order first (a shared label's columns together), then the rest sorted."""
    label_of = paper_columns(columns)
    place = {label: i for i, label in enumerate(model_labels())}
    return sorted(columns.values(), key=lambda c: (place.get(label_of.get(c), len(place)), c))


def paper_columns(columns: dict[str, str]) -> dict[str, str]:
    """Fresh header -> the paper column it is compared with (only headers that stand for a paper column)."""
    labels, paper = adapter_labels(), set(model_labels())
    found = {header: labels.get(model, model) for model, header in columns.items()}
    return {header: label for header, label in found.items() if label in paper}


def _result_cells(records: list[dict[str, Any]], table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = result_spec(table)
    columns = column_names(r["model"] for r in records)  # over all tables: one model, one header everywhere
    by_key = {(columns[r["model"]], r["benchmark"]): r for r in records}  # unique: load_results refuses repeats
    benchmarks = {row.benchmark for row in spec.rows}
    shown = {m: c for m, c in columns.items() if any((c, b) in by_key for b in benchmarks)}
    headers = _column_order(shown)
    values = pd.DataFrame(index=[r.label for r in spec.rows], columns=headers, dtype=object)
    cis = values.copy()
    for row in spec.rows:
        for header in headers:
            result = by_key.get((header, row.benchmark))
            value, ci = metric_cell(result["metrics"], row.metric, spec.unit) if result else (float("nan"), None)
            values.at[row.label, header] = value
            cis.at[row.label, header] = ci
    for frame in (values, cis):
        frame.index.name = "Dataset" if spec.unit == "percent" else "Metric"
        frame.attrs.update(caption=f"Fresh run, {spec.caption}", unit=spec.unit, decimals=spec.decimals,
                           missing=NOT_RUN, benchmarks=[r.benchmark for r in spec.rows],
                           metrics=[r.metric for r in spec.rows], paper_columns=paper_columns(shown))
    return values, cis


# this run's lexical overlap on Figure 2's reports (the paper's figure prints only model-based metrics)
LEXICAL_METRICS = {"bleu2": "BLEU-2", "bleu4": "BLEU-4", "rougeL": "ROUGE-L"}
FIGURE2_BENCHMARK = "mimic_cxr_report"


def lexical_frame(eval_out: str | Path | list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (model header, lexical metric) computed on Figure 2's reports: value, ci_low, ci_high.
    Empty when no model has Figure 2's results; a metric the result file holds no value for is left out."""
    records = [r for r in _records(eval_out) if r["benchmark"] == FIGURE2_BENCHMARK]
    columns = column_names(r["model"] for r in records)
    rows = []
    for record in sorted(records, key=lambda r: columns[r["model"]]):
        for metric, label in LEXICAL_METRICS.items():
            entry = record["metrics"].get(metric) or {}
            if entry.get("status", "ok") == "ok" and is_number(entry.get("value")):
                rows.append({"model": columns[record["model"]], "metric": label, "value": entry["value"],
                             "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high")})
    return pd.DataFrame(rows, columns=["model", "metric", "value", "ci_low", "ci_high"])


def _records(results: str | Path | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return results if isinstance(results, list) else load_results(results)


def results_frame(eval_out: str | Path | list[dict[str, Any]], table: str) -> pd.DataFrame:
    """Fresh results for table '4' / '5' / '6' / 'figure2' in the published layout (rows as printed,
    columns = models found, paper labels where the folder name is a known adapter, see
    :func:`column_names`). Missing = NaN. ``eval_out``: the eval output folder, or its loaded results.
    ``frame.attrs["paper_columns"]``: header -> the paper column it stands for."""
    return _result_cells(_records(eval_out), str(table))[0]


def results_ci_frame(eval_out: str | Path | list[dict[str, Any]], table: str) -> pd.DataFrame:
    """Same shape as :func:`results_frame`: each cell (ci_low, ci_high) in display units, or None."""
    return _result_cells(_records(eval_out), str(table))[1]


# ---------------------------------------------------------------- fresh vs published

def _delta(fresh: Any, published: Any) -> float:
    return fresh - published if is_number(fresh) and is_number(published) else float("nan")


def compare(fresh: pd.DataFrame, published: pd.DataFrame, ci: pd.DataFrame | None = None,
            models: list[str] | None = None) -> pd.DataFrame:
    """Long frame, one row per (row label, model): fresh, published, delta (fresh - published), ci_low,
    ci_high. ``models`` defaults to the fresh frame's columns; text cells stay text, their delta is NaN."""
    models = list(fresh.columns) if models is None else models
    rows = [r for r in published.index] + [r for r in fresh.index if r not in published.index]
    records = []
    for row in rows:
        for model in models:
            f = fresh.at[row, model] if row in fresh.index and model in fresh.columns else float("nan")
            p = published.at[row, model] if row in published.index and model in published.columns else float("nan")
            interval = ci.at[row, model] if ci is not None and row in ci.index and model in ci.columns else None
            low, high = interval if isinstance(interval, tuple) else (float("nan"), float("nan"))
            records.append({"row": row, "model": model, "fresh": f, "published": p, "delta": _delta(f, p),
                            "ci_low": low, "ci_high": high})
    frame = pd.DataFrame(records, columns=["row", "model", "fresh", "published", "delta", "ci_low", "ci_high"])
    return frame.set_index(["row", "model"])


def compare_with_published(fresh: pd.DataFrame, published: pd.DataFrame, ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`compare` of every fresh column that stands for a paper column against that column, also where
    the fresh header is disambiguated (``MedGPT-OSS [medkit]`` against the paper's ``MedGPT-OSS``)."""
    paper = fresh.attrs.get("paper_columns", {c: c for c in fresh.columns})
    pairs = {c: paper[c] for c in fresh.columns if paper.get(c) in published.columns}
    beside = pd.DataFrame({c: published[p] for c, p in pairs.items()}, index=published.index)
    return compare(fresh, beside, ci, models=list(pairs))


# ---------------------------------------------------------------- encoder ablation (Figure 1)

def load_ablation(results: str | Path | dict) -> dict[str, Any]:
    """The ablation's results, checked for what Figure 1 reads (a bad file raises ResultFileError naming it)."""
    if isinstance(results, dict):
        return check_ablation(results, "the ablation results")
    return read_ablation(results)


def ablation_table(results: str | Path | dict) -> pd.DataFrame:
    """One row per encoder: accuracy (%) and held-out loss, each with its 95% CI."""
    data = load_ablation(results)
    rows = []
    for row in data["encoders"]:
        acc, loss = row["mc_accuracy"], row["heldout_loss"]
        rows.append({"Encoder": row["encoder"], "Accuracy (%)": 100 * acc["accuracy"],
                     "Acc. CI low": 100 * acc["ci_low"], "Acc. CI high": 100 * acc["ci_high"],
                     "n (MC)": acc["n"], "Held-out loss": loss["mean"], "Loss CI low": loss["ci_low"],
                     "Loss CI high": loss["ci_high"], "n (loss)": loss["n"]})
    frame = pd.DataFrame(rows).set_index("Encoder")
    frame.attrs.update(caption=f"Encoder ablation, profile {data['profile']}, seed {data['seed']}.",
                       decimals=3, rank=False)
    return frame
