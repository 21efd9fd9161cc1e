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

SIZE = (8.0, 3.6)
DPI = 150
STYLE = {"svg.hashsalt": "medkit", "font.family": "DejaVu Sans", "font.size": 8,
         "path.simplify": False, "pdf.compression": 6}


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
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=6, va="bottom", ha="left", wrap=True)


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
        _caption(fig, f"Profile {data['profile']}, seed {data['seed']}; bars = 95% bootstrap CI. "
                      "The paper prints no numbers for Figure 1.", stamp)
        fig.tight_layout(rect=(0, 0.1, 1, 0.95))
        return _save(fig, out_dir, name, stamp)


# ---------------------------------------------------------------- Figure 2: report generation

def _series(published: pd.DataFrame, fresh: pd.DataFrame | None, fresh_label: str) -> list[tuple[str, list[Any], bool]]:
    """(label, values per metric, is_fresh) per bar series: published models, then the fresh run."""
    series = [(str(m), [published.at[r, m] for r in published.index], False) for m in published.columns]
    if fresh is not None:
        for model in fresh.columns:
            values = [fresh.at[r, model] if r in fresh.index else None for r in published.index]
            series.append((f"{model} ({fresh_label})", values, True))
    return series


def _unknown_bar(ax, x: float, width: float, top: float) -> None:
    # full-height hatched outline: visibly "no value", never mistaken for a measured bar height
    ax.bar(x, top, width=width, fill=False, hatch="///", edgecolor="0.6", linewidth=0.5)
    ax.text(x, top * 0.02, NOT_PRINTED, rotation=90, fontsize=5, ha="center", va="bottom", color="0.35")


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
                    ax.text(x, value, f"{value:.3f}", rotation=90, fontsize=5, ha="center", va="bottom")
                elif is_fresh:
                    # the reason ("needs ...") is in figure2_values; the bar slot only says what happened
                    text = value.split(":")[0] if isinstance(value, str) else "not run"
                    ax.text(x, top * 0.02, text, rotation=90, fontsize=5, ha="center", va="bottom")
                else:
                    _unknown_bar(ax, x, width, top)
            if not _labelled(ax, label):  # a series with no bar at all: legend says why
                why = "no value computed" if is_fresh else NOT_PRINTED
                ax.bar(0, 0, width=0, fill=False, hatch="" if is_fresh else "///", edgecolor="0.6",
                       label=f"{label} ({why})")
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_ylim(0, top)
        ax.set_ylabel("score (higher is better)")
        ax.set_title("Figure 2 (reproduction): MIMIC-CXR report generation")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        _caption(fig, "Published bars only where the paper prints the number; hatched = not printed in the paper.",
                 stamp)
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
