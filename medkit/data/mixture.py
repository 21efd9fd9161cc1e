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
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from medkit.data.dataset import ConversationDataset
from medkit.data.registry import STAGES, TrainingDataset, stage_mixture
from medkit.data.schema import Sample, SchemaError, read_jsonl, validate_sample
from medkit.data.curation import open_images
from medkit.model.image_processing import load_image
from medkit.model.processor import EncodedSample, MedGPTOssProcessor

SourceFormat = Literal["jsonl", "arrow", "missing"]


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


@dataclass
class DataReport:
    """What a stage trained on: written to ``<stage out>/data_report.json``."""

    stage: str
    mixture: str
    leakage_report: str | None
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.sources)

    @property
    def missing(self) -> list[str]:
        return [s.name for s in self.sources if s.format == "missing"]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "mixture": self.mixture, "leakage_report": self.leakage_report,
                "records": self.records, "excluded": sum(s.excluded for s in self.sources),
                "missing": self.missing, "sources": [asdict(s) for s in self.sources]}


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
        row_index = self.indices[index]
        row = drop_nulls(self.table[row_index:row_index + 1].to_pylist()[0])
        where = f"{self.folder} row {row_index}"
        entries = row.get("images") or []
        names = [e if isinstance(e, str) else e.get("path") or f"{where} image {k}" for k, e in enumerate(entries)]
        return validate_sample({**row, "images": names}, where), entries

    def images(self, sample: Sample, entries: list) -> list[Image.Image]:
        """Decoded images: embedded bytes, or files relative to the dataset folder."""
        return [load_image(io.BytesIO(e["bytes"]), record=sample.id, name=name)
                if isinstance(e, dict) and e.get("bytes") else load_image(self.folder / name, record=sample.id)
                for e, name in zip(entries, sample.images)]

    def __getitem__(self, index: int) -> EncodedSample:
        sample, entries = self.sample(index)
        return self.processor.encode(sample, self.folder, images=self.images(sample, entries))


def drop_nulls(value: Any) -> Any:
    """Arrow gives every struct field to every row (``None`` where absent); the schema wants them absent."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def read_source(name: str, folder: Path, processor: MedGPTOssProcessor, exclude: set[str],
                table1_examples: int | None, split: str | None = None) -> tuple[Dataset | None, SourceReport]:
    """One dataset folder (or, for the tiny profile, one corpus file) as a torch Dataset and its report."""
    report = SourceReport(name, str(folder), "missing", table1_examples)
    if not source_present(folder):
        return None, report
    files = jsonl_files(folder)
    if files:
        dataset = ConversationDataset.from_jsonl(files, processor, split=split)
        kept = [(sample, root) for sample, root in dataset.items if sample.id not in exclude]
        report.format, report.records, report.excluded = "jsonl", len(kept), len(dataset.items) - len(kept)
        return ConversationDataset(kept, processor), report
    dataset = ArrowConversationDataset(folder, processor, exclude)
    report.format, report.records, report.excluded = "arrow", len(dataset), dataset.excluded
    return dataset, report


def stage_dataset(stage, processor: MedGPTOssProcessor, *, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False) -> tuple[Dataset, DataReport]:
    """The training set of ``stage`` (a ``StageConfig``) and a report of what went into it.

    With ``data_root``: the stage's Table 1 mixture (see the module docstring); a dataset that is not
    there is an error naming every missing folder, unless ``skip_missing``, which trains on the rest and
    lists the missing ones in the report. Without it: the stage's ``synthetic_tasks`` from ``corpus``.
    """
    sources = check_stage_sources(stage, corpus=corpus, data_root=data_root, leakage_report=leakage_report,
                                  skip_missing=skip_missing)
    exclude = excluded_ids(leakage_report)
    report = DataReport(stage.name, stage.mixture if data_root else "synthetic",
                        str(leakage_report) if leakage_report else None)
    parts = []
    for name, path, examples, split in sources:
        here = exclude if data_root is None else {i.split("/", 1)[1] for i in exclude
                                                  if i.startswith(qualified_id(path.name, ""))}
        dataset, source = read_source(name, path, processor, here, examples, split)
        report.sources.append(source)
        if dataset is not None and len(dataset):
            parts.append(dataset)
    if not parts:
        raise MixtureError(f"stage {stage.name}: no training records left (report: {report.to_dict()})")
    return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), report


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
