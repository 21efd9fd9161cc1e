"""Tables and figures of the paper from result files, with the published numbers beside them.

* :mod:`~medkit.reporting.published`: the paper's printed numbers (Tables 3-6, Figure 2) as DataFrames;
* :mod:`~medkit.reporting.tables`: Markdown / LaTeX / CSV rendering, result-file readers, ``compare``;
* :mod:`~medkit.reporting.figures`: Figures 1 and 2 (PNG + PDF, byte-identical re-renders; imports
  matplotlib, so it is not imported here);
* :mod:`~medkit.reporting.provenance`: the stamp every output carries.
"""

from medkit.reporting.provenance import Stamp, config_hash, git_commit, make_stamp
from medkit.reporting.published import published_figure2, published_table, table3_counts
from medkit.reporting.tables import (
    ablation_table,
    compare,
    render_table,
    results_ci_frame,
    results_frame,
)

__all__ = [
    "Stamp", "ablation_table", "compare", "config_hash", "git_commit", "make_stamp", "published_figure2",
    "published_table", "render_table", "results_ci_frame", "results_frame", "table3_counts",
]
