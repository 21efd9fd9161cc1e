"""A stage's training data: the Table 1 mixture read from a data root (paper), or the synthetic corpus's
tasks (tiny), minus the training items a leakage audit excluded, with a report of what was read.

Paper layout: each Table 1 dataset of the stage's mixture lives in ``<data_root>/<folder>/``, where
``<folder>`` is the dataset's name in lower case with every run of other characters turned into ``_``
(``ROCOv2 (filtered)`` -> ``rocov2_filtered``; ``mixture_layout`` lists them all). A folder holds either

- ``train.jsonl`` (or shards ``train-*.jsonl``) in medkit's conversation schema (``medkit.data.schema``),
  images relative to the folder; read and validated up front, or
- a ``datasets`` dataset saved with ``save_to_disk`` (a ``DatasetDict`` uses its ``train`` split) with
  columns ``id``, ``messages`` and optionally ``images`` (paths relative to the folder, or an ``Image``
  feature) and ``meta``. It stays memory-mapped, so mixtures of millions of rows fit; rows are validated
  against the schema when read, and a bad one fails naming the folder, row and id.

A dataset with nothing to train on counts as missing, with its reason in ``data_report.json``
(``missing_reasons``): ``absent`` (no such files), ``empty`` (files without a record, a saved dataset of
0 rows) or ``emptied`` (every record excluded by the leakage audit or too long). Without
``--skip-missing`` any of them stops the stage before training, naming the dataset and its folder.

Every record is checked before any rank starts (``launch.prepare_stage``), each error naming the file and
line (or folder and row) and the record's id: UTF-8, JSON and the schema when a JSONL file is read;
every image a file inside the dataset's folder or the data root once symlinks are resolved (no
``../../x.png``, no absolute path or symlink leading elsewhere); every image header readable and the
record's length within the limit in the length pass below. That pass already touches every record, so
the checks add no read of the data and stay linear in it: a path resolution and a ``stat`` per image of
a JSONL record as it is parsed (re-checked on every read, ranks included), and for saved datasets the
same checks with the row reads of the length pass (a cached length stands for an unchanged table that
passed them when it was measured). A dry run makes every check but the header and length ones, which
need the processor; it reads a saved dataset's rows without their embedded image bytes.

Samples that cannot fit. A sample may be at most the stage's ``max_length`` tokens (one packed row), or
the model's ``max_position_embeddings`` if that is smaller: positions past it would train silently on
untrained rotary angles. Each record's length is counted the way ``MedGPTOssProcessor.encode`` makes it
(the harmony rendering, each image ``tiles x tokens_per_tile`` with the tile grid chosen from the image
header alone, no pixels decoded), and the stage's ``overlong`` policy applies before training: ``drop``
leaves the record out (counted per dataset as ``overlong`` in ``data_report.json``) or ``error`` stops,
naming the records. Truncation is not offered: the supervised assistant turn ends a conversation, so a
cut keeps the prompt and loses the answer, and a cut inside an image would leave placeholders without
their tiles. The filter is a pure function of the records and the limit, so a resumed stage sees the same
order. Lengths cost one tokenization and one image-header read per record (0.4-0.9 ms on the synthetic
corpus, a few ms for long mid-training records: hours of CPU for 26 M records), so the launcher measures
them once, on every core, into ``<stage out>/lengths/`` (one ``.npy`` per dataset, keyed by its files'
sizes and mtimes and the processor's settings), and the ranks read them from there.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from medkit.chat import render_chat
from medkit.data.dataset import ConversationDataset
from medkit.data.registry import STAGES, TrainingDataset, stage_mixture
from medkit.data.schema import (Sample, SchemaError, checked_image_path, is_blank_jsonl, numbered_samples, read_jsonl,
                                resolve_image_paths, validate_sample)
from medkit.data.curation import open_images
from medkit.model.image_processing import ImageLoadError, image_size, load_image
from medkit.model.processor import EncodedSample, MedGPTOssProcessor

SourceFormat = Literal["jsonl", "arrow", "missing"]
LENGTHS_DIR = "lengths"  # <stage out>/lengths/: the records' lengths, measured by the launcher, read by ranks


class MixtureError(FileNotFoundError):
    """A stage's data that cannot be read as asked (missing datasets, empty mixture)."""


def dataset_folder(name: str) -> str:
    """The folder name of a Table 1 dataset under the data root."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def mixture_layout(stage_code: str) -> dict[str, str]:
    """Table 1 dataset name -> folder, for one stage's mixture (PT, MT or IT)."""
    return {d.name: dataset_folder(d.name) for d in stage_mixture(stage_code)}


