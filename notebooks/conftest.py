"""nbval: cells tagged ``nbval-check-output`` are compared with reference outputs kept beside the tests.

Notebooks live in git without outputs, so the values that must not drift (Table 1's stage totals, Table 2,
the shipped Table 4) are stored in ``tests/fixtures/nbval/<notebook>.json`` (cell id -> the cell's source
and its expected outputs; ``MEDKIT_NBVAL_REFERENCE`` points elsewhere). They are put into the cells at
collection time, so nbval compares the executed output with them. A tagged cell without a reference, or
whose source no longer matches the one the reference was taken from, fails instead of passing unchecked.
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
        reference = references.setdefault(notebook, reference_for(notebook)).get(cell.get("id"))
        if reference is None:
            raise pytest.UsageError(f"{notebook.name} cell {cell.get('id')}: tagged nbval-check-output but no "
                                    f"reference output in {DEFAULT_REFERENCE.name}/{notebook.stem}.json")
        if reference["source"] != cell.source:
            raise pytest.UsageError(f"{notebook.name} cell {cell.get('id')}: its source changed since the "
                                    f"reference was recorded; update {notebook.stem}.json")
        cell.outputs = nbformat.from_dict(reference["outputs"])
        cell.execution_count = 1  # nbval skips comparing cells it believes never ran
