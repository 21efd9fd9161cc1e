"""Tables and figures of the paper from result files, with the published numbers beside them.

* :mod:`~medkit.reporting.published`: the paper's printed numbers (Tables 3-6, Figure 2) as DataFrames;
* :mod:`~medkit.reporting.tables`: Markdown / LaTeX / CSV rendering, result-file readers, ``compare``;
* :mod:`~medkit.reporting.figures`: Figures 1 and 2 (PNG + PDF, byte-identical re-renders; imports
  matplotlib, so it is not imported here);
* :mod:`~medkit.reporting.provenance`: the stamp every output carries;
* :mod:`~medkit.reporting.inputs`: reading and checking result files (``ResultFileError`` names a bad one);
* :mod:`~medkit.reporting.outputs`: all-or-nothing output folders (staging, manifest, stale outputs removed).
"""

from medkit.reporting.inputs import ResultFileError
from medkit.reporting.provenance import Stamp, config_hash, git_commit, make_stamp
from medkit.reporting.published import published_figure2, published_table, table3_counts
from medkit.reporting.tables import (
    ablation_table,
    compare,
    compare_with_published,
    render_table,
    results_ci_frame,
    results_frame,
)

__all__ = [
    "ResultFileError", "Stamp", "ablation_table", "compare", "compare_with_published", "config_hash",
    "git_commit", "make_stamp", "published_figure2", "published_table", "render_table", "results_ci_frame",
    "results_frame", "table3_counts",
]
