"""Append-only per-sample prediction store, keyed by everything that changes a model's output.

One JSONL file per (benchmark, key): the key is the hash of the model (id + revision / weights
fingerprint), the prompt template, the image preprocessing and the decode settings, written beside the
file in full. Each line is one item: id, prompt hash, raw output, final-channel answer, and the parsed
answer and correctness as scored when the line was generated (strict letter and bool for multiple
choice; null for free text, and in lines written before these fields existed). Lines are appended and
flushed batch by batch, so a killed run loses at most the batch in flight; on reopening, a torn last
line is cut off and finished ids are skipped. Scoring reads the store and never regenerates; rescoring
recomputes everything from ``raw``/``final`` and leaves the stored ``parsed``/``correct`` as they were.

Data-parallel ranks (``medkit eval --nproc N``) never write one file together: rank r appends to its own
shard ``<key hash>.rank<r>.jsonl``, and the parent folds every shard into the main file when the ranks
are done, and again when the store is next opened, so a run killed mid-way resumes with any N.

One writer per store: a run holds an exclusive ``flock`` on ``<key hash>.lock`` from before it opens the
store until its results are written (:class:`StoreLock`); a second run on the same store fails at once,
naming the holder, and writes nothing. Every line is checked when read: one that is not a prediction
(bad JSON, bad UTF-8, missing or mistyped fields) is an error naming the file and line and the repair.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from medkit.eval.generation import Completion


class StoreError(ValueError):
    """A store that cannot be used as asked (mismatched key or prompt, existing run without --resume)."""


def canonical_hash(value: Any, length: int = 16) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Prediction:
    id: str
    prompt_hash: str
    raw: str
    final: str
    parsed: str | None = None  # strict letter at generation time (multiple choice); None for free text
    correct: bool | None = None  # at generation time (multiple choice); None for free text

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


# A stored line's fields and the JSON types each may hold (parsed/correct came later: may be absent).
LINE_TYPES = {"id": (str,), "prompt_hash": (str,), "raw": (str,), "final": (str,),
              "parsed": (str, type(None)), "correct": (bool, type(None))}
REQUIRED_FIELDS = ("id", "prompt_hash", "raw", "final")
assert set(LINE_TYPES) == {f.name for f in fields(Prediction)}


class PredictionStore:
    """``<root>/<benchmark>/<key hash>.jsonl`` plus ``<key hash>.key.json``."""

    def __init__(self, root: str | Path, benchmark: str, key: dict[str, Any], rank: int | None = None):
        self.key = key
        self.key_hash = canonical_hash(key)
        self.folder = Path(root) / benchmark
        self.path = self.folder / (f"{self.key_hash}.jsonl" if rank is None else f"{self.key_hash}.rank{rank}.jsonl")
        self.key_path = self.folder / f"{self.key_hash}.key.json"

    @property
    def lock_path(self) -> Path:
        return self.folder / f"{self.key_hash}.lock"

    def lock(self) -> "StoreLock":
        """This store's writer lock, taken (fails at once if another run holds it)."""
        return StoreLock(self.lock_path).acquire()

    def shard(self, rank: int) -> "PredictionStore":
        """The file data-parallel rank ``rank`` appends to (folded in by :meth:`merge_shards`)."""
        return PredictionStore(self.folder.parent, self.folder.name, self.key, rank=rank)

    def shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.key_hash}.rank*.jsonl"))

    def peek(self) -> dict[str, Prediction]:
        """The predictions held by the main file and any rank shards, read without changing anything
        (a dry run)."""
        found = {prediction.id: prediction for _, prediction in read_lines(self.path)}
        for shard in self.shard_paths():
            found.update((prediction.id, prediction) for _, prediction in read_lines(shard))
        return found

    def merge_shards(self) -> int:
        """Append the ranks' shards to the main file and delete them; returns the predictions added.

        A torn last line of a shard (a killed rank) is dropped; an id in two files must hold the same
        prediction (a rank rerun over an item is harmless), a different one is an error naming both."""
        done = self.read()
        added: list[Prediction] = []
        for shard in self.shard_paths():
            for number, prediction in read_lines(shard):
                earlier = done.get(prediction.id)
                if earlier is None:
                    done[prediction.id] = prediction
                    added.append(prediction)
                elif earlier != prediction:
                    raise StoreError(f"{shard} line {number}: id {prediction.id!r} differs from the prediction "
                                     f"already stored for it in {self.path}")
        if added:
            self.append(added)
        for shard in self.shard_paths():
            shard.unlink()
        return len(added)

    def open(self, *, resume: bool) -> dict[str, Prediction]:
        """Prepare for writing; return the predictions already stored (empty for a fresh store).

        An existing non-empty store is only continued with ``resume``, so two runs never mix by accident.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.key_path.is_file():
            if read_key(self.key_path) != json.loads(json.dumps(self.key)):
                raise StoreError(f"{self.key_path}: stored key differs from this run's key (hash collision?)")
        else:
            tmp = self.key_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.key, indent=2, sort_keys=True))
            tmp.replace(self.key_path)
        self._cut_torn_tail()
        self.merge_shards()
        done = self.read()
        if done and not resume:
            raise StoreError(f"{self.path} already holds {len(done)} predictions for this model and settings; "
                             "pass --resume to continue it (or delete the file to start over)")
        return done

    def read(self) -> dict[str, Prediction]:
        predictions: dict[str, Prediction] = {}
        for number, prediction in read_lines(self.path):
            if prediction.id in predictions:
                raise StoreError(f"{self.path} line {number}: id {prediction.id!r} stored twice")
            predictions[prediction.id] = prediction
        return predictions

    def append(self, predictions: Iterable[Prediction]) -> None:
        lines = "".join(p.to_json() + "\n" for p in predictions)
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full or read-only disk: name the store; a torn line is cut on resume
            raise OSError(e.errno, f"{e.strerror} (appending to the prediction store; what was stored before "
                          "is kept: free the disk and rerun with --resume)", str(self.path)) from None

    def _cut_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def read_key(path: Path) -> Any:
    """A store's key file (what its predictions were generated with); a damaged one names itself."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: damaged key file ({e}); it records what the predictions beside it were "
                         f"generated with, so they cannot be trusted: delete {path.stem.removesuffix('.key')}.* "
                         "in that folder to start this store over") from None