@dataclass
class SourceReport:
    name: str
    path: str
    format: SourceFormat
    table1_examples: int | None  # the printed count (None for the tiny profile's synthetic tasks)
    records: int = 0  # records used for training
    excluded: int = 0  # records dropped by the leakage exclusion
    overlong: int = 0  # records longer than the length limit, left out (overlong: drop)
    longest: int | None = None  # tokens of the longest record read (None: lengths not measured)
    missing_reason: str | None = None  # why nothing of it trains: "absent: ...", "empty: ..." or "emptied: ..."
    weight: float = 1.0  # draws of each record per epoch (a synthetic task's training.task_weights)
    samples: int | None = None  # draws per epoch: records x weight (None: every record once)

    @property
    def drawn(self) -> int:
        return self.records if self.samples is None else self.samples


@dataclass
class DataReport:
    """What a stage trained on: written to ``<stage out>/data_report.json``."""

    stage: str
    mixture: str
    leakage_report: str | None
    sources: list[SourceReport] = field(default_factory=list)
    length_limit: int | None = None  # tokens a record may have (None: not checked)
    overlong_policy: str | None = None

    @property
    def records(self) -> int:
        return sum(s.records for s in self.sources)

    @property
    def samples(self) -> int:
        """Samples of one epoch: the records, each drawn as many times as its source's weight says."""
        return sum(s.drawn for s in self.sources)

    @property
    def missing(self) -> list[str]:
        """Datasets the stage trains nothing from: absent, empty, or emptied by exclusions and lengths."""
        return [s.name for s in self.sources if s.missing_reason]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "mixture": self.mixture, "leakage_report": self.leakage_report,
                "records": self.records, "samples_per_epoch": self.samples, "excluded": sum(s.excluded for s in self.sources),
                "overlong": sum(s.overlong for s in self.sources), "length_limit": self.length_limit,
                "overlong_policy": self.overlong_policy, "missing": self.missing,
                "missing_reasons": {s.name: s.missing_reason for s in self.sources if s.missing_reason},
                "sources": [asdict(s) for s in self.sources]}


