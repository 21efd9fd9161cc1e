"""Run the numbered notebooks in order with papermill (what ``make reproduce`` calls).

Each notebook is executed with a pinned kernel in its own papermill process, under a wall-clock limit per
notebook (and, optionally, one per cell); its executed copy is written to ``runs/<run id>/<notebook>``.
Overrides (``-p name value`` or a YAML file) are checked against the notebooks' own ``parameters`` cells
first, so an unknown name fails before anything runs. A notebook past its limit is interrupted, its kernel
shut down (killed if it does not stop) and marked ``timeout``. A summary table (status and runtime per
notebook) is printed and saved as ``summary.csv``; a failing notebook is named with its failing cell (its
place in the source notebook, its first lines and the error) and the run stops with a non-zero exit.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medkit.config import ConfigError
from medkit.progress import PLAIN_PROGRESS_ENV

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "python3"
NOTEBOOK_TIMEOUT = 3600.0  # seconds per notebook: ample for the tiny profile, far too little for paper training
GRACE = 10.0  # seconds a timed-out notebook gets to stop after each signal
SOURCE_LINES = 3  # of the failing cell, in the report
INJECTED_TAG = "injected-parameters"
CELL_COUNTING = "code cells counted from 1, papermill's injected-parameters cell not counted"


@dataclass
class NotebookRun:
    notebook: str
    status: str  # ok | failed | timeout | skipped
    seconds: float
    output: str
    error: str = ""  # the error's last line (ename: evalue), or why the notebook was stopped
    cell: str = ""  # where it stopped, in the source notebook: "code cell 2 (In [3])"
    source: str = ""  # that cell's first lines

    def report(self) -> str:
        """A failed or timed-out notebook: where it stopped, that cell's source and the error."""
        where = f"at {self.cell} ({CELL_COUNTING})" if self.cell else "before any cell ran"
        lines = [f"{self.status.upper()} {self.notebook} {where}:"]
        lines += [f"    {line}" for line in self.source.splitlines()]
        lines += [f"  {self.error}", f"  executed copy: {self.output}"]
        return "\n".join(lines)


def notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in run order."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    return found


def select(paths: list[Path], only: list[str] | None, start: str | None) -> list[Path]:
    """``only``: notebooks whose number or name matches; ``start``: that notebook and every later one."""
    def matches(path: Path, key: str) -> bool:
        return path.name.startswith(key) or path.stem == key or path.stem.split("_", 1)[-1] == key

    for key in (only or []) + ([start] if start else []):
        if not any(matches(p, key) for p in paths):
            raise ConfigError(f"no notebook matches {key!r}; notebooks: {[p.name for p in paths]}")
    if start:
        first = next(i for i, p in enumerate(paths) if matches(p, start))
        paths = paths[first:]
    if only:
        paths = [p for p in paths if any(matches(p, k) for k in only)]
    return paths


def parse_overrides(pairs: list[tuple[str, str]], params_file: str | Path | None) -> dict[str, Any]:
    """``-p name value`` pairs (values parsed as YAML scalars: 12, true, null, tiny) over a YAML file."""
    overrides: dict[str, Any] = {}
    if params_file:
        try:
            data = yaml.safe_load(Path(params_file).read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{params_file}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{params_file}: expected a mapping of parameter names to values")
        overrides.update(data)
    for name, value in pairs:
        try:
            overrides[name] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"-p {name} {value!r}: not a YAML value ({e})") from None
    return overrides


def declared_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def check_overrides(paths: list[Path], overrides: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """Per notebook, the overrides it declares; a name no selected notebook declares is an error."""
    declared = {p: declared_parameters(p) for p in paths}
    per_notebook = {p: {k: v for k, v in overrides.items() if k in declared[p]} for p in paths}
    unknown = sorted(set(overrides) - set().union(*declared.values()))
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}: no selected notebook declares them")
    return per_notebook


