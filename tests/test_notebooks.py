"""Notebooks: structure in git, parameter checking, the papermill runner, and nbval over all of them."""

import json
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
REFERENCE = ROOT / "tests" / "fixtures" / "nbval"
NOTEBOOKS = notebooks(ROOT / "notebooks")


def test_numbered_in_order_titled_then_parameters_and_outputs_stripped():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)) and len(NOTEBOOKS) == 10
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        # what a reader sees first: a title and one line on what the notebook is for
        title = nb.cells[0]
        assert title.cell_type == "markdown" and title.source.startswith("# "), path.name
        assert len([line for line in title.source.splitlines() if line.strip()]) == 2, path.name
        # then the parameters, before any other code (papermill injects its overrides right after it)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code is nb.cells[1] and "parameters" in first_code.metadata.get("tags", []), path.name
        assert "notebook_parameters(globals())" in "".join(c.source for c in nb.cells[:4]), path.name
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            assert cell.execution_count is None, f"{path.name}: execution counts not stripped"
            assert cell.outputs == [], f"{path.name}: outputs not stripped"
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_nbval_checks_the_values_that_must_not_drift():
    """Every tagged cell has a reference output recorded from its current source (tests/fixtures/nbval/)."""
    checked = {}
    for path in NOTEBOOKS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if "nbval-check-output" in c.metadata.get("tags", [])]
        reference = json.loads((REFERENCE / f"{path.stem}.json").read_text()) if cells else {}
        by_source = {r["source"]: r["outputs"] for r in reference.values()}
        assert sorted(by_source) == sorted(c.source for c in cells), path.name  # matched by source, not id
        assert all(by_source.values()), path.name
        checked[path.name[:2]] = [(c.source, by_source[c.source]) for c in cells]
    assert "stage_totals()" in checked["01"][0][0]  # Table 1 per-stage totals
    assert "table2()" in checked["03"][0][0]  # Table 2 from the stage configs
    source, outputs = checked["10"][0]
    assert "published_table(4)" in source and "49.23" in outputs[0]["data"]["text/plain"]


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


def test_unknown_names_in_the_namespace_are_rejected(monkeypatch):
    """Run directly (papermill CLI, JupyterLab), a misspelt or unknown parameter fails at the check, not later."""
    monkeypatch.delenv("MEDKIT_RUN_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"\['learning_rate', 'max_step'\]"):
        notebook_parameters({"seed": 1, "max_step": 3, "learning_rate": 1e-3})
    kernel_globals = {"In": ["", "seed = 1"], "Out": {}, "get_ipython": lambda: None, "exit": object(),
                      "_": 3, "_i1": "seed = 1", "__name__": "__main__", "os": os, "Path": Path,
                      "notebook_parameters": notebook_parameters, "seed": 1}
    assert notebook_parameters(kernel_globals).seed == 1  # IPython's names, modules, functions, classes


def test_every_notebook_checks_its_parameters_before_defining_anything_else(monkeypatch):
    """The notebooks' own first code cells, run as a kernel would: only parameters exist at the check."""
    monkeypatch.delenv("MEDKIT_SMOKE", raising=False)
    monkeypatch.delenv("MEDKIT_RUN_DIR", raising=False)
    for path in NOTEBOOKS:
        code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "notebook_parameters(globals())" in code[1], path.name
        namespace = {"In": [], "Out": {}, "__name__": "__main__"}
        exec(code[0], namespace)
        exec(code[1], namespace)
        assert namespace["P"].profile == "tiny", path.name


def test_impossible_values_are_rejected_with_the_parameter_named(monkeypatch):
    monkeypatch.delenv("MEDKIT_RUN_DIR", raising=False)
    assert notebook_parameters({"encoders": ["clip", "medsiglip"]}).encoders == ["clip", "medsiglip"]
    with pytest.raises(ConfigError, match=r"encoders=\['clip', 'resnet'\].*\['resnet'\]"):
        notebook_parameters({"encoders": ["clip", "resnet"]})
    with pytest.raises(ConfigError, match="profile='no/such/profile.yaml'"):
        notebook_parameters({"profile": "no/such/profile.yaml"})
    assert notebook_parameters({"profile": str(ROOT / "medkit/configs/profiles/tiny.yaml")})
    for name in ("run_dir", "tables_dir", "figures_dir"):
        with pytest.raises(ConfigError, match=f"{name}=' '"):
            notebook_parameters({name: " "})


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
    """The reference of Table 1's stage totals altered by one example: nbval must report the mismatch, and
    a tagged cell whose reference is missing fails the collection instead of passing unchecked."""
    reference = (REFERENCE / "01_data_and_benchmarks.json").read_text()
    assert "939439" in reference
    drifted = tmp_path / "drifted"
    drifted.mkdir()
    (drifted / "01_data_and_benchmarks.json").write_text(reference.replace("939439", "939438"))
    notebook = ROOT / "notebooks" / "01_data_and_benchmarks.ipynb"
    env = {**os.environ, "MEDKIT_SMOKE": "1", "MEDKIT_RUN_DIR": str(tmp_path / "run"),
           "MEDKIT_NBVAL_REFERENCE": str(drifted)}
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", str(notebook)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "mismatch 'text/plain'" in done.stdout
    assert "1 failed" in done.stdout  # only the drifted cell
    env["MEDKIT_NBVAL_REFERENCE"] = str(tmp_path / "empty")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "no reference output" in done.stdout + done.stderr
