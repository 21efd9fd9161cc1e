"""Small display helpers for the notebooks: loss curves and the ablation summary table."""

from __future__ import annotations

import pandas as pd

from medkit.notebook.params import NotebookParameters


def show_loss_curve(losses: list[float], stage: str, params: NotebookParameters):
    """Draw a stage's loss curve into ``<run>/figures/loss_<stage>.png/.pdf`` (stamped) and show it inline."""
    from IPython.display import Image

    from medkit.reporting.assemble import run_stamp
    from medkit.reporting.figures import loss_figure

    paths = loss_figure(losses, stage, params.run / "figures", run_stamp(params.profile, params.seed))
    return Image(filename=str(paths["png"]))


def ablation_frame(results: dict) -> pd.DataFrame:
    """One row per encoder: strict MC accuracy and held-out loss with their 95% CIs."""
    rows = []
    for row in results["encoders"]:
        acc, loss = row["mc_accuracy"], row["heldout_loss"]
        rows.append({"encoder": row["encoder"], "accuracy": acc["accuracy"], "acc_ci_low": acc["ci_low"],
                     "acc_ci_high": acc["ci_high"], "unparsed": acc["unparsed_rate"], "n": acc["n"],
                     "heldout_loss": loss["mean"], "loss_ci_low": loss["ci_low"], "loss_ci_high": loss["ci_high"]})
    return pd.DataFrame(rows)