def excluded_ids(leakage_report: str | Path | None) -> set[str]:
    """Training ids a leakage audit excluded (its JSON report, see ``medkit.data.leakage``): for Table 1
    data they are qualified by folder (``qualified_id``), as ``mixture_samples`` gives them to the audit."""
    if leakage_report is None:
        return set()
    path = Path(leakage_report)
    if not path.is_file():
        raise MixtureError(f"leakage report {path} not found")
    try:
        ids = json.loads(path.read_text())["excluded_train_ids"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SchemaError(f"{path}: not a leakage report with 'excluded_train_ids' ({e})") from None
    return set(ids)


def jsonl_files(path: Path) -> list[Path]:
    """A corpus file itself (tiny), or a dataset folder's ``train.jsonl`` / ``train-*.jsonl`` shards."""
    if path.suffix == ".jsonl":
        return [path] if path.is_file() else []
    single = path / "train.jsonl"
    return [single] if single.is_file() else sorted(path.glob("train-*.jsonl"))


def is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file()


def load_train_table(folder: Path):
    """The saved dataset of a folder (a ``DatasetDict``'s ``train`` split), memory-mapped."""
    import datasets

    table = datasets.load_from_disk(str(folder))
    if isinstance(table, datasets.DatasetDict):
        if "train" not in table:
            raise SchemaError(f"{folder}: saved DatasetDict has no 'train' split (splits: {list(table)})")
        table = table["train"]
    return table


def image_roots(folder: Path, data_root: str | Path | None) -> tuple[Path, ...]:
    """The folders a source's images may be in, symlinks resolved: its own (the corpus's, for a task
    file) and the data root. The dataset folder counts on its own so that one linked in from another
    disk still reads the images next to it."""
    own = folder.parent if folder.suffix == ".jsonl" else folder
    roots = {own.resolve()} | ({Path(data_root).resolve()} if data_root is not None else set())
    return tuple(sorted(roots))


class JsonlDataset(ConversationDataset):
    """The records of a source's JSONL files, each knowing its file and line, so that every error about
    a record (an image, its length, in the launcher or in a rank) says where to fix it."""

    def __init__(self, items: list[tuple[Sample, Path]], processor: MedGPTOssProcessor | None,
                 locations: list[tuple[Path, int]]):
        super().__init__(items, processor)
        self.locations = locations  # (file, line) of each item

    @classmethod
    def read(cls, files: list[Path], processor: MedGPTOssProcessor | None, split: str | None,
             allowed: tuple[Path, ...]) -> "JsonlDataset":
        """Every record of ``files`` (of ``split``, if given), validated: schema, and each image a file
        inside the ``allowed`` folders."""
        items, locations = [], []
        for path in files:
            for line_no, sample in numbered_samples(path):
                if split is not None and sample.meta.get("split") != split:
                    continue
                where = f"{path} line {line_no} (id {sample.id!r})"
                for image in resolve_image_paths(sample, path.parent):
                    checked_image_path(image, allowed, where)
                items.append((sample, path.parent))
                locations.append((path, line_no))
        return cls(items, processor, locations)

    def where(self, index: int) -> str:
        path, line_no = self.locations[index]
        return f"{path} line {line_no} (id {self.items[index][0].id!r})"

    def subset(self, indices: Sequence[int]) -> "JsonlDataset":
        return JsonlDataset([self.items[i] for i in indices], self.processor, [self.locations[i] for i in indices])

    def __getitem__(self, index: int) -> EncodedSample:
        try:
            return super().__getitem__(index)
        except ImageLoadError as e:  # names the image and id; the file and line are what one edits
            raise ImageLoadError(f"{self.where(index)}: {e}") from None


class ArrowConversationDataset(Dataset):
    """A ``datasets`` dataset in the conversation schema, read row by row (memory-mapped)."""

    def __init__(self, folder: Path, processor: MedGPTOssProcessor | None, exclude: set[str] = frozenset(),
                 allowed: tuple[Path, ...] | None = None):
        table = load_train_table(folder)
        self.allowed = allowed  # folders image paths must stay in (None: not checked, the leakage audit's read)
        missing = {"id", "messages"} - set(table.column_names)
        if missing:
            raise SchemaError(f"{folder}: dataset lacks column(s) {sorted(missing)} of the conversation schema")
        # raw Arrow rows: an Image feature stays {"bytes", "path"} and is decoded here, with our errors
        self.folder, self.table, self.processor = folder, table.with_format("arrow"), processor
        self.indices: Sequence[int] = range(len(table))  # no per-row list unless rows are excluded
        if exclude:
            self.indices = [i for i, sample_id in enumerate(table["id"]) if sample_id not in exclude]
        self.excluded = len(table) - len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, index: int) -> tuple[Sample, list]:
        """Row ``index`` (after exclusions) as a validated Sample, and its raw image entries."""
        return self.row(self.indices[index])

    def row(self, row_index: int) -> tuple[Sample, list]:
        """Row ``row_index`` of the saved table (before exclusions), validated, with its image entries."""
        row_index = int(row_index)  # a numpy index once over-long rows are filtered out
        row = drop_nulls(self.table[row_index:row_index + 1].to_pylist()[0])
        return self.checked(row_index, row, row.get("images") or [])

    def checked(self, row_index: int, row: dict, entries: list) -> tuple[Sample, list]:
        """A raw row as a Sample, validated against the schema, its image files inside the allowed folders."""
        where = self.where(row_index)
        names = [e if isinstance(e, str) else e.get("path") or f"{where} image {k}" for k, e in enumerate(entries)]
        sample = validate_sample({**row, "images": names}, where)
        if self.allowed is not None:
            for entry, name in zip(entries, names):
                if not (isinstance(entry, dict) and entry.get("bytes")):  # a file, not embedded bytes
                    checked_image_path(self.folder / name, self.allowed, f"{where} (id {sample.id!r})")
        return sample, entries

    def validate_rows(self, batch_size: int = 1024) -> None:
        """Every row checked as ``row`` checks it, a batch at a time and without reading embedded image
        bytes: a dry run's pass over a table of millions of rows (image headers wait for the length pass)."""
        columns = [c for c in self.table.column_names if c != "images"]
        for start in range(0, len(self.table), batch_size):
            batch = self.table[start:start + batch_size]
            entries = (image_entries(batch.column("images")) if "images" in batch.column_names
                       else [[] for _ in range(batch.num_rows)])
            for offset, (row, images) in enumerate(zip(batch.select(columns).to_pylist(), entries)):
                self.checked(start + offset, drop_nulls(row), images)

    def where(self, row_index: int) -> str:
        return f"{self.folder} row {row_index}"

    def image_sizes(self, sample: Sample, entries: list) -> list[tuple[int, int]]:
        """(width, height) of each image from its header: embedded bytes, or files in the folder."""
        return [embedded_image_size(e["bytes"], name, sample.id)
                if isinstance(e, dict) and e.get("bytes") else image_size(self.folder / name, record=sample.id)
                for e, name in zip(entries, sample.images)]

    def images(self, sample: Sample, entries: list) -> list[Image.Image]:
        """Decoded images: embedded bytes, or files relative to the dataset folder."""
        return [load_image(io.BytesIO(e["bytes"]), record=sample.id, name=name)
                if isinstance(e, dict) and e.get("bytes") else load_image(self.folder / name, record=sample.id)
                for e, name in zip(entries, sample.images)]

    def __getitem__(self, index: int) -> EncodedSample:
        sample, entries = self.sample(index)
        try:
            images = self.images(sample, entries)
        except ImageLoadError as e:  # a rank's error names the row to fix, not only the image
            raise ImageLoadError(f"{self.where(self.indices[index])} (id {sample.id!r}): {e}") from None
        return self.processor.encode(sample, self.folder, images=images)

    def row_length(self, row_index: int) -> int:
        """Tokens of row ``row_index`` for training (see ``record_length``); an unreadable image names the row."""
        sample, entries = self.row(row_index)
        try:
            sizes = self.image_sizes(sample, entries)
        except ImageLoadError as e:
            raise ImageLoadError(f"{self.where(row_index)} (id {sample.id!r}): {e}") from None
        return record_length(self.processor, sample, sizes)


