"""All-or-nothing output folders: render into staging, swap in only when every output was written.

A tables run writes tens of files into ``paper_tables/`` and ``figures/``. Written in place, a failure half
way (a bad input, a full disk) would leave new tables beside old ones from another run, and a run that
produces fewer outputs (no ablation results this time) would leave the previous run's files looking
current. So :func:`staged_outputs` hands out a staging folder beside each target (same file system, so
each move is a rename), and only when the body returned are the outputs moved in:

* files of the previous medkit run that this run does not produce are removed; "ours" are the names in
  the folder's manifest (:data:`MANIFEST`, written with every run), or, in a folder without one (written
  by a medkit that kept none), the names medkit writes (:data:`KNOWN_OUTPUT`);
* anything else in the folder (a README.md, .gitkeep, a user's notes, the notebooks' loss curves) is
  never touched;
* on any failure, before or during the swap, every move already made is undone, so the target folders
  are as they were, and the staging folder is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MANIFEST = ".medkit-outputs.json"
# what a medkit tables run writes, for folders from before the manifest: Tables 1-6 and the value tables
# (+ their comparison with the paper) in four formats, Figures 1 and 2 as PNG and PDF
KNOWN_OUTPUT = re.compile(r"(table[1-6]|figure[12]_values)(_vs_paper)?\.(md|tex|csv|provenance\.json)"
                          r"|figure[12]\.(png|pdf)")
STAGING_PREFIX = ".medkit-staging-"


class OutputFolderError(ValueError):
    """An output folder that cannot take the outputs (e.g. the path is a file)."""


class Moves:
    """Renames done so far, so a failure can put every file back where it was."""

    def __init__(self) -> None:
        self.done: list[tuple[Path, Path]] = []
        self.created: list[Path] = []  # folders made for the outputs, removed again after a failure

    def move(self, source: Path, target: Path) -> None:
        os.replace(source, target)
        self.done.append((source, target))

    def make_folder(self, folder: Path) -> None:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self.created = missing + self.created  # deepest first: the order rmdir needs

    def undo_moves(self) -> None:
        for source, target in reversed(self.done):
            try:
                os.replace(target, source)
            except OSError:
                pass  # best effort: the error that made us undo is the one to report
        self.done.clear()

    def remove_created(self) -> None:
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: someone else put a file there meanwhile, keep it


def previous_outputs(folder: Path) -> set[str]:
    """Names in ``folder`` that an earlier medkit run wrote: its manifest's, else the known output names."""
    listed = None
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no manifest, or one we cannot trust: fall back to the names medkit writes
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        # a bare name only: a manifest must never make us touch anything outside the folder
        return {n for n in listed if n == Path(n).name and n not in ("", ".", "..", MANIFEST)}
    return {p.name for p in folder.iterdir() if KNOWN_OUTPUT.fullmatch(p.name)} if folder.is_dir() else set()


def manifest_text(names: list[str]) -> str:
    return json.dumps({"written_by": "medkit tables", "note": "the next medkit tables run replaces or "
                       "removes exactly these files; others in this folder are never touched",
                       "files": sorted(names)}, indent=2) + "\n"


def _check_target(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"output folder {folder} is a file, not a folder")


def _swap_in(staged: Path, target: Path, aside: Path, moves: Moves) -> None:
    """Move the previous outputs of ``target`` aside (into the staging area) and the staged files in."""
    produced = sorted(p.name for p in staged.iterdir())
    (staged / MANIFEST).write_text(manifest_text(produced), encoding="utf-8")
    replaced = previous_outputs(target) | set(produced) | {MANIFEST}
    moves.make_folder(target)
    for name in sorted(replaced):
        if (target / name).is_file() or (target / name).is_symlink():
            moves.move(target / name, aside / name)
    for name in [*produced, MANIFEST]:
        moves.move(staged / name, target / name)


@contextmanager
def staged_outputs(*targets: Path) -> Iterator[list[Path]]:
    """A staging folder per target (the same one for targets that are one folder); when the body returns,
    the staged files replace the targets' previous outputs, all or nothing (see the module docstring)."""
    targets = tuple(Path(t) for t in targets)
    for target in targets:
        _check_target(target)
    keys = [t.resolve() for t in targets]
    areas: dict[Path, Path] = {}
    moves = Moves()
    swapped = False
    try:
        for key in dict.fromkeys(keys):
            moves.make_folder(key.parent)
            areas[key] = Path(tempfile.mkdtemp(prefix=f".{key.name}{STAGING_PREFIX}", dir=key.parent))
            (areas[key] / "new").mkdir()
            (areas[key] / "old").mkdir()
        yield [areas[key] / "new" for key in keys]
        for key, area in areas.items():
            _swap_in(area / "new", key, area / "old", moves)
        swapped = True
    finally:
        if not swapped:
            moves.undo_moves()
        for area in areas.values():  # the unused new files, or after a swap the previous ones moved aside
            shutil.rmtree(area, ignore_errors=True)
        if not swapped:
            moves.remove_created()
