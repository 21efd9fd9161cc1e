"""Small display helpers for the notebooks: loss curves and the ablation summary table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def loss_curve(losses: list[float], stage: str, out_stem: str | Path):
    """Plot a stage's per-step training loss, save it as PNG, return the figure (shown inline)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=2)
    ax.set(xlabel="optimizer step", ylabel="training loss", title=f"{stage}: loss per step")
    fig.tight_layout()
    fig.savefig(out_stem.with_suffix(".png"), metadata={"Software": None})
    plt.close(fig)
    return fig


def ablation_frame(results: dict) -> pd.DataFrame:
    """One row per encoder: strict MC accuracy and held-out loss with their 95% CIs."""
    rows = []
    for row in results["encoders"]:
        acc, loss = row["mc_accuracy"], row["heldout_loss"]
        rows.append({"encoder": row["encoder"], "accuracy": acc["accuracy"], "acc_ci_low": acc["ci_low"],
                     "acc_ci_high": acc["ci_high"], "unparsed": acc["unparsed_rate"], "n": acc["n"],
                     "heldout_loss": loss["mean"], "loss_ci_low": loss["ci_low"], "loss_ci_high": loss["ci_high"]})
    return pd.DataFrame(rows)
