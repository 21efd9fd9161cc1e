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
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, Dataset

from medkit.chat import render_chat
from medkit.data.dataset import ConversationDataset
from medkit.data.registry import STAGES, TrainingDataset, stage_mixture
from medkit.data.schema import Sample, SchemaError, read_jsonl, resolve_image_paths, validate_sample
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
    def missing(self) -> list[str]:
        return [s.name for s in self.sources if s.format == "missing"]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "mixture": self.mixture, "leakage_report": self.leakage_report,
                "records": self.records, "excluded": sum(s.excluded for s in self.sources),
                "overlong": sum(s.overlong for s in self.sources), "length_limit": self.length_limit,
                "overlong_policy": self.overlong_policy, "missing": self.missing,
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


class ArrowConversationDataset(Dataset):
    """A ``datasets`` dataset in the conversation schema, read row by row (memory-mapped)."""

    def __init__(self, folder: Path, processor: MedGPTOssProcessor | None, exclude: set[str] = frozenset()):
        import datasets

        table = datasets.load_from_disk(str(folder))
        if isinstance(table, datasets.DatasetDict):
            if "train" not in table:
                raise SchemaError(f"{folder}: saved DatasetDict has no 'train' split (splits: {list(table)})")
            table = table["train"]
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
        where = f"{self.folder} row {row_index}"
        entries = row.get("images") or []
        names = [e if isinstance(e, str) else e.get("path") or f"{where} image {k}" for k, e in enumerate(entries)]
        return validate_sample({**row, "images": names}, where), entries

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
        return self.processor.encode(sample, self.folder, images=self.images(sample, entries))


def embedded_image_size(data: bytes, name: str, record: str) -> tuple[int, int]:
    """(width, height) of image bytes from the header alone, failing as ``load_image`` does."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{name} (record {record}): corrupt or unreadable image ({e})") from None


def drop_nulls(value: Any) -> Any:
    """Arrow gives every struct field to every row (``None`` where absent); the schema wants them absent."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def read_source(name: str, folder: Path, processor: MedGPTOssProcessor | None, exclude: set[str],
                table1_examples: int | None, split: str | None = None,
                lengths: LengthCheck | None = None) -> tuple[Dataset | None, SourceReport]:
    """One dataset folder (or, for the tiny profile, one corpus file) as a torch Dataset and its report;
    with ``lengths``, records longer than its limit are left out (or refused) and counted."""
    report = SourceReport(name, str(folder), "missing", table1_examples)
    if not source_present(folder):
        return None, report
    files = jsonl_files(folder)
    if files:
        raw = ConversationDataset.from_jsonl(files, processor, split=split)
        kept = [i for i, (sample, _) in enumerate(raw.items) if sample.id not in exclude]
        report.format, report.excluded = "jsonl", len(raw.items) - len(kept)
        if lengths is not None:
            measured = lengths.measure(folder.stem, files, split, len(raw.items), partial(_jsonl_length, raw))
            kept = lengths.apply(measured, kept, report, lambda i: raw.items[i][0].id)
        report.records = len(kept)
        return ConversationDataset([raw.items[i] for i in kept], processor), report
    dataset = ArrowConversationDataset(folder, processor, exclude)
    report.format, report.excluded = "arrow", dataset.excluded
    if lengths is not None:
        table_files = sorted(p for p in folder.rglob("*") if p.is_file())
        measured = lengths.measure(folder.stem, table_files, split, len(dataset.table), partial(_arrow_length, dataset))
        dataset.indices = lengths.apply(measured, dataset.indices, report, lambda i: dataset.row(i)[0].id)
    report.records = len(dataset)
    return dataset, report


def record_length(processor: MedGPTOssProcessor, sample: Sample, image_sizes: list[tuple[int, int]]) -> int:
    """The tokens ``processor.encode(sample)`` gives for training, from image sizes alone: the same
    harmony rendering, each image ``tile_count x tokens_per_tile`` placeholders."""
    counts = [processor.image_processor.tile_count(w, h) * processor.tokens_per_tile for w, h in image_sizes]
    rendered = render_chat(sample.messages, processor.tokenizer, image_token_counts=counts,
                           date=processor.chat.date, reasoning_effort=processor.chat.reasoning_effort)
    return len(rendered.input_ids)