def image_entries(column) -> list[list]:
    """Each row's image entries from an Arrow ``images`` column, without copying embedded bytes: paths as
    they are, an ``Image`` feature's struct as ``{"path": ..., "bytes": True or None}`` (all ``row``
    needs to tell an embedded image from a file)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = []
    for chunk in column.chunks:
        counts = pc.fill_null(pc.list_value_length(chunk), 0).to_pylist()
        flat = pc.list_flatten(chunk)
        if pa.types.is_struct(flat.type):
            names = {flat.type.field(i).name for i in range(flat.type.num_fields)}
            paths = flat.field("path").to_pylist() if "path" in names else [None] * len(flat)
            embedded = (pc.fill_null(pc.greater(pc.binary_length(flat.field("bytes")), 0), False).to_pylist()
                        if "bytes" in names else [False] * len(flat))
            values = [{"path": path, "bytes": True if has else None} for path, has in zip(paths, embedded)]
        else:
            values = flat.to_pylist()
        start = 0
        for count in counts:
            rows.append(values[start:start + count])
            start += count
    return rows


def embedded_image_size(data: bytes, name: str, record: str) -> tuple[int, int]:
    """(width, height) of image bytes from the header alone, failing as ``load_image`` does (the pixel
    limit included: a decompression bomb is refused before it is decoded)."""
    return image_size(io.BytesIO(data), record=record, name=name)


def drop_nulls(value: Any) -> Any:
    """Arrow gives every struct field to every row (``None`` where absent); the schema wants them absent."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def read_source(name: str, folder: Path, processor: MedGPTOssProcessor | None, exclude: set[str],
                table1_examples: int | None, split: str | None = None,
                lengths: LengthCheck | None = None, data_root: str | Path | None = None
                ) -> tuple[Dataset | None, SourceReport]:
    """One dataset folder (or, for the tiny profile, one corpus file) as a torch Dataset and its report;
    every record validated (images inside the folder or ``data_root``); with ``lengths``, records longer
    than its limit are left out (or refused) and counted. A source with nothing to train on gives no
    Dataset and says why in ``missing_reason``."""
    report = SourceReport(name, str(folder), source_format(folder), table1_examples)
    report.missing_reason = absence(folder)
    if report.missing_reason:
        return None, report
    allowed = image_roots(folder, data_root)
    files = jsonl_files(folder)
    if files:
        raw = JsonlDataset.read(files, processor, split, allowed)
        if not len(raw):
            report.missing_reason = f"empty: no {split!r} records in {folder}"
            return None, report
        kept = [i for i, (sample, _) in enumerate(raw.items) if sample.id not in exclude]
        report.excluded = len(raw.items) - len(kept)
        if lengths is not None:
            measured = lengths.measure(folder.stem, files, split, len(raw.items), partial(_jsonl_length, raw))
            kept = lengths.apply(measured, kept, report, lambda i: (raw.items[i][0].id, raw.where(i)))
        report.records = len(kept)
        report.missing_reason = emptied_reason(report, len(raw.items), lengths)
        return raw.subset(kept), report
    dataset = ArrowConversationDataset(folder, processor, exclude, allowed)
    if not len(dataset.table):
        report.missing_reason = f"empty: the saved dataset in {folder} has 0 rows"
        return None, report
    report.excluded = dataset.excluded
    if lengths is not None:
        table_files = sorted(p for p in folder.rglob("*") if p.is_file())
        measured = lengths.measure(folder.stem, table_files, split, len(dataset.table), dataset.row_length)
        dataset.indices = lengths.apply(measured, dataset.indices, report,
                                        lambda i: (dataset.row(i)[0].id, dataset.where(i)))
    report.records = len(dataset)
    report.missing_reason = emptied_reason(report, len(dataset.table), lengths)
    return dataset, report


