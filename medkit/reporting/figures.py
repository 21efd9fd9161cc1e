"""Figures 1 and 2 as PNG and PDF, byte-identical for the same inputs.

Determinism: the Agg backend, fixed size and dpi, no timestamps (PDF ``CreationDate: None``, PNG without
the ``Software`` chunk), fixed ``svg.hashsalt`` and a fixed font, so re-rendering gives the same bytes.
The provenance stamp goes into the file metadata (PNG ``Description``, PDF ``Subject``) and a caption line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from medkit.reporting.provenance import Stamp  # noqa: E402
from medkit.reporting.published import NOT_PRINTED, published_figure2  # noqa: E402
from medkit.reporting.tables import ablation_table, is_number, load_ablation  # noqa: E402

SIZE = (9.0, 4.2)
DPI = 150
# sizes in points, read at 100% zoom: labels and legend no smaller than 8 pt, bar annotations 7 pt
STYLE = {"svg.hashsalt": "medkit", "font.family": "DejaVu Sans", "font.size": 9,
         "path.simplify": False, "pdf.compression": 6}
ANNOTATION_PT = 7
CAPTION_PT = 7.5
NOT_PRINTED_MARKER = "x"  # a marker on the axis, never a bar: nothing the eye can read as a height


def _save(fig, out_dir: str | Path, name: str, stamp: Stamp | None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    description = stamp.line() if stamp else "medkit (no provenance stamp)"
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, metadata={"Software": None, "Description": description})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Subject": description,
                               "Creator": "medkit"})
    plt.close(fig)
    return {"png": png, "pdf": pdf}


def _caption(fig, text: str, stamp: Stamp | None) -> None:
    lines = [text] + ([stamp.line()] if stamp else [])
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=CAPTION_PT, va="bottom", ha="left", wrap=True)


# ---------------------------------------------------------------- Figure 1: encoder ablation

def _errorbars(ax, values, lows, highs, labels, ylabel: str, color: str) -> None:
    x = range(len(values))
    below = [v - lo for v, lo in zip(values, lows)]
    above = [hi - v for v, hi in zip(values, highs)]
    ax.bar(x, values, color=color, width=0.6)
    ax.errorbar(x, values, yerr=[below, above], fmt="none", ecolor="black", capsize=4, linewidth=1)
    ax.set_xticks(list(x), labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)


def figure1(results: str | Path | dict, out_dir: str | Path, stamp: Stamp | None = None,
            name: str = "figure1") -> dict[str, Path]:
    """Encoder ablation from ``results.json``: accuracy (%) and held-out loss per encoder, 95% CI bars."""
    data = load_ablation(results)
    table = ablation_table(data)
    encoders = list(table.index)
    with plt.rc_context(STYLE):
        fig, (acc, loss) = plt.subplots(1, 2, figsize=SIZE)
        _errorbars(acc, table["Accuracy (%)"], table["Acc. CI low"], table["Acc. CI high"], encoders,
                   "Strict MC accuracy (%)", "#4c72b0")
        acc.set_title("Accuracy (higher is better)")
        _errorbars(loss, table["Held-out loss"], table["Loss CI low"], table["Loss CI high"], encoders,
                   "Held-out loss", "#dd8452")
        loss.set_title("Held-out loss (lower is better)")
        fig.suptitle(f"Figure 1 (reproduction): vision-encoder ablation, profile '{data['profile']}'")
        _caption(fig, f"Profile {data['profile']}, seed {data['seed']}; {items_line(table)}; bars = 95% bootstrap "
                      f"CI. {separation_line(table)} The paper prints no numbers for Figure 1.", stamp)
        fig.tight_layout(rect=(0, 0.14, 1, 0.95))
        return _save(fig, out_dir, name, stamp)


def items_line(table: pd.DataFrame) -> str:
    """How many items each encoder's numbers rest on (the same for all in one run, else listed)."""
    mc, loss = sorted(set(table["n (MC)"])), sorted(set(table["n (loss)"]))
    if len(mc) == 1 and len(loss) == 1:
        return f"each encoder: {mc[0]} held-out MC items, {loss[0]} held-out loss samples"
    return "held-out items per encoder: " + ", ".join(f"{e} {int(n)}" for e, n in table["n (MC)"].items())


def separation_line(table: pd.DataFrame) -> str:
    """Which encoder pairs differ beyond their 95% CIs (disjoint intervals), for accuracy and loss."""
    def disjoint(low: str, high: str) -> list[str]:
        names = list(table.index)
        return [f"{a} vs {b}" for i, a in enumerate(names) for b in names[i + 1:]
                if table.at[a, low] > table.at[b, high] or table.at[b, low] > table.at[a, high]]

    parts = []
    for metric, low, high in (("accuracy", "Acc. CI low", "Acc. CI high"), ("loss", "Loss CI low", "Loss CI high")):
        pairs = disjoint(low, high)
        parts.append(f"{metric}: {'CIs disjoint for ' + ', '.join(pairs) if pairs else 'every pair of CIs overlaps'}")
    return "Differences beyond the CIs: " + "; ".join(parts) + "."


