"""Figures 1 and 2 as PNG and PDF, byte-identical for the same inputs.

Drawn with seaborn (its ``whitegrid`` style and ``barplot``) on matplotlib. Determinism: the Agg backend,
fixed size and dpi, no timestamps (PDF ``CreationDate: None``, PNG without the ``Software`` chunk), fixed
``svg.hashsalt`` and a fixed font, so re-rendering gives the same bytes; the style is applied as a context
for each figure, never as a global theme, so a notebook's own plots are left alone. The provenance stamp
goes into the file metadata (PNG ``Description``, PDF ``Subject``) and a caption line.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

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
BAR_GROUP_WIDTH = 0.8  # seaborn's default: the share of each category slot the dodged bars fill


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """seaborn's whitegrid style with the kit's pinned font and sizes, for one figure only."""
    with sns.axes_style("whitegrid"), plt.rc_context(STYLE):
        yield


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

def _errorbars(ax, table: pd.DataFrame, value: str, low: str, high: str, ylabel: str, color: Any) -> None:
    """One bar per encoder with its 95% CI (the CIs are the run's bootstrap, not seaborn's)."""
    data = table.reset_index(names="encoder")
    sns.barplot(data=data, x="encoder", y=value, color=color, width=0.6, errorbar=None, ax=ax)
    ax.errorbar(range(len(data)), data[value], yerr=[data[value] - data[low], data[high] - data[value]],
                fmt="none", ecolor="black", capsize=4, linewidth=1)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=20)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")


def figure1(results: str | Path | dict, out_dir: str | Path, stamp: Stamp | None = None,
            name: str = "figure1") -> dict[str, Path]:
    """Encoder ablation from ``results.json``: accuracy (%) and held-out loss per encoder, 95% CI bars."""
    data = load_ablation(results)
    table = ablation_table(data)
    colours = sns.color_palette("deep")
    with figure_style():
        fig, (acc, loss) = plt.subplots(1, 2, figsize=SIZE)
        _errorbars(acc, table, "Accuracy (%)", "Acc. CI low", "Acc. CI high", "Strict MC accuracy (%)", colours[0])
        chance = common_chance_rate(data)
        if chance is not None:
            acc.axhline(100 * chance, color="0.35", linestyle="--", linewidth=1.2, zorder=3)
            acc.annotate(f"chance {100 * chance:.0f}%", (1.0, 100 * chance), xycoords=("axes fraction", "data"),
                         xytext=(-4, 4), textcoords="offset points", ha="right", va="bottom", color="0.2",
                         bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.85))
        acc.set_title("Accuracy (higher is better)")
        _errorbars(loss, table, "Held-out loss", "Loss CI low", "Loss CI high", "Held-out loss", colours[1])
        loss.set_title("Held-out loss (lower is better)")
        fig.suptitle(f"Figure 1 (reproduction): vision-encoder ablation, profile '{data['profile']}'")
        _caption(fig, f"Profile {data['profile']}, seed {data['seed']}; {items_line(table)}; bars = 95% bootstrap "
                      f"CI. {chance_line(table, chance)}{separation_line(table)} The paper prints no numbers for "
                      "Figure 1.", stamp)
        fig.tight_layout(rect=(0, 0.14, 1, 0.95))
        return _save(fig, out_dir, name, stamp)


def common_chance_rate(data: dict) -> float | None:
    """The chance rate of the encoders' held-out MC items (the same items for all); None when a results
    file does not record it (written before it did) or the encoders were scored on different items."""
    rates = {row["mc_accuracy"].get("chance_rate") for row in data["encoders"]}
    return rates.pop() if len(rates) == 1 and None not in rates else None


def chance_line(table: pd.DataFrame, chance: float | None) -> str:
    """How many encoders' accuracy CIs lie wholly above the dashed chance line."""
    if chance is None:
        return ""
    above = [e for e in table.index if table.at[e, "Acc. CI low"] > 100 * chance]
    return (f"Dashed line: chance on these items ({100 * chance:.1f}%); CI wholly above it for "
            f"{len(above)} of {len(table)} encoders. ")


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


def _unknown_bar(ax, x: float, top: float, color: Any) -> None:
    # a marker on the baseline and a label, no bar: a drawn height would read as a score
    ax.plot([x], [0], marker=NOT_PRINTED_MARKER, color=color, markersize=6, clip_on=False, linestyle="none")
    ax.text(x, top * 0.03, NOT_PRINTED, rotation=90, fontsize=ANNOTATION_PT, ha="center", va="bottom",
            color="0.35")


def bar_centre(metric_index: int, series_index: int, n_series: int) -> float:
    """Where seaborn's dodged barplot puts a series' bar within a metric's slot."""
    width = BAR_GROUP_WIDTH / n_series
    return metric_index - BAR_GROUP_WIDTH / 2 + width * (series_index + 0.5)