def emptied_reason(report: SourceReport, count: int, lengths: LengthCheck | None) -> str | None:
    """Why a source whose ``count`` records were all left out trains nothing (None while any is left)."""
    if report.records or not count:
        return None
    causes = [f"{report.excluded:,} excluded by the leakage report"] if report.excluded else []
    if report.overlong and lengths is not None:
        causes.append(f"{report.overlong:,} longer than {lengths.limit:,} tokens")
    return f"emptied: all {count:,} records left out ({', '.join(causes)})"


def record_length(processor: MedGPTOssProcessor, sample: Sample, image_sizes: list[tuple[int, int]]) -> int:
    """The tokens ``processor.encode(sample)`` gives for training, from image sizes alone: the same
    harmony rendering, each image ``tile_count x tokens_per_tile`` placeholders."""
    counts = [processor.image_processor.tile_count(w, h) * processor.tokens_per_tile for w, h in image_sizes]
    rendered = render_chat(sample.messages, processor.tokenizer, image_token_counts=counts,
                           date=processor.chat.date, reasoning_effort=processor.chat.reasoning_effort)
    return len(rendered.input_ids)


def _jsonl_length(dataset: JsonlDataset, index: int) -> int:
    sample, root = dataset.items[index]
    try:
        sizes = [image_size(path, record=sample.id) for path in resolve_image_paths(sample, root)]
    except ImageLoadError as e:
        raise ImageLoadError(f"{dataset.where(index)}: {e}") from None
    return record_length(dataset.processor, sample, sizes)


def _arrow_length(dataset: ArrowConversationDataset, row_index: int) -> int:
    return dataset.row_length(row_index)


@dataclass
class LengthCheck:
    """The length limit of a stage's records and what happens to longer ones; lengths are cached in
    ``cache_dir`` and measured on ``workers`` processes."""

    limit: int
    policy: Literal["drop", "error"]
    processor: MedGPTOssProcessor
    cache_dir: Path | None = None
    workers: int = 1
    refused: list[str] = field(default_factory=list)  # "<folder>/<id> (N tokens) at <file> line <n>" (policy error)

    def measure(self, name: str, files: list[Path], split: str | None, count: int,
                length_of: Callable[[int], int]) -> np.ndarray:
        """Tokens of each of a source's ``count`` records (before exclusions), from the cache if it was
        measured with these files and this processor."""
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{name}-{lengths_key(files, split, self.processor)}.npy"
            if path.is_file():
                cached = np.load(path)
                if len(cached) == count:
                    return cached
        lengths = measure_lengths(length_of, count, self.workers)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial_file = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
            np.save(partial_file, lengths)
            os.replace(partial_file, path)  # atomic: ranks or nodes measuring at once never read half a file
        return lengths

    def apply(self, lengths: np.ndarray, kept: Sequence[int], report: SourceReport,
              record_of: Callable[[int], tuple[str, str]]) -> Sequence[int]:
        """``kept`` (record indices, in order) without the records over the limit; counts them, and under
        policy "error" notes the first few, by id and by where they are (``record_of``: (id, file and
        line or folder and row)), for the error ``stage_dataset`` raises."""
        kept_lengths = lengths[np.asarray(kept, dtype=np.int64)] if len(kept) else np.zeros(0, dtype=np.int64)
        over = kept_lengths > self.limit
        report.longest = int(kept_lengths.max()) if len(kept_lengths) else 0
        report.overlong = int(over.sum())
        if not report.overlong:
            return kept
        if self.policy == "error":
            folder = Path(report.path).name
            for i in np.asarray(kept)[over][:5]:
                sample_id, where = record_of(int(i))
                self.refused.append(f"{folder}/{sample_id} ({int(lengths[i]):,} tokens) at {where}")
        return np.asarray(kept, dtype=np.int64)[~over]