# ---------------------------------------------------------------- Figure 2: report generation

def _series(published: pd.DataFrame, fresh: pd.DataFrame | None, fresh_label: str) -> list[tuple[str, list[Any], bool]]:
    """(label, values per metric, is_fresh) per bar series: published models, then the fresh run."""
    series = [(str(m), [published.at[r, m] for r in published.index], False) for m in published.columns]
    if fresh is not None:
        for model in fresh.columns:
            values = [fresh.at[r, model] if r in fresh.index else None for r in published.index]
            series.append((f"{model} ({fresh_label})", values, True))
    return series


def _unknown_bar(ax, x: float, width: float, top: float, color: Any) -> None:
    # a marker on the baseline and a label, no bar: a drawn height would read as a score
    ax.plot([x], [0], marker=NOT_PRINTED_MARKER, color=color, markersize=6, clip_on=False, linestyle="none")
    ax.text(x, top * 0.03, NOT_PRINTED, rotation=90, fontsize=ANNOTATION_PT, ha="center", va="bottom",
            color="0.35")


def figure2(out_dir: str | Path, fresh: pd.DataFrame | None = None, stamp: Stamp | None = None,
            published: pd.DataFrame | None = None, fresh_label: str = "fresh run",
            name: str = "figure2") -> dict[str, Path]:
    """Grouped bars per metric (RadGraph-F1, RaTEScore, 1/RadCliQ-v1) and model. Published values where
    the paper prints them, a hatched "not printed" slot otherwise; a fresh results frame
    (``results_frame(eval_out, 'figure2')``) is drawn beside them. Text cells ("not computed") are shown
    as text, never as a bar."""
    published = published_figure2() if published is None else published
    series = _series(published, fresh, fresh_label)
    metrics = list(published.index)
    width = 0.8 / len(series)
    numbers = [v for _, values, _ in series for v in values if is_number(v)]
    top = max([1.0] + numbers) * 1.05
    cmap = plt.get_cmap("tab10")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=SIZE)
        for i, (label, values, is_fresh) in enumerate(series):
            for j, value in enumerate(values):
                x = j - 0.4 + width * (i + 0.5)
                if is_number(value):
                    ax.bar(x, value, width=width, color=cmap(i % 10), edgecolor="black" if is_fresh else None,
                           label=None if _labelled(ax, label) else label)
                    ax.text(x, value, f"{value:.3f}", rotation=90, fontsize=ANNOTATION_PT, ha="center",
                            va="bottom")
                elif is_fresh:
                    # the reason ("needs ...") is in figure2_values; the bar slot only says what happened
                    text = value.split(":")[0] if isinstance(value, str) else "not run"
                    ax.text(x, top * 0.03, text, rotation=90, fontsize=ANNOTATION_PT, ha="center", va="bottom")
                else:
                    _unknown_bar(ax, x, width, top, cmap(i % 10))
            if not _labelled(ax, label):  # a series with no bar at all: the legend shows its marker and why
                why = "no value computed" if is_fresh else NOT_PRINTED
                ax.plot([], [], marker=NOT_PRINTED_MARKER, color=cmap(i % 10), linestyle="none",
                        label=f"{label} ({why})")
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_ylim(0, top)
        ax.set_ylabel("score (higher is better)")
        ax.set_title("Figure 2 (reproduction): MIMIC-CXR report generation")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        _caption(fig, f"Published bars only where the paper prints the number; '{NOT_PRINTED_MARKER}' on the axis = "
                      "not printed in the paper (no value, not a zero).", stamp)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        return _save(fig, out_dir, name, stamp)


def _labelled(ax, label: str) -> bool:
    return label in ax.get_legend_handles_labels()[1]


# ---------------------------------------------------------------- training loss curves (notebooks 03-05)

def loss_figure(losses: list[float], stage: str, out_dir: str | Path, stamp: Stamp | None = None) -> dict[str, Path]:
    """A stage's per-step training loss as ``loss_<stage>.png/.pdf``."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.0, 3.2))
        ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=2)
        ax.set(xlabel="optimizer step", ylabel="training loss", title=f"{stage}: training loss per step")
        _caption(fig, f"{len(losses)} logged steps.", stamp)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        return _save(fig, out_dir, f"loss_{stage}", stamp)
