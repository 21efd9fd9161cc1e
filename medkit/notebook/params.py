"""The parameters every notebook accepts, checked in its first cells.

Each notebook's ``parameters`` cell assigns a subset of these names; papermill injects overrides after
it. ``notebook_parameters(globals())`` then collects them, rejects unknown names and ill-typed or
impossible values with an error naming the parameter, and applies the smoke switch (``MEDKIT_SMOKE=1``,
used by nbval in ``make test``) that shrinks step and item counts so every notebook runs in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from medkit.config import ConfigError, from_dict
from medkit.profiles import PROFILE_NAMES, encoder_registry
from medkit.progress import plain_library_bars

SMOKE_ENV = "MEDKIT_SMOKE"
RUN_DIR_ENV = "MEDKIT_RUN_DIR"  # overrides run_dir (the nbval run in `make test` points it at a temp folder)
LATEST_FILE = Path("runs") / "LATEST"  # the notebook runner writes its run folder here (make reproduce)
FALLBACK_RUN_DIR = Path("runs") / "notebooks"  # run_dir when no runner has run yet


@dataclass
class NotebookParameters:
    profile: str = "tiny"  # tiny, paper or a profile YAML path
    seed: int = 0
    run_dir: str | None = None  # where every notebook of one run writes; None: the latest runner's (latest_run_dir)
    data_root: str | None = None  # native benchmark releases (paper); None: synthetic counterparts
    train_data_root: str | None = None  # the Table 1 training datasets (medkit.data.mixture); None: synthetic
    skip_missing: bool = False  # train on the Table 1 datasets present under train_data_root
    model_path: str | None = None  # a checkpoint to evaluate; None: the instruction-tuned stage of run_dir
    limit: int | None = None  # first N items per benchmark
    max_steps: int | None = None  # optimizer steps per training stage (None: the profile's)
    nproc: int = 2  # training ranks; in the evaluation notebooks, data-parallel eval ranks
    encoders: list[str] | None = None  # ablation subset (None: all four)
    max_new_tokens: int | None = None  # None: each benchmark's budget (or the profile's eval.max_new_tokens)
    batch_size: int = 8
    reasoning_effort: str | None = None  # GPT-oss harmony "Reasoning:" setting; None: the profile's (low)
    tables_dir: str = "paper_tables"  # where notebook 10 writes the tables (relative: from the project root)
    figures_dir: str = "figures"
    smoke: bool = False  # a few steps and items: checks the notebook runs, not what it measures

    @property
    def run(self) -> Path:
        """``run_dir``; a relative path is taken from the project root, so JupyterLab (whose working
        folder is ``notebooks/``) and papermill (started from the root) share one run folder. None: the
        run ``make reproduce`` last started, so a notebook opened afterwards finds its models and results."""
        return from_root(self.run_dir) if self.run_dir is not None else latest_run_dir()

    @property
    def tables(self) -> Path:
        """``tables_dir``; a smoke run writes inside its run folder, never over the project's tables."""
        return self.run / "paper_tables" if self.smoke else from_root(self.tables_dir)

    @property
    def figures(self) -> Path:
        return self.run / "figures" if self.smoke else from_root(self.figures_dir)

    @property
    def corpus(self) -> Path:
        return self.run / "corpus"

    @property
    def corpus_sizes(self) -> dict[str, int] | None:
        """Items per synthetic task: the defaults (100 held-out items per benchmark counterpart), or a
        tenth of them in a smoke run, which reads 4 items per benchmark."""
        from medkit.data.synthetic import SMOKE_SIZES

        return dict(SMOKE_SIZES) if self.smoke else None

    def synthetic_corpus(self) -> Path:
        """This run's synthetic corpus, generated on first use."""
        from medkit.data.synthetic import ensure_corpus

        return ensure_corpus(self.corpus, seed=self.seed, sizes=self.corpus_sizes)


def project_root() -> Path:
    """Where relative paths are taken from: the current folder, or its parent inside ``notebooks/``."""
    cwd = Path.cwd()
    return cwd.parent if cwd.name == "notebooks" else cwd