def lengths_key(files: list[Path], split: str | None, processor: MedGPTOssProcessor) -> str:
    """What a source's lengths depend on: its files (name, size, mtime), the split, and everything of the
    processor that changes a rendering (tokenizer, tiling, tokens per tile, chat settings)."""
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    tokenizer = processor.tokenizer
    settings = {"files": stats, "split": split, "tokenizer": [tokenizer.name_or_path, len(tokenizer)],
                "tiles": asdict(processor.image_processor), "tokens_per_tile": processor.tokens_per_tile,
                "chat": asdict(processor.chat)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


_LENGTH_OF: Callable[[int], int] | None = None  # what forked workers measure (inherited, never pickled)
LENGTH_CHUNK = 4096


def measure_lengths(length_of: Callable[[int], int], count: int, workers: int = 1,
                    chunk: int = LENGTH_CHUNK) -> np.ndarray:
    """``length_of(i)`` for i in 0..count-1; on ``workers`` forked processes, ``chunk`` records at a time."""
    global _LENGTH_OF
    if workers <= 1 or count <= chunk:
        return np.fromiter((length_of(i) for i in range(count)), dtype=np.int64, count=count)
    _LENGTH_OF = length_of
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_measure_range, [(start, min(start + chunk, count)) for start in range(0, count, chunk)])
    finally:
        _LENGTH_OF = None
    return np.concatenate(parts)


def _measure_range(bounds: tuple[int, int]) -> np.ndarray:
    return np.array([_LENGTH_OF(i) for i in range(*bounds)], dtype=np.int64)


def stage_dataset(stage, processor: MedGPTOssProcessor | None, *, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False, max_position_embeddings: int | None = None,
                  lengths_dir: str | Path | None = None, workers: int = 1) -> tuple[Dataset, DataReport]:
    """The training set of ``stage`` (a ``StageConfig``) and a report of what went into it.

    With ``data_root``: the stage's Table 1 mixture (see the module docstring); a dataset that is not
    there is an error naming every missing folder, unless ``skip_missing``, which trains on the rest and
    lists the missing ones in the report. Without it: the stage's ``synthetic_tasks`` from ``corpus``.
    With ``max_position_embeddings`` (the model's), records longer than the stage's limit are handled by
    its ``overlong`` policy, lengths cached under ``lengths_dir`` and measured on ``workers`` processes.
    """
    sources = check_stage_sources(stage, corpus=corpus, data_root=data_root, leakage_report=leakage_report,
                                  skip_missing=skip_missing)
    exclude = excluded_ids(leakage_report)
    report = DataReport(stage.name, stage.mixture if data_root else "synthetic",
                        str(leakage_report) if leakage_report else None)
    lengths = None
    if max_position_embeddings is not None:
        report.length_limit = min(stage.max_length, max_position_embeddings)
        report.overlong_policy = stage.overlong
        lengths = LengthCheck(report.length_limit, stage.overlong, processor,
                              Path(lengths_dir) if lengths_dir else None, workers)
    parts = []
    for name, path, examples, split in sources:
        dataset, source = read_stage_source(stage, name, path, processor, _excluded_here(exclude, path, data_root),
                                            examples, split, lengths, data_root)
        report.sources.append(source)
        if dataset is not None and len(dataset):
            parts.append(dataset)
    if lengths is not None and lengths.refused:
        raise MixtureError(
            f"stage {stage.name}: records longer than {report.length_limit:,} tokens (overlong: error in the "
            f"stage config), e.g. {'; '.join(lengths.refused[:5])}; set overlong: drop to leave them out")
    refuse_left_out_sources(stage, report, skip_missing=skip_missing and data_root is not None)
    if not parts:
        raise MixtureError(f"stage {stage.name}: no training records left (report: {report.to_dict()})")
    return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), report


def read_stage_source(stage, name: str, path: Path, processor, exclude: set[str], examples, split,
                      lengths=None, data_root=None):
    """``read_source`` with a synthetic task's weight applied (training and the dry run read alike)."""
    dataset, source = read_source(name, path, processor, exclude, examples, split, lengths, data_root)
    if dataset is not None and data_root is None:
        dataset = weighted(dataset, source, stage.synthetic_weights.get(name, 1.0))
    return dataset, source


