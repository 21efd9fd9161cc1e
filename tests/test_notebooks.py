"""Notebooks: structure in git, parameter checking, the papermill runner, and nbval over all of them."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from medkit.config import ConfigError
from medkit.notebook.params import notebook_parameters
from medkit.notebook.runner import check_overrides, notebooks, parse_overrides, select

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks(ROOT / "notebooks")


def test_numbered_in_order_with_parameters_cell_first_and_outputs_stripped():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)) and len(NOTEBOOKS) == 10
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert "parameters" in nb.cells[0].metadata.get("tags", []), path.name
        assert "notebook_parameters(globals())" in "".join(c.source for c in nb.cells[:3]), path.name
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            assert cell.execution_count is None, f"{path.name}: execution counts not stripped"
            if cell.metadata.get("keep_output"):  # nbval compares these kept outputs (values that must not drift)
                assert "nbval-check-output" in cell.metadata.get("tags", []) and cell.outputs, path.name
            else:
                assert cell.outputs == [], f"{path.name}: outputs not stripped"
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_nbval_checks_the_values_that_must_not_drift():
    checked = {path.name[:2]: [c for c in nbformat.read(path, as_version=4).cells
                               if "nbval-check-output" in c.metadata.get("tags", [])] for path in NOTEBOOKS}
    assert "stage_totals()" in checked["01"][0].source  # Table 1 per-stage totals
    assert "table2()" in checked["03"][0].source  # Table 2 from the stage configs
    table4 = checked["10"][0]
    assert "published_table(4)" in table4.source and "49.23" in table4.outputs[0]["data"]["text/plain"]


def test_git_strips_notebook_outputs():
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text()


def test_notebook_cells_are_calls_not_logic():
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
                assert len(cell.source.splitlines()) <= 6, f"{path.name}: cell too long"
                assert not any(line.lstrip().startswith(("def ", "class ", "for ", "while "))
                               for line in cell.source.splitlines()), f"{path.name}: logic belongs in medkit"


def test_parameters_are_checked_with_clear_errors(monkeypatch):
    monkeypatch.delenv("MEDKIT_SMOKE", raising=False)
    monkeypatch.delenv("MEDKIT_RUN_DIR", raising=False)
    assert notebook_parameters({"profile": "tiny", "seed": 3}).seed == 3
    with pytest.raises(ConfigError, match="seed"):
        notebook_parameters({"seed": "zero"})
    with pytest.raises(ConfigError, match="profile='huge'"):
        notebook_parameters({"profile": "huge"})
    with pytest.raises(ConfigError, match="max_steps=0"):
        notebook_parameters({"max_steps": 0})
    with pytest.raises(ConfigError, match="data_root"):
        notebook_parameters({"data_root": "/no/such/folder"})
    monkeypatch.setenv("MEDKIT_SMOKE", "1")
    smoke = notebook_parameters({"max_steps": 50})
    assert smoke.smoke and smoke.max_steps == 2 and smoke.limit == 4


def test_runner_selection_and_unknown_overrides():
    assert [p.name[:2] for p in select(NOTEBOOKS, ["03", "report_generation"], None)] == ["03", "08"]
    assert [p.name[:2] for p in select(NOTEBOOKS, None, "09")] == ["09", "10"]
    with pytest.raises(ConfigError, match="no notebook matches"):
        select(NOTEBOOKS, ["99"], None)
    overrides = parse_overrides([("max_steps", "3"), ("data_root", "null")], None)
    assert overrides == {"max_steps": 3, "data_root": None}
    per_notebook = check_overrides(NOTEBOOKS, {"max_steps": 3})
    assert "max_steps" in per_notebook[NOTEBOOKS[2]] and "max_steps" not in per_notebook[NOTEBOOKS[0]]
    with pytest.raises(ConfigError, match="learning_rate"):
        check_overrides(NOTEBOOKS, {"learning_rate": 1e-3})


def test_parameter_file_must_be_a_mapping(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse_overrides([], bad)


@pytest.mark.slow
def test_every_notebook_runs_under_nbval(tmp_path):
    """All notebooks, in order, on the tiny profile in smoke mode (a few steps and items each)."""
    env = {**os.environ, "MEDKIT_SMOKE": "1", "MEDKIT_RUN_DIR": str(tmp_path / "run"),
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                           "--nbval-cell-timeout", "900", *map(str, NOTEBOOKS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:]
    assert (tmp_path / "run" / "ablation" / "results.json").is_file()
    assert (tmp_path / "run" / "train" / "instruct" / "model" / "config.json").is_file()


def test_nbval_fails_when_a_checked_value_drifts(tmp_path):
    """The kept output of Table 1's stage totals, altered by one example: nbval must report the mismatch."""
    source = (ROOT / "notebooks" / "01_data_and_benchmarks.ipynb").read_text()
    assert "939439" in source
    (tmp_path / "01_drifted.ipynb").write_text(source.replace("939439", "939438"))
    (tmp_path / "conftest.py").write_text((ROOT / "notebooks" / "conftest.py").read_text())
    env = {**os.environ, "MEDKIT_SMOKE": "1", "MEDKIT_RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                           str(tmp_path / "01_drifted.ipynb")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0 and "mismatch 'text/plain'" in done.stdout
    assert "1 failed" in done.stdout  # only the drifted cell
