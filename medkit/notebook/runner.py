"""Run the numbered notebooks in order with papermill (what ``make reproduce`` calls).

Each notebook is executed with a pinned kernel and a timeout, its executed copy written to
``runs/<run id>/<notebook>``; overrides (``-p name value`` or a YAML file) are checked against the
notebook's own ``parameters`` cell first, so an unknown name fails before anything runs. A summary table
(status and runtime per notebook) is printed and saved as ``summary.csv``; a failing notebook is named
with its failing cell and the run stops with a non-zero exit.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medkit.config import ConfigError

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "python3"


@dataclass
class NotebookRun:
    notebook: str
    status: str  # ok | failed | skipped
    seconds: float
    output: str
    error: str = ""


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
        data = yaml.safe_load(Path(params_file).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{params_file}: expected a mapping of parameter names to values")
        overrides.update(data)
    for name, value in pairs:
        overrides[name] = yaml.safe_load(value)
    return overrides


def declared_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def check_overrides(paths: list[Path], overrides: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """Per notebook, the overrides it declares; a name no selected notebook declares is an error."""
    per_notebook = {p: {k: v for k, v in overrides.items() if k in declared_parameters(p)} for p in paths}
    used = set().union(*(set(v) for v in per_notebook.values())) if per_notebook else set()
    unknown = sorted(set(overrides) - used)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}: no selected notebook declares them")
    return per_notebook


def failing_cell(error: Exception) -> str:
    """papermill's error names the exception; the executed copy's failing cell is found by the caller."""
    return f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"


def failed_cell_index(executed: Path) -> int | None:
    import nbformat

    if not executed.is_file():
        return None
    nb = nbformat.read(executed, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return index
    return None


def run_notebooks(
    *,
    run_id: str | None = None,
    runs_root: str | Path = "runs",
    only: list[str] | None = None,
    start: str | None = None,
    overrides: dict[str, Any] | None = None,
    timeout: int = 1800,
    folder: Path = NOTEBOOK_DIR,
    progress: bool = True,
) -> list[NotebookRun]:
    import papermill

    paths = select(notebooks(folder), only, start)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(runs_root) / run_id
    overrides = dict(overrides or {})
    overrides.setdefault("run_dir", str(out_dir / "work"))
    per_notebook = check_overrides(paths, {k: v for k, v in overrides.items() if k != "run_dir"})
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[NotebookRun] = []
    for path in paths:
        params = per_notebook[path]
        if "run_dir" in declared_parameters(path):
            params = {**params, "run_dir": overrides["run_dir"]}
        executed = out_dir / path.name
        start_time = time.perf_counter()
        try:
            papermill.execute_notebook(str(path), str(executed), parameters=params, kernel_name=KERNEL,
                                       execution_timeout=timeout, progress_bar=progress, cwd=str(folder.parent))
        except Exception as error:  # papermill raises PapermillExecutionError or a timeout error
            cell = failed_cell_index(executed)
            where = f"cell {cell}" if cell is not None else "before any cell ran"
            results.append(NotebookRun(path.name, "failed", time.perf_counter() - start_time, str(executed),
                                       f"{where}: {failing_cell(error)}"))
            break
        results.append(NotebookRun(path.name, "ok", time.perf_counter() - start_time, str(executed)))
    results += [NotebookRun(p.name, "skipped", 0.0, "") for p in paths[len(results):]]
    write_summary(out_dir / "summary.csv", results)
    return results


def write_summary(path: Path, results: list[NotebookRun]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["notebook", "status", "seconds", "output", "error"])
        for r in results:
            writer.writerow([r.notebook, r.status, f"{r.seconds:.1f}", r.output, r.error])


def format_summary(results: list[NotebookRun]) -> str:
    width = max(len(r.notebook) for r in results)
    lines = [f"{'notebook':<{width}}  status   seconds"]
    lines += [f"{r.notebook:<{width}}  {r.status:<7}  {r.seconds:7.1f}" + (f"  {r.error}" if r.error else "")
              for r in results]
    lines.append(f"{'total':<{width}}  {'':<7}  {sum(r.seconds for r in results):7.1f}")
    return "\n".join(lines)
