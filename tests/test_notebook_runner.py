"""The papermill runner end to end, on throwaway notebooks (tests/fixtures/notebooks) in a temp folder."""

import csv
import shutil
from pathlib import Path

import nbformat
import psutil
import pytest

from medkit.cli import main
from medkit.notebook import runner

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "notebooks"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder holding notebooks/ and, after a run, runs/ (the current folder, as the project root is)."""
    monkeypatch.chdir(tmp_path)
    for name in ("MEDKIT_SMOKE", "MEDKIT_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def add_notebooks(project: Path, **names: str) -> None:
    """``add_notebooks(project, **{"01_fails": "fails"})``: fixture ``fails.ipynb`` as ``01_fails.ipynb``."""
    for target, fixture in names.items():
        shutil.copy(FIXTURES / f"{fixture}.ipynb", project / "notebooks" / f"{target}.ipynb")


def medkit_notebooks(*args: str) -> int:
    return main(["notebooks", "--notebooks-dir", "notebooks", *args])


def summary(project: Path, run_id: str) -> list[dict[str, str]]:
    with (project / "runs" / run_id / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def outputs(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_runs_in_order_with_overrides_and_writes_the_summary(project):
    add_notebooks(project, **{"01_seed": "01_seed", "02_steps": "02_steps", "03_done": "03_done"})
    (project / "overrides.yaml").write_text("max_steps: 3\n")
    assert medkit_notebooks("--run-id", "all", "-p", "seed", "7", "--params", "overrides.yaml") == 0
    rows = summary(project, "all")
    assert [(r["notebook"], r["status"]) for r in rows] == [
        ("01_seed.ipynb", "ok"), ("02_steps.ipynb", "ok"), ("03_done.ipynb", "ok")]
    assert all(float(r["seconds"]) > 0 for r in rows)
    run = project / "runs" / "all"
    assert "seed 7 limit None" in outputs(run / "01_seed.ipynb")  # -p, through notebook_parameters(globals())
    assert "seed 7 max_steps 3" in outputs(run / "02_steps.ipynb")  # and the YAML file


def test_only_and_from_select_the_notebooks_run(project):
    add_notebooks(project, **{"01_seed": "01_seed", "02_steps": "02_steps", "03_done": "03_done"})
    assert medkit_notebooks("--run-id", "only", "--only", "steps") == 0
    assert [(r["notebook"], r["status"]) for r in summary(project, "only")] == [("02_steps.ipynb", "ok")]
    assert medkit_notebooks("--run-id", "from", "--from", "03") == 0
    assert [(r["notebook"], r["status"]) for r in summary(project, "from")] == [("03_done.ipynb", "ok")]


def test_unknown_override_is_rejected_before_anything_runs(project, capsys):
    add_notebooks(project, **{"01_seed": "01_seed", "02_steps": "02_steps"})
    assert medkit_notebooks("--run-id", "bad", "-p", "learning_rate", "0.1") == 2
    assert "learning_rate" in capsys.readouterr().err
    assert not (project / "runs").exists()


def test_failing_notebook_is_named_with_its_source_cell_and_error(project, capsys):
    add_notebooks(project, **{"01_fails": "fails", "02_done": "03_done"})
    assert medkit_notebooks("--run-id", "fail", "-p", "seed", "1") == 1
    failed, skipped = summary(project, "fail")
    assert (failed["status"], skipped["status"]) == ("failed", "skipped")
    # the second code cell of the source (not the executed copy's cell 5, after papermill's own cells);
    # In [3]: the parameters and papermill's injected cell ran before it
    assert failed["cell"] == "code cell 2 (In [3])"
    assert failed["error"] == "ZeroDivisionError: division by zero"
    assert failed["source"].startswith("total = 1\nratio = total / 0")
    report = capsys.readouterr().err
    assert "FAILED 01_fails.ipynb at code cell 2 (In [3])" in report and "injected-parameters" in report
    assert "    ratio = total / 0  # fails here" in report and "ZeroDivisionError: division by zero" in report


def test_notebook_past_its_timeout_is_stopped_and_its_kernel_killed(project, monkeypatch, capsys):
    """The running cell ignores the interrupt: the watchdog must still stop papermill and kill the kernel."""
    TIMEOUT = 15  # room for a kernel to start on a loaded CI machine and reach the hanging cell
    monkeypatch.setattr(runner, "GRACE", 1.0)
    add_notebooks(project, **{"01_hangs": "hangs", "02_done": "03_done"})
    assert medkit_notebooks("--run-id", "slow", "--timeout", str(TIMEOUT)) == 1
    stopped, skipped = summary(project, "slow")
    assert (stopped["status"], skipped["status"]) == ("timeout", "skipped")
    assert float(stopped["seconds"]) < TIMEOUT + 3 * runner.GRACE + 2
    assert stopped["error"] == f"stopped after the notebook timeout of {TIMEOUT} s"
    assert stopped["cell"].startswith("code cell 2")  # the hanging cell, read from the executed copy
    assert "TIMEOUT 01_hangs.ipynb" in capsys.readouterr().err
    kernel = int((project / "kernel.pid").read_text())
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE


def test_a_run_is_recorded_so_notebooks_opened_later_default_to_it(project, monkeypatch):
    from medkit.notebook.params import notebook_parameters

    add_notebooks(project, **{"01_seed": "01_seed"})
    assert notebook_parameters({}).run == project / "runs" / "notebooks"  # no run yet
    assert medkit_notebooks("--run-id", "first") == 0
    work = project / "runs" / "first" / "work"
    assert (project / "runs" / "LATEST").read_text().strip() == str(work)
    work.mkdir(parents=True, exist_ok=True)
    assert notebook_parameters({}).run == work
    monkeypatch.chdir(project / "notebooks")  # JupyterLab's working folder: the same run, the same paths
    assert notebook_parameters({}).run == work
    (project / "models" / "m").mkdir(parents=True)
    assert notebook_parameters({"model_path": "models/m"}).model_path == str(project / "models" / "m")
    assert notebook_parameters({"run_dir": "runs/other"}).run == project / "runs" / "other"


def test_an_executed_copy_shows_its_finished_progress_bar_as_text(project):
    """Opened untrusted (as every papermill copy is), a widget bar shows its first frame forever; the
    runner's kernels draw plain-text bars, whose last frame is what the saved output says."""
    add_notebooks(project, **{"01_progress": "progress"})
    assert medkit_notebooks("--run-id", "bars") == 0
    nb = nbformat.read(project / "runs" / "bars" / "01_progress.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs)
    assert "train: 100%" in text and "30/30" in text.split("\r")[-1]


def test_transformers_own_bars_are_plain_text_in_an_executed_copy(project):
    """Loading or saving weights draws transformers' bar, a widget by default: it must be text as well."""
    add_notebooks(project, **{"01_library": "library_progress"})
    assert medkit_notebooks("--run-id", "library") == 0
    nb = nbformat.read(project / "runs" / "library" / "01_library.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    last_frames = [line.split("\r")[-1] for line in "".join(o.get("text", "") for o in outputs).splitlines()]
    assert any(frame.startswith("Loading weights: 100%") for frame in last_frames), last_frames


def test_a_library_bar_inside_a_medkit_bar_leaves_no_cursor_escape_in_the_executed_copy(project):
    """A model loaded inside an evaluation's bar opened a second, nested text bar, which moves the cursor
    up with an ANSI escape: the executed copy showed a stray ``[A`` line."""
    add_notebooks(project, **{"01_nested": "nested_progress"})
    assert medkit_notebooks("--run-id", "nested") == 0
    text = outputs(project / "runs" / "nested" / "01_nested.ipynb")
    assert "\x1b[A" not in text and "[A" not in text, text
    assert "eval: 100%" in text.split("\r")[-1] or any(
        line.split("\r")[-1].startswith("eval: 100%") for line in text.splitlines()), text
