"""Provenance stamps: what produced a table or figure (profile, commit, config hash, seed, date).

A stamp holds no wall-clock time unless a date is passed in, so the same inputs give byte-identical
outputs. Where a stamp goes:

* Markdown: a trailing ``<!-- medkit provenance: ... -->`` comment;
* LaTeX: a trailing ``% medkit provenance: ...`` line;
* CSV: a sidecar ``<name>.provenance.json`` (kept out of the CSV so plain CSV readers load it unchanged);
* figures: PNG text chunk / PDF ``Subject`` metadata, and a caption line under the figure.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

UNKNOWN_COMMIT = "unknown (not a git checkout)"
NO_DATE = "not recorded"


@dataclass(frozen=True)
class Stamp:
    profile: str
    git_commit: str
    config_hash: str  # sha256 of the canonical JSON of the configs used
    seed: int | None
    date: str | None = None  # passed in by the caller; never read from the clock

    def line(self) -> str:
        return (f"medkit provenance: profile={self.profile} seed={self.seed} git={self.git_commit} "
                f"config_sha256={self.config_hash} date={self.date or NO_DATE}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, non-JSON values (paths) as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_hash(configs: Any) -> str:
    return hashlib.sha256(canonical_json(configs).encode("utf-8")).hexdigest()


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# Notebooks hold narration and calls, not the code that computes a number, and checking them runs the
# nbstripout clean filter (a Python process per notebook: 10-20 s in a fresh clone, where every notebook's
# index entry is unverified), so they are left out of the dirty check.
STATUS_PATHS = (".", ":(exclude)*.ipynb")
UNVERIFIED = "+unverified"  # git status did not answer: never claim a clean tree we could not check


def git_commit(repo: str | Path | None = None) -> str:
    """HEAD of the checkout holding ``repo`` (default: this package), with ``+dirty`` when tracked files
    (notebooks aside) differ from it (the code that ran is then not exactly that commit), ``+unverified``
    when that could not be checked, or :data:`UNKNOWN_COMMIT`."""
    folder = Path(repo) if repo is not None else Path(__file__).resolve().parent
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return UNKNOWN_COMMIT
    changed = _git(folder, "status", "--porcelain", "--untracked-files=no", "--", *STATUS_PATHS)
    if changed is None:
        return commit + UNVERIFIED
    return commit + "+dirty" if changed else commit


def make_stamp(profile: str, configs: Any = None, seed: int | None = None, date: str | None = None,
               repo: str | Path | None = None) -> Stamp:
    """A stamp for outputs built from ``configs`` (any JSON-able value: dicts, lists of config dicts)."""
    return Stamp(profile=profile, git_commit=git_commit(repo), config_hash=config_hash(configs),
                 seed=seed, date=date)
