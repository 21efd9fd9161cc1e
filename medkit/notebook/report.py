"""Notebook 10's calls: assemble every table and figure from this run's result files, and show them."""

from __future__ import annotations

from pathlib import Path

from medkit.notebook.params import NotebookParameters
from medkit.reporting.assemble import Assembled, assemble, run_stamp


def assemble_all(params: NotebookParameters) -> Assembled:
    """Tables 1-6 and Figures 1-2 from ``<run>/eval`` and ``<run>/ablation`` (no model is loaded)."""
    return assemble(eval_out=params.run / "eval", ablation_results=params.run / "ablation" / "results.json",
                    tables_dir=params.tables, figures_dir=params.figures,
                    stamp=run_stamp(params.profile, params.seed))


def figure1_of_run(params: NotebookParameters) -> dict[str, Path]:
    """Figure 1 from this run's ablation results, stamped, under the run folder."""
    from medkit.reporting.figures import figure1

    return figure1(params.run / "ablation" / "results.json", params.run / "figures",
                   stamp=run_stamp(params.profile, params.seed))


def show_output(done: Assembled, name: str):
    """A written table (its Markdown, marks and stamp included) or figure (PNG) inline, or why it is missing."""
    from IPython.display import Image, Markdown

    if name in done.figures:
        return Image(filename=str(done.figures[name]["png"]))
    if name in done.tables:
        return Markdown(done.tables[name]["markdown"].read_text(encoding="utf-8"))
    return Markdown(f"**{name} not written:** {done.missing.get(name, 'unknown output name')}")


def show_figure(paths: dict[str, Path]):
    """A written figure's PNG, inline."""
    from IPython.display import Image

    return Image(filename=str(paths["png"]))