def figure2(out_dir: str | Path, fresh: pd.DataFrame | None = None, stamp: Stamp | None = None,
            published: pd.DataFrame | None = None, fresh_label: str = "fresh run",
            name: str = "figure2", lexical: pd.DataFrame | None = None) -> dict[str, Path]:
    """Grouped bars per metric (RadGraph-F1, RaTEScore, 1/RadCliQ-v1) and model. Published values where
    the paper prints them, a marker on the axis ("not printed") otherwise; a fresh results frame
    (``results_frame(eval_out, 'figure2')``) is drawn beside them with a black edge. Text cells ("not
    computed") are shown as text, never as a bar. With ``lexical`` (``lexical_frame(eval_out)``, not
    empty) a second panel shows the fresh run's BLEU and ROUGE-L on the same reports, with their CIs:
    the paper's figure has no lexical metric, and on a machine without the model-based metrics' weights
    they are this run's only scores."""
    published = published_figure2() if published is None else published
    series = _series(published, fresh, fresh_label)
    metrics = list(published.index)
    labels = [label for label, _, _ in series]
    colours = dict(zip(labels, sns.color_palette("tab10", len(series))))
    bars = pd.DataFrame([(metric, label, value) for label, values, _ in series
                         for metric, value in zip(metrics, values) if is_number(value)],
                        columns=["metric", "series", "value"])
    numbers = bars["value"].tolist()
    top = max([1.0] + numbers) * 1.05
    with_lexical = lexical is not None and not lexical.empty
    with figure_style():
        if with_lexical:
            fig, (ax, lex) = plt.subplots(1, 2, figsize=(SIZE[0] + 2.6, SIZE[1]),
                                          gridspec_kw={"width_ratios": [3.2, 1.0]})
        else:
            fig, ax = plt.subplots(figsize=SIZE)
        # hue_order keeps a slot for every series, bars or not, so each bar sits where bar_centre says
        sns.barplot(data=bars, x="metric", y="value", hue="series", order=metrics, hue_order=labels,
                    palette=colours, width=BAR_GROUP_WIDTH, errorbar=None, legend=False, ax=ax)
        handles = []
        for i, (label, values, is_fresh) in enumerate(series):
            if is_fresh:
                for patch in ax.containers[i]:
                    patch.set_edgecolor("black")
            for j, value in enumerate(values):
                x = bar_centre(j, i, len(series))
                if is_number(value):
                    ax.text(x, value, f"{value:.3f}", rotation=90, fontsize=ANNOTATION_PT, ha="center",
                            va="bottom")
                elif is_fresh:
                    # the reason ("needs ...") is in figure2_values; the bar slot only says what happened
                    text = value.split(":")[0] if isinstance(value, str) else "not run"
                    ax.text(x, top * 0.03, text, rotation=90, fontsize=ANNOTATION_PT, ha="center", va="bottom")
                else:
                    _unknown_bar(ax, x, top, colours[label])
            if any(is_number(v) for v in values):
                handles.append(Patch(facecolor=colours[label], edgecolor="black" if is_fresh else "none",
                                     label=label))
            else:  # a series with no bar at all: the legend shows its marker and why
                why = "no value computed" if is_fresh else NOT_PRINTED
                handles.append(plt.Line2D([], [], marker=NOT_PRINTED_MARKER, color=colours[label],
                                          linestyle="none", label=f"{label} ({why})"))
        ax.set_xlabel("")
        ax.set_ylim(0, top)
        ax.set_ylabel("score (higher is better)")
        ax.set_title("Figure 2 (reproduction): MIMIC-CXR report generation")
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        caption = (f"Published bars only where the paper prints the number; '{NOT_PRINTED_MARKER}' on the axis = "
                   "not printed in the paper (no value, not a zero).")
        if with_lexical:
            _lexical_panel(lex, lexical, fresh_label, colours)
            caption += (f" Right: this run's lexical overlap with the reference reports ({fresh_label}; "
                        "95% bootstrap CI): the paper's Figure 2 prints no lexical metric.")
        _caption(fig, caption, stamp)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        return _save(fig, out_dir, name, stamp)


def _lexical_panel(ax, lexical: pd.DataFrame, fresh_label: str, colours: dict[str, Any]) -> None:
    """The fresh run's BLEU / ROUGE-L bars on their own scale (far below the model-based metrics' 0-1),
    each with its CI and its value printed, in the colour its fresh series has in the left panel."""
    metrics = list(dict.fromkeys(lexical["metric"]))
    models = list(dict.fromkeys(lexical["model"]))
    spare = sns.color_palette("tab10", len(colours) + len(models))[len(colours):]
    palette = {m: colours.get(f"{m} ({fresh_label})", spare[i]) for i, m in enumerate(models)}
    sns.barplot(data=lexical, x="metric", y="value", hue="model", order=metrics, hue_order=models,
                palette=palette, width=BAR_GROUP_WIDTH, errorbar=None,
                legend=len(models) > 1, edgecolor="black", ax=ax)
    top = max(lexical["ci_high"].fillna(lexical["value"]).max(), lexical["value"].max()) * 1.3 or 1.0
    for _, row in lexical.iterrows():
        x = bar_centre(metrics.index(row["metric"]), models.index(row["model"]), len(models))
        if is_number(row["ci_low"]) and is_number(row["ci_high"]):
            ax.errorbar([x], [row["value"]], yerr=[[row["value"] - row["ci_low"]], [row["ci_high"] - row["value"]]],
                        fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.text(x, (row["ci_high"] if is_number(row["ci_high"]) else row["value"]) + top * 0.02,
                f"{row['value']:.3f}", fontsize=ANNOTATION_PT, ha="center", va="bottom")
    ax.set_ylim(0, top)
    ax.set_xlabel("")
    ax.set_ylabel("score (higher is better)")
    ax.set_title(f"Lexical overlap ({fresh_label})", fontsize=9)


# ---------------------------------------------------------------- training loss curves (notebooks 03-05)

def loss_figure(losses: list[float], stage: str, out_dir: str | Path, stamp: Stamp | None = None) -> dict[str, Path]:
    """A stage's per-step training loss as ``loss_<stage>.png/.pdf``."""
    with figure_style():
        fig, ax = plt.subplots(figsize=(5.0, 3.2))
        sns.lineplot(x=list(range(1, len(losses) + 1)), y=losses, marker="o", markersize=2, errorbar=None, ax=ax)
        ax.set(xlabel="optimizer step", ylabel="training loss", title=f"{stage}: training loss per step")
        _caption(fig, f"{len(losses)} logged steps.", stamp)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        return _save(fig, out_dir, f"loss_{stage}", stamp)
