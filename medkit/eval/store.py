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
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
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


class PredictionStore:
    """``<root>/<benchmark>/<key hash>.jsonl`` plus ``<key hash>.key.json``."""

    def __init__(self, root: str | Path, benchmark: str, key: dict[str, Any], rank: int | None = None):
        self.key = key
        self.key_hash = canonical_hash(key)
        self.folder = Path(root) / benchmark
        self.path = self.folder / (f"{self.key_hash}.jsonl" if rank is None else f"{self.key_hash}.rank{rank}.jsonl")
        self.key_path = self.folder / f"{self.key_hash}.key.json"

    def shard(self, rank: int) -> "PredictionStore":
        """The file data-parallel rank ``rank`` appends to (folded in by :meth:`merge_shards`)."""
        return PredictionStore(self.folder.parent, self.folder.name, self.key, rank=rank)

    def shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.key_hash}.rank*.jsonl"))

    def stored_ids(self) -> set[str]:
        """Ids held by the main file and any rank shards, read without changing anything (a dry run)."""
        ids = {prediction.id for _, prediction in read_lines(self.path)}
        for shard in self.shard_paths():
            ids.update(prediction.id for _, prediction in read_lines(shard))
        return ids

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
            if json.loads(self.key_path.read_text()) != json.loads(json.dumps(self.key)):
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
        with self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def _cut_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def read_lines(path: Path) -> Iterable[tuple[int, Prediction]]:
    """(line number, prediction) of a store file; a torn last line (a kill mid-write) is left out."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a line torn by a kill; open() cuts it off before appending
            yield number, Prediction(**json.loads(line))


def check_prompt(stored: Prediction, prompt_hash: str, where: str) -> None:
    """The same id under the same key must have been generated from the same prompt."""
    if stored.prompt_hash != prompt_hash:
        raise StoreError(f"{where}: item {stored.id!r} was stored with prompt {stored.prompt_hash} but is now "
                         f"{prompt_hash}; the benchmark data or prompt changed - use a fresh output folder")


def prediction_from(completion: Completion, prompt_hash: str, parsed: str | None = None,
                    correct: bool | None = None) -> Prediction:
    return Prediction(completion.id, prompt_hash, completion.raw, completion.final, parsed, correct)