def error_line(error: BaseException) -> tuple[str, str]:
    """(ename, evalue): papermill's for an error raised in a cell, else the exception's name and first line."""
    if hasattr(error, "ename"):
        return error.ename, str(error.evalue)
    # a cell timeout's message is a paragraph, then a rule of dashes and the cell's source
    lines = [line.strip() for line in str(error).splitlines() if line.strip().strip("-")]
    return type(error).__name__, lines[0] if lines else ""


def execute_job(job_file: Path) -> int:
    """The worker process: one papermill execution as ``job_file`` describes; on failure its error is written
    next to the job file (``result.yaml``) and the exit status is 1."""
    import papermill

    job = yaml.safe_load(job_file.read_text())
    try:
        papermill.execute_notebook(job["input"], job["output"], parameters=job["parameters"], kernel_name=KERNEL,
                                   execution_timeout=job["cell_timeout"], progress_bar=job["progress"],
                                   cwd=job["cwd"])
    except Exception as error:
        ename, evalue = error_line(error)
        (job_file.parent / "result.yaml").write_text(yaml.safe_dump({"ename": ename, "evalue": evalue}))
        return 1
    return 0


def signal_group(pid: int, sig: int) -> None:
    """``sig`` to the process group ``pid`` leads (a kernel and what its cells started), else to ``pid`` alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exits_within(worker: subprocess.Popen, seconds: float) -> bool:
    try:
        worker.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def stop_worker(worker: subprocess.Popen) -> None:
    """Interrupt the kernel (the running cell raises KeyboardInterrupt; papermill saves the copy and shuts the
    kernel down), else terminate papermill (nbclient shuts its kernel down on SIGTERM), else kill it; then
    kill whatever is left of its process tree, so no kernel or training rank outlives a stopped notebook."""
    import psutil

    try:
        parent = psutil.Process(worker.pid)
        kernels, tree = parent.children(), parent.children(recursive=True)
    except psutil.NoSuchProcess:
        kernels, tree = [], []
    for kernel in kernels:  # as Jupyter interrupts: SIGINT to the kernel's process group
        signal_group(kernel.pid, signal.SIGINT)
    if not exits_within(worker, GRACE if kernels else 0):
        worker.terminate()
        if not exits_within(worker, GRACE):
            worker.kill()
            worker.wait()
    for process in tree:
        if alive(process):
            signal_group(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + GRACE
    while any(alive(p) for p in tree) and time.monotonic() < deadline:  # a kill takes effect asynchronously
        time.sleep(0.05)


def alive(process: Any) -> bool:
    """A ``psutil.Process`` still running (psutil checks its start time too, so a reused pid is never hit)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stopped_cell(executed: Path) -> tuple[str, str]:
    """Where execution stopped, from the executed copy (papermill stamps each cell's start): the cell's
    place among the source notebook's code cells and its execution count, and its first lines."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # missing, or half-written when the worker was killed
        return "", ""
    position, found = 0, None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        injected = INJECTED_TAG in cell.metadata.get("tags", [])
        position += 0 if injected else 1
        if cell.metadata.get("papermill", {}).get("start_time"):
            found = ("papermill's injected-parameters cell" if injected else f"code cell {position}", cell)
    if found is None:
        return "", ""
    where, cell = found
    count = f" (In [{cell.execution_count}])" if cell.execution_count else ""
    lines = cell.source.splitlines()
    excerpt = "\n".join(lines[:SOURCE_LINES] + (["..."] if len(lines) > SOURCE_LINES else []))
    return where + count, excerpt


def execute(path: Path, executed: Path, parameters: dict[str, Any], *, timeout: float | None,
            cell_timeout: float | None, progress: bool, cwd: Path) -> NotebookRun:
    """One notebook in a papermill worker process, stopped once it runs past ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="medkit-notebook-") as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump({"input": str(path), "output": str(executed), "parameters": parameters,
                                       "cell_timeout": cell_timeout, "progress": progress, "cwd": str(cwd)}))
        start = time.perf_counter()
        # plain-text bars in the kernels: an executed copy opens untrusted, and its widgets never redraw
        worker = subprocess.Popen([sys.executable, "-m", "medkit.notebook.runner", str(job)],
                                  env={**os.environ, PLAIN_PROGRESS_ENV: "1"})
        try:
            timed_out = not exits_within(worker, timeout)
        finally:  # also on Ctrl-C here: no kernel is left running
            if worker.poll() is None:
                stop_worker(worker)
        seconds = time.perf_counter() - start
        result_file = Path(tmp) / "result.yaml"
        result = yaml.safe_load(result_file.read_text()) if result_file.is_file() else None
    if worker.returncode == 0 and not timed_out:
        return NotebookRun(path.name, "ok", seconds, str(executed))
    cell, source = stopped_cell(executed)
    if timed_out:
        return NotebookRun(path.name, "timeout", seconds, str(executed),
                           f"stopped after the notebook timeout of {timeout:g} s", cell, source)
    if result is None:
        return NotebookRun(path.name, "failed", seconds, str(executed),
                           f"papermill exited with status {worker.returncode}", cell, source)
    status = "timeout" if result["ename"] == "CellTimeoutError" else "failed"
    return NotebookRun(path.name, status, seconds, str(executed), f"{result['ename']}: {result['evalue']}",
                       cell, source)