def from_root(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


def latest_run_dir() -> Path:
    """The work folder of the notebook runner's latest run (``runs/LATEST``), else ``runs/notebooks``."""
    latest = from_root(LATEST_FILE)
    if latest.is_file():
        recorded = Path(latest.read_text(encoding="utf-8").strip())
        if recorded.is_dir():
            return recorded
    return from_root(FALLBACK_RUN_DIR)


def record_latest_run(work_dir: Path, runs_root: Path) -> None:
    """Written by the runner when a run starts, so notebooks opened later default to it."""
    runs_root.mkdir(parents=True, exist_ok=True)
    tmp = runs_root / f".{LATEST_FILE.name}.tmp"
    tmp.write_text(f"{work_dir.resolve()}\n", encoding="utf-8")
    tmp.replace(runs_root / LATEST_FILE.name)


NAMES = tuple(f.name for f in fields(NotebookParameters))
PATH_PARAMETERS = ("data_root", "train_data_root", "model_path")
SMOKE = {"limit": 4, "max_steps": 2, "max_new_tokens": 8}
IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
PLAIN_VALUES = (type(None), bool, int, float, str, list, dict, tuple)


def notebook_parameters(namespace: dict[str, Any]) -> NotebookParameters:
    """The notebook's parameters from its namespace (the globals after the parameters cell ran).

    Called right after the parameters cell (and papermill's injected one), where every plain value in the
    namespace is a parameter: any other is an unknown name (papermill itself only warns about those)."""
    check_names(namespace)
    from medkit.notebook.display import whole_cells  # (display imports this module)

    plain_library_bars()  # the kernel's setup: the first medkit call of every notebook
    whole_cells()
    values = {n: namespace[n] for n in NAMES if n in namespace}
    if os.environ.get(RUN_DIR_ENV):
        values["run_dir"] = os.environ[RUN_DIR_ENV]
    params = from_dict(NotebookParameters, values, where="notebook parameters")
    check_values(params)
    # every path parameter from the project root, as run_dir is (JupyterLab runs from notebooks/)
    params = replace(params, **{name: str(from_root(getattr(params, name))) for name in PATH_PARAMETERS
                                if getattr(params, name) is not None})
    if params.smoke or os.environ.get(SMOKE_ENV) == "1":
        params = replace(params, smoke=True, **{k: v if getattr(params, k) is None else min(v, getattr(params, k))
                                                 for k, v in SMOKE.items()})
    return params


def user_names(namespace: dict[str, Any]) -> list[str]:
    """Names the user assigned plain values to: not IPython's own, private ones, modules, functions or classes."""
    return sorted(name for name, value in namespace.items()
                  if not name.startswith("_") and name not in IPYTHON_NAMES and isinstance(value, PLAIN_VALUES))


def check_names(namespace: dict[str, Any]) -> None:
    unknown = [name for name in user_names(namespace) if name not in NAMES]
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}; known: {list(NAMES)} (variables from cells run "
                          "after this one? restart the kernel and run the notebook from the top)")


def check_values(params: NotebookParameters) -> None:
    if params.profile not in PROFILE_NAMES and not params.profile.endswith((".yaml", ".yml")):
        raise ConfigError(f"notebook parameter profile={params.profile!r}: use {list(PROFILE_NAMES)} or a YAML path")
    if params.profile not in PROFILE_NAMES and not Path(params.profile).is_file():
        raise ConfigError(f"notebook parameter profile={params.profile!r}: no such profile YAML file")
    for name in ("limit", "max_steps", "nproc", "max_new_tokens", "batch_size"):
        value = getattr(params, name)
        if value is not None and value < 1:
            raise ConfigError(f"notebook parameter {name}={value!r}: must be a positive integer")
    if params.seed < 0:
        raise ConfigError(f"notebook parameter seed={params.seed!r}: must be >= 0")
    for name in ("data_root", "train_data_root", "model_path"):
        value = getattr(params, name)
        if value is not None and not from_root(value).exists():
            raise ConfigError(f"notebook parameter {name}={value!r}: path does not exist (relative paths are "
                              f"taken from the project root {project_root()})")
    for name in ("run_dir", "tables_dir", "figures_dir"):
        if getattr(params, name) is not None and not getattr(params, name).strip():
            raise ConfigError(f"notebook parameter {name}={getattr(params, name)!r}: must not be empty")
    if params.reasoning_effort not in (None, "low", "medium", "high"):
        raise ConfigError(f"notebook parameter reasoning_effort={params.reasoning_effort!r}: use low, medium or high")
    unknown = [e for e in params.encoders or [] if e not in encoder_registry()]
    if unknown:
        raise ConfigError(f"notebook parameter encoders={params.encoders!r}: unknown encoder(s) {unknown}; "
                          f"known: {list(encoder_registry())}")