def _jsonl_length(dataset: ConversationDataset, index: int) -> int:
    sample, root = dataset.items[index]
    sizes = [image_size(path, record=sample.id) for path in resolve_image_paths(sample, root)]
    return record_length(dataset.processor, sample, sizes)


def _arrow_length(dataset: ArrowConversationDataset, row_index: int) -> int:
    sample, entries = dataset.row(row_index)
    return record_length(dataset.processor, sample, dataset.image_sizes(sample, entries))


@dataclass
class LengthCheck:
    """The length limit of a stage's records and what happens to longer ones; lengths are cached in
    ``cache_dir`` and measured on ``workers`` processes."""

    limit: int
    policy: Literal["drop", "error"]
    processor: MedGPTOssProcessor
    cache_dir: Path | None = None
    workers: int = 1
    refused: list[str] = field(default_factory=list)  # "<folder>/<id> (N tokens)" under policy "error"

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
              id_of: Callable[[int], str]) -> Sequence[int]:
        """``kept`` (record indices, in order) without the records over the limit; counts them, and under
        policy "error" notes the first few for the error ``stage_dataset`` raises."""
        kept_lengths = lengths[np.asarray(kept, dtype=np.int64)] if len(kept) else np.zeros(0, dtype=np.int64)
        over = kept_lengths > self.limit
        report.longest = int(kept_lengths.max()) if len(kept_lengths) else 0
        report.overlong = int(over.sum())
        if not report.overlong:
            return kept
        if self.policy == "error":
            folder = Path(report.path).name
            self.refused += [f"{folder}/{id_of(int(i))} ({int(lengths[i]):,} tokens)"
                             for i in np.asarray(kept)[over][:5]]
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
        dataset, source = read_source(name, path, processor, _excluded_here(exclude, path, data_root), examples,
                                      split, lengths)
        report.sources.append(source)
        if dataset is not None and len(dataset):
            parts.append(dataset)
    if lengths is not None and lengths.refused:
        raise MixtureError(
            f"stage {stage.name}: records longer than {report.length_limit:,} tokens (overlong: error in the "
            f"stage config), e.g. {', '.join(lengths.refused[:5])}; set overlong: drop to leave them out")
    if not parts:
        raise MixtureError(f"stage {stage.name}: no training records left (report: {report.to_dict()})")
    return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), report


def stage_record_counts(stage, *, corpus: str | Path | None = None, data_root: str | Path | None = None,
                        leakage_report: str | Path | None = None) -> DataReport:
    """Records per source as the stage would read them (leakage exclusions applied), with missing sources
    reported rather than refused: no images are opened, no tokenizer is needed (a dry run)."""
    exclude = excluded_ids(leakage_report)
    report = DataReport(stage.name, stage.mixture if data_root else "synthetic",
                        str(leakage_report) if leakage_report else None)
    for name, path, examples, split in _sources(stage, corpus, data_root):
        report.sources.append(read_source(name, path, None, _excluded_here(exclude, path, data_root), examples,
                                          split)[1])
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
    excluded_ids(leakage_report)
    sources = _sources(stage, corpus, data_root)
    missing = [(name, path) for name, path, _, _ in sources if not source_present(path)]
    if missing and (not (skip_missing and data_root) or len(missing) == len(sources)):
        where = "; ".join(f"{name} at {path}" for name, path in missing)
        hint = " (--skip-missing trains on the datasets present)" if data_root and len(missing) < len(sources) else ""
        raise MixtureError(f"stage {stage.name}: no train.jsonl or saved dataset for {where}{hint}")
    return sources


def source_present(path: Path) -> bool:
    return bool(jsonl_files(path)) or (path.suffix != ".jsonl" and is_saved_dataset(path))


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
