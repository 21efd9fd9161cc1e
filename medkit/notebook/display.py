"""Small display helpers for the notebooks: loss curves, the ablation summary table, and frames shown whole
with each "not computed: needs ..." cell as a marker and its reason once, below."""

from __future__ import annotations

import html

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


def whole_cells() -> None:
    """The kernel's pandas display: every cell in full. pandas cuts a cell at 50 characters by default,
    which left benchmark descriptions, prompt excerpts and file lists ending in "..."."""
    pd.set_option("display.max_colwidth", None)


class NotedFrame:
    """A frame as a notebook shows it: every not-computed cell as ``n/c [k]`` (the tables' marker) and
    each distinct reason once, as footnote ``[k]`` below the frame. ``frame`` is the marked frame."""

    def __init__(self, frame: pd.DataFrame):
        from medkit.reporting.tables import NOT_COMPUTED_MARK, is_not_computed, not_computed_notes, note_ref

        numbers = not_computed_notes(frame)
        self.frame = frame.map(lambda value: f"{NOT_COMPUTED_MARK} {note_ref(numbers[value.strip()])}"
                               if is_not_computed(value) else value)
        self.notes = [f"{note_ref(k)} {text}" for text, k in numbers.items()]

    def _repr_html_(self) -> str:
        notes = "".join(f"<p><small>{html.escape(note)}</small></p>" for note in self.notes)
        return self.frame.to_html(na_rep="–") + notes

    def __repr__(self) -> str:
        return "\n".join([self.frame.to_string(na_rep="–"), *([""] + self.notes if self.notes else [])])


def noted(frame: pd.DataFrame) -> NotedFrame:
    """``frame`` for display, its not-computed cells as markers with footnotes (see ``NotedFrame``)."""
    return NotedFrame(frame)