def weighted_indices(count: int, weight: float, key: str) -> list[int]:
    """Indices 0..count-1 drawn ``weight`` times each: every index floor(weight) times, then a seeded
    share of the rest (its order and choice a pure function of ``key``, the task, so a resumed stage and
    a dry run see the same samples). The sampler shuffles them with the rest of the stage's data."""
    whole, share = int(weight), weight - int(weight)
    indices = list(range(count)) * whole
    extra = round(share * count)
    if extra:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
        indices += sorted(rng.permutation(count)[:extra].tolist())
    return indices


def weighted(dataset: JsonlDataset, source: SourceReport, weight: float) -> JsonlDataset:
    """A synthetic task's records, each drawn ``weight`` times per epoch (``weighted_indices``)."""
    if weight == 1.0:
        return dataset
    indices = weighted_indices(len(dataset), weight, source.name)
    if not indices:
        raise MixtureError(f"task {source.name}: weight {weight:g} leaves none of its {len(dataset):,} records")
    source.weight, source.samples = weight, len(indices)
    return dataset.subset(indices)


def refuse_left_out_sources(stage, report: DataReport, *, skip_missing: bool) -> None:
    """A dataset that turned out to hold nothing to train on once read (every record excluded or too long,
    no record of the split) stops the stage like an absent one, unless ``skip_missing``: the mixture
    would silently not be the one asked for. (Absent and empty ones were refused by
    ``check_stage_sources`` already, under the same rule.)"""
    left_out = [s for s in report.sources if s.missing_reason]
    if left_out and not skip_missing:
        raise MixtureError(left_out_message(stage, report, left_out))


def left_out_message(stage, report: DataReport, left_out: list[SourceReport]) -> str:
    where = "; ".join(f"{s.name} at {s.path} ({s.missing_reason})" for s in left_out)
    hint = " (--skip-missing trains on the other datasets)" if report.mixture != "synthetic" else ""
    return f"stage {stage.name}: nothing to train on from {where}{hint}"


def stage_record_counts(stage, *, corpus: str | Path | None = None, data_root: str | Path | None = None,
                        leakage_report: str | Path | None = None) -> DataReport:
    """Records per source as the stage would read them (leakage exclusions applied), with missing sources
    reported rather than refused (a dry run). JSONL records are validated as for training (a bad one
    raises, naming file, line and id), their images checked to be files inside the data root; no image
    is opened and no tokenizer is needed, so headers and lengths wait for ``prepare_stage``. The rows of
    saved datasets are validated the same way, without reading their embedded image bytes."""
    exclude = excluded_ids(leakage_report)
    report = DataReport(stage.name, stage.mixture if data_root else "synthetic",
                        str(leakage_report) if leakage_report else None)
    for name, path, examples, split in _sources(stage, corpus, data_root):
        dataset, source = read_stage_source(stage, name, path, None, _excluded_here(exclude, path, data_root),
                                            examples, split, data_root=data_root)
        if isinstance(dataset, ArrowConversationDataset):
            dataset.validate_rows()  # JSONL records were validated as they were read
        report.sources.append(source)
    return report


def _excluded_here(exclude: set[str], path: Path, data_root) -> set[str]:
    """The excluded ids of one source: Table 1 ids are qualified by their folder (``qualified_id``)."""
    if data_root is None:
        return exclude
    return {i.split("/", 1)[1] for i in exclude if i.startswith(qualified_id(path.name, ""))}


def check_stage_sources(stage, *, corpus: str | Path | None = None, data_root: str | Path | None = None,
                        leakage_report: str | Path | None = None, skip_missing: bool = False) -> list[tuple]:
    """The stage's sources as (name, path, Table 1 examples, split), checked before anything is trained:
    exactly one of ``corpus`` / ``data_root``, a readable leakage report, and every dataset present
    (or, with ``skip_missing``, at least one)."""
    if (corpus is None) == (data_root is None):
        raise ValueError("stage data: give exactly one of corpus (synthetic tasks) or data_root (Table 1 mixture)")
    if data_root is not None and not Path(data_root).is_dir():
        raise MixtureError(f"data root {data_root} is not a folder")
    if data_root is not None and stage.synthetic_weights:
        # Table 1 fixes each dataset's examples; weights that silently did nothing would misreport the run
        raise MixtureError(f"stage {stage.name}: training.task_weights.{stage.name} "
                           f"({', '.join(sorted(stage.synthetic_weights))}) weights synthetic tasks, but this stage "
                           f"reads the Table 1 mixture under {data_root}; remove them from the profile")
    excluded_ids(leakage_report)
    sources = _sources(stage, corpus, data_root)
    missing = [(name, path, why) for name, path, _, _ in sources if (why := absence(path))]
    if missing and (not (skip_missing and data_root) or len(missing) == len(sources)):
        absent = "; ".join(f"{name} at {path}" for name, path, why in missing if why.startswith("absent"))
        empty = "; ".join(f"{name} at {path} ({why})" for name, path, why in missing if not why.startswith("absent"))
        parts = ([f"no train.jsonl or saved dataset for {absent}"] if absent else []) + \
                ([f"no records in {empty}"] if empty else [])
        hint = " (--skip-missing trains on the datasets present)" if data_root and len(missing) < len(sources) else ""
        raise MixtureError(f"stage {stage.name}: {'; '.join(parts)}{hint}")
    return sources