def run_notebooks(
    *,
    run_id: str | None = None,
    runs_root: str | Path = "runs",
    only: list[str] | None = None,
    start: str | None = None,
    overrides: dict[str, Any] | None = None,
    timeout: float | None = NOTEBOOK_TIMEOUT,
    cell_timeout: float | None = None,
    notebooks_dir: Path | None = None,
    progress: bool = True,
) -> list[NotebookRun]:
    """``timeout``: wall-clock seconds per notebook; ``cell_timeout``: seconds per cell (None or 0: no limit)."""
    timeout, cell_timeout = timeout or None, cell_timeout or None
    notebooks_dir = Path(notebooks_dir or NOTEBOOK_DIR)
    paths = select(notebooks(notebooks_dir), only, start)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    # absolute: the kernels run from the project root, which need not be the current folder
    out_dir = Path(runs_root).resolve() / run_id
    overrides = dict(overrides or {})
    overrides.setdefault("run_dir", str(out_dir / "work"))
    per_notebook = check_overrides(paths, {k: v for k, v in overrides.items() if k != "run_dir"})
    out_dir.mkdir(parents=True, exist_ok=True)
    from medkit.notebook.params import record_latest_run

    record_latest_run(Path(overrides["run_dir"]), Path(runs_root).resolve())  # notebooks opened later find it
    results: list[NotebookRun] = []
    for path in paths:
        params = per_notebook[path]
        if "run_dir" in declared_parameters(path):
            params = {**params, "run_dir": overrides["run_dir"]}
        result = execute(path, out_dir / path.name, params, timeout=timeout, cell_timeout=cell_timeout,
                         progress=progress, cwd=notebooks_dir.parent)
        results.append(result)
        if result.status != "ok":
            break
    results += [NotebookRun(p.name, "skipped", 0.0, "") for p in paths[len(results):]]
    write_summary(out_dir / "summary.csv", results)
    return results


def write_summary(path: Path, results: list[NotebookRun]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["notebook", "status", "seconds", "output", "cell", "error", "source"])
        for r in results:
            writer.writerow([r.notebook, r.status, f"{r.seconds:.1f}", r.output, r.cell, r.error, r.source])


def format_summary(results: list[NotebookRun]) -> str:
    width = max(len(r.notebook) for r in results)
    lines = [f"{'notebook':<{width}}  status   seconds"]
    lines += [f"{r.notebook:<{width}}  {r.status:<7}  {r.seconds:7.1f}"
              + (f"  {r.cell + ': ' if r.cell else ''}{r.error}" if r.error else "") for r in results]
    lines.append(f"{'total':<{width}}  {'':<7}  {sum(r.seconds for r in results):7.1f}")
    return "\n".join(lines)


if __name__ == "__main__":  # the worker: python -m medkit.notebook.runner JOB_FILE
    sys.exit(execute_job(Path(sys.argv[1])))
