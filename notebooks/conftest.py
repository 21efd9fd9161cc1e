"""nbval: cells tagged ``nbval-check-output`` are compared with reference outputs kept beside the tests.

Notebooks live in git without outputs, so the values that must not drift (Table 1's stage totals, Table 2,
the shipped Table 4) are stored in ``tests/fixtures/nbval/<notebook>.json`` (a name -> the cell's source
and its expected outputs; ``MEDKIT_NBVAL_REFERENCE`` points elsewhere). A reference is found by the cell's
source, not its id (nbstripout renumbers ids on commit), and put into the cell at collection time, so
nbval compares the executed output with it. A tagged cell whose source has no reference (a new cell, or
one edited since the reference was recorded) fails instead of passing unchecked.
"""

import json
import os
from pathlib import Path

import nbformat
import pytest

REFERENCE_ENV = "MEDKIT_NBVAL_REFERENCE"
DEFAULT_REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nbval"


def reference_for(notebook: Path) -> dict:
    path = Path(os.environ.get(REFERENCE_ENV, DEFAULT_REFERENCE)) / f"{notebook.stem}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def pytest_collection_modifyitems(items):
    references = {}
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or "nbval-check-output" not in cell.get("metadata", {}).get("tags", []):
            continue
        notebook = Path(str(item.fspath))
        by_source = {r["source"]: r for r in references.setdefault(notebook, reference_for(notebook)).values()}
        reference = by_source.get(cell.source)
        if reference is None:
            raise pytest.UsageError(f"{notebook.name}: a cell tagged nbval-check-output has no reference output "
                                    f"for its source in {DEFAULT_REFERENCE.name}/{notebook.stem}.json "
                                    f"(new or edited since it was recorded): {cell.source.splitlines()[0]!r}")
        cell.outputs = nbformat.from_dict(reference["outputs"])
        cell.execution_count = 1  # nbval skips comparing cells it believes never ran