def saved_dataset_is_empty(folder: Path) -> bool:
    """Whether a saved dataset (its ``train`` split) has no Arrow file: ``save_to_disk`` writes an empty
    dataset so, and ``load_from_disk`` then fails on it (an IndexError). Read from its state.json alone;
    an Arrow file of 0 rows is found when the table is read (``read_source``)."""
    split = folder / "train" if (folder / "dataset_dict.json").is_file() else folder
    try:
        state = json.loads((split / "state.json").read_text())
    except (OSError, ValueError):
        return False  # no train split, or not readable: reading the dataset names the problem
    return not state.get("_data_files")


def source_format(path: Path) -> SourceFormat:
    if jsonl_files(path):
        return "jsonl"
    return "arrow" if path.suffix != ".jsonl" and is_saved_dataset(path) else "missing"


def absence(path: Path) -> str | None:
    """Why a source has no record to train on, known before its records are read: ``absent`` (no
    train.jsonl, shards or saved dataset) or ``empty`` (JSONL files holding no record, a saved dataset
    of 0 rows); None when it has some. Cheap: a JSONL file is read up to its first record."""
    files = jsonl_files(path)
    if files:
        if not all(is_blank_jsonl(f) for f in files):
            return None
        if len(files) == 1:
            return f"empty: {files[0]} holds no records"
        return f"empty: none of the {len(files)} train-*.jsonl shards in {path} holds a record"
    if source_format(path) == "arrow":
        return f"empty: the saved dataset in {path} has 0 rows" if saved_dataset_is_empty(path) else None
    return "absent: no such file" if path.suffix == ".jsonl" else "absent: no train.jsonl or saved dataset"


def _sources(stage, corpus, data_root) -> list[tuple[str, Path, int | None, str | None]]:
    if data_root is not None:
        mixture: list[TrainingDataset] = stage_mixture(stage.mixture)
        return [(d.name, Path(data_root) / dataset_folder(d.name), d.examples, None) for d in mixture]
    return [(task, Path(corpus) / f"{task}.jsonl", None, "train") for task in stage.synthetic_tasks]


ImagesOf = Callable[[Sample], list[Image.Image]]


def qualified_id(folder: str, sample_id: str) -> str:
    """A record's id across the mixture (ids are unique only within a dataset): ``<folder>/<id>``."""
    return f"{folder}/{sample_id}"


def mixture_samples(data_root: str | Path, stages: tuple[str, ...] = STAGES) -> tuple[list[Sample], ImagesOf]:
    """Every record of the Table 1 datasets present under ``data_root`` in ``stages``, for the leakage audit,
    with ids qualified by their folder (``qualified_id``), and a function giving a record's decoded images
    (read when asked for, so embedded image bytes are not all held in memory)."""
    samples, loaders = [], {}
    for code in stages:
        for d in stage_mixture(code):
            folder = Path(data_root) / dataset_folder(d.name)
            shards = jsonl_files(folder)
            if shards:
                for shard in shards:
                    for sample in read_jsonl(shard):
                        samples.append(replace(sample, id=qualified_id(folder.name, sample.id)))
                        loaders[id(samples[-1])] = partial(open_images, root=shard.parent)
            elif is_saved_dataset(folder):
                table = ArrowConversationDataset(folder, None)
                for index in range(len(table)):
                    sample, _ = table.sample(index)
                    samples.append(replace(sample, id=qualified_id(folder.name, sample.id)))
                    loaders[id(samples[-1])] = partial(_row_images, table, index)
    return samples, lambda sample: loaders[id(sample)](sample)


def _row_images(table: ArrowConversationDataset, index: int, sample: Sample) -> list[Image.Image]:
    return table.images(sample, table.sample(index)[1])