def read_lines(path: Path) -> Iterable[tuple[int, Prediction]]:
    """(line number, prediction) of a store file; a torn last line (a kill mid-write) is left out, any
    other line that is not a prediction is an error naming the file and line."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break  # a line torn by a kill; open() cuts it off before appending
            yield number, parse_line(line, path, number)


def parse_line(line: bytes, path: Path, number: int) -> Prediction:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise corrupt_line(path, number, f"bytes that are not UTF-8 at column {e.start + 1}") from None
    except json.JSONDecodeError as e:
        raise corrupt_line(path, number, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise corrupt_line(path, number, f"a JSON {type(record).__name__}, not a prediction object")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    unknown = sorted(set(record) - set(LINE_TYPES))
    mistyped = [name for name, kinds in LINE_TYPES.items() if name in record and not isinstance(record[name], kinds)]
    if missing or unknown or mistyped:
        problems = [f"missing {missing}" if missing else "", f"unknown fields {unknown}" if unknown else "",
                    f"mistyped {mistyped}" if mistyped else ""]
        raise corrupt_line(path, number, "a prediction with " + ", ".join(p for p in problems if p))
    return Prediction(**record)


def corrupt_line(path: Path, number: int, problem: str) -> StoreError:
    return StoreError(f"{path} line {number}: {problem}; medkit never writes such a line (a hand edit or a "
                      f"damaged disk?). Delete that line and rerun with --resume to regenerate its item "
                      f"(or delete {path.name} to regenerate them all)")


class StoreLock:
    """An exclusive, non-blocking ``flock`` on a store's lock file, released on :meth:`release` or when
    the process ends (even by SIGKILL, so a killed run never leaves a stale lock behind). The file holds
    the holder's pid, host and start time, for the second writer's error."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise StoreError(f"another medkit eval ({holder}) is writing the prediction store "
                             f"{self.path.with_suffix('.jsonl')}; wait for it to finish (two writers would "
                             "store every item twice), or use another --out") from None
        os.ftruncate(fd, 0)
        since = dt.datetime.now().isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_prompt(stored: Prediction, prompt_hash: str, where: str) -> None:
    """The same id under the same key must have been generated from the same prompt."""
    if stored.prompt_hash != prompt_hash:
        raise StoreError(f"{where}: item {stored.id!r} was stored with prompt {stored.prompt_hash} but is now "
                         f"{prompt_hash}; the benchmark data or prompt changed - use a fresh output folder")


def check_prompts(current: dict[str, str], stored: dict[str, Prediction], where: str) -> None:
    """Every stored prediction of a current item (id -> prompt hash now) must come from that same prompt:
    a release edited since (MedQA ids are row numbers: one deleted row moves every later question) would
    otherwise be scored against other questions' outputs. Names the changed items."""
    changed = [i for i, h in current.items() if i in stored and stored[i].prompt_hash != h]
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise StoreError(f"{where}: {len(changed)} stored prediction(s) were generated from a prompt that has "
                         f"changed since ({shown}): the benchmark data or its prompt changed. Evaluate into a "
                         "fresh --out, or delete this store file to regenerate every item")


def prediction_from(completion: Completion, prompt_hash: str, parsed: str | None = None,
                    correct: bool | None = None) -> Prediction:
    return Prediction(completion.id, prompt_hash, completion.raw, completion.final, parsed, correct)
