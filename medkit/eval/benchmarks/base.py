"""The benchmark registry and the small readers every native converter shares.

A :class:`Benchmark` names one evaluation set of the paper (Tables 4-6 and Figure 2) and knows how to
turn it into conversation-schema prompts (:class:`medkit.data.schema.Sample` without an assistant
answer turn) from two sources:

* ``load_native(data_root)`` reads the public release laid out under ``data_root/<data_dir>/``;
* ``load_synthetic(corpus_dir)`` builds a small counterpart from the synthetic corpus's eval split.

Family modules (``vqa``, ``text_qa``, ``reports``, ``in_context``) call :func:`register` at import, so a
new benchmark is one ``register(Benchmark(...))`` call and never an edit to a central switch.

Errors: a malformed native record raises :class:`BenchmarkDataError` naming the file and the record
(line, row or key); a missing native file raises :class:`MissingBenchmarkFile` (also a
``FileNotFoundError``) naming the expected path. Converters build every item in memory before
returning, so a bad record never leaves a partial item list behind.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping

from medkit.data.schema import Sample, validate_sample

KINDS = ("mc", "report", "impression")
SCORERS = ("strict_mc", "report_metrics", "ratescore")
TABLES = ("4", "5", "6", "figure2")
LETTERS = "ABCDEFGHIJ"

# Generation budget (new tokens) per kind of benchmark. GPT-oss writes its ``analysis`` channel before
# the ``final`` one, so a multiple-choice answer needs room for the reasoning first; decoding stops at
# ``<|return|>`` (the end of the final message), so a short answer costs no more than it uses. Reports
# need a whole findings section (MIMIC-CXR findings run to ~100-250 words, ~350 tokens) after the
# analysis. The baselines' own recommended budgets (1,024-8,192) are in baselines.yaml.
GENERATION_BUDGET = {"mc": 2048, "report": 3072, "impression": 2048}


class BenchmarkDataError(ValueError):
    """A native record that cannot be converted; the message names the file and the record."""


class MissingBenchmarkFile(BenchmarkDataError, FileNotFoundError):
    """A native file the converter needs is absent; the message names the expected path."""


class UnknownBenchmarkError(ValueError):
    """A benchmark name that is not registered; the message lists the registered names."""


class DuplicateBenchmarkError(ValueError):
    """A second benchmark registered under a name already taken."""


@dataclass(frozen=True)
class Benchmark:
    """One evaluation set: what the paper calls it, where it comes from and how to load it.

    ``native`` receives the benchmark's own folder (``data_root / data_dir``); ``synthetic`` receives
    the synthetic corpus folder. ``native_files`` documents the files ``native`` expects there.
    """

    name: str
    title: str
    table: str
    kind: str
    source: str
    split: str
    expected_count: int
    data_dir: str
    native_files: tuple[str, ...]
    native: Callable[[Path], list[Sample]] = field(repr=False, compare=False)
    synthetic: Callable[[Path], list[Sample]] = field(repr=False, compare=False)
    scorer: str = "strict_mc"
    shots: int = 0
    count_explanation: str = ""
    # native-loader parameters and their defaults (e.g. SLAKE's languages); ``native`` receives them as
    # keyword arguments, and the chosen values are part of the prediction-store key
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    max_new_tokens: int = 0  # 0: GENERATION_BUDGET of the benchmark's kind

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"benchmark {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.scorer not in SCORERS:
            raise ValueError(f"benchmark {self.name!r}: scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.table not in TABLES:
            raise ValueError(f"benchmark {self.name!r}: table must be one of {TABLES}, got {self.table!r}")
        if self.shots not in (0, 1):
            raise ValueError(f"benchmark {self.name!r}: shots must be 0 or 1, got {self.shots!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.max_new_tokens == 0:
            object.__setattr__(self, "max_new_tokens", GENERATION_BUDGET[self.kind])

    def resolve_options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The native loader's options: defaults updated by ``given``; an unknown name is an error."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"benchmark {self.name!r} has no option {', '.join(map(repr, unknown))} (options: {known})")
        return {**self.options, **given}

    def load_native(self, data_root: str | Path, options: Mapping[str, Any] | None = None) -> list[Sample]:
        resolved = self.resolve_options(options)
        folder = Path(data_root) / self.data_dir
        if not folder.is_dir():
            files = ", ".join(self.native_files)
            raise MissingBenchmarkFile(f"{self.name}: expected the folder {folder} (files: {files})")
        return checked(self.native(folder, **resolved), f"{self.name} (native, {folder})")

    def load_synthetic(self, corpus_dir: str | Path) -> list[Sample]:
        folder = Path(corpus_dir)
        if not folder.is_dir():
            raise MissingBenchmarkFile(f"{self.name}: synthetic corpus folder {folder} does not exist")
        return checked(self.synthetic(folder), f"{self.name} (synthetic, {folder})")


class NativeItems(list):
    """A native loader's items with a note on what this load read or left out (e.g. "10 repeated
    question stems dropped"), which the count note carries; a plain list means nothing to add."""

    def __init__(self, items: Iterable[Sample] = (), note: str = ""):
        super().__init__(items)
        self.note = note


@dataclass
class LoadedBenchmark:
    benchmark: Benchmark
    items: list[Sample]
    count_note: str
    options: dict[str, Any] = field(default_factory=dict)  # the native options used ({} for synthetic)


_REGISTRY: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    if benchmark.name in _REGISTRY:
        raise DuplicateBenchmarkError(f"benchmark {benchmark.name!r} is already registered")
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; registered benchmarks: {known}") from None


def benchmark_names(table: str | int | None = None) -> list[str]:
    """Registered names in registration order (paper order), optionally only those of one table."""
    return [b.name for b in _REGISTRY.values() if table is None or b.table == str(table)]


def all_benchmarks() -> list[Benchmark]:
    return list(_REGISTRY.values())


def load_benchmark(
    name: str, *, data_root: str | Path | None = None, corpus_dir: str | Path | None = None, limit: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> LoadedBenchmark:
    """Load a benchmark from its native release (``data_root``) or the synthetic corpus (``corpus_dir``).

    ``options`` are the native loader's parameters (``Benchmark.options`` lists them with defaults).
    """
    if (data_root is None) == (corpus_dir is None):
        raise ValueError("pass exactly one of data_root (native release) or corpus_dir (synthetic corpus)")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    benchmark = get_benchmark(name)
    resolved = benchmark.resolve_options(options)
    if data_root is not None:
        items = benchmark.load_native(data_root, resolved)
    else:
        items = benchmark.load_synthetic(corpus_dir)
        resolved = {}
    total, load_note = len(items), getattr(items, "note", "")
    items = list(items[:limit] if limit is not None else items)
    note = count_note(benchmark, total, len(items), synthetic=corpus_dir is not None, limit=limit, load_note=load_note)
    return LoadedBenchmark(benchmark, items, note, resolved)


def count_note(benchmark: Benchmark, total: int, kept: int, *, synthetic: bool, limit: int | None,
               load_note: str = "") -> str:
    expected = f"{benchmark.expected_count:,} expected (Table 3)"
    limited = f"; limited to the first {kept}" if limit is not None and kept < total else ""
    read = f" ({load_note})" if load_note else ""
    if synthetic:
        return f"synthetic counterpart: {total} items ({expected} for the native release){limited}"
    if total == benchmark.expected_count:
        return f"{total:,} items, as in Table 3{read}{limited}"
    reason = benchmark.count_explanation or "fixture/subset or a different release of the data"
    return f"{expected}, got {total:,}{read}: {reason}{limited}"


def checked(items: list[Sample], where: str) -> list[Sample]:
    """Every item re-validated against the conversation schema, with unique ids and no answer turn."""
    seen: set[str] = set()
    for item in items:
        validate_sample(json.loads(item.to_json()), f"{where} item {item.id}")
        if item.id in seen:
            raise BenchmarkDataError(f"{where}: duplicate item id {item.id!r}")
        if item.messages[-1]["role"] != "user":
            raise BenchmarkDataError(f"{where}: item {item.id!r} must end with the user turn the model answers")
        seen.add(item.id)
    return items


# ---------------------------------------------------------------------------------------------------
# Determinism


def stable_int(*parts: Any) -> int:
    """A process-independent 64-bit integer for ``parts`` (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------------------------------------------
# Native file readers: each yields (where, record) so every error can name file and record


Record = dict[str, Any]


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise MissingBenchmarkFile(f"expected file {path} is missing")
    return path


def first_existing(folder: Path, candidates: Iterable[str]) -> Path:
    """The first candidate file (a name or glob) present in ``folder``; the error lists all candidates."""
    candidates = list(candidates)
    for pattern in candidates:
        matches = sorted(folder.glob(pattern))
        if matches:
            return matches[0]
    raise MissingBenchmarkFile(f"expected one of {', '.join(str(folder / c) for c in candidates)}")


def read_json(path: Path) -> Any:
    require_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchmarkDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def iter_records(path: Path) -> Iterator[tuple[str, Record]]:
    """Records of a .jsonl, .json (list or id-keyed object), .parquet or .csv file, each with its location."""
    require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from iter_jsonl(path)
    elif suffix == ".json":
        yield from iter_json(path)
    elif suffix == ".parquet":
        yield from iter_parquet(path)
    elif suffix == ".csv":
        yield from iter_csv(path)
    else:
        raise BenchmarkDataError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .parquet or .csv)")


def iter_jsonl(path: Path) -> Iterator[tuple[str, Record]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkDataError(f"{where}: not valid JSON ({e.msg})") from None
            yield where, expect_object(record, where)


def iter_json(path: Path) -> Iterator[tuple[str, Record]]:
    body = read_json(path)
    if isinstance(body, list):
        for i, record in enumerate(body):
            yield f"{path} item {i}", expect_object(record, f"{path} item {i}")
    elif isinstance(body, dict):
        for key, record in body.items():
            yield f"{path} key {key!r}", expect_object(record, f"{path} key {key!r}")
    else:
        raise BenchmarkDataError(f"{path}: expected a JSON list or object of records")


def iter_parquet(path: Path) -> Iterator[tuple[str, Record]]:
    import pandas as pd

    frame = pd.read_parquet(path)
    for i, record in enumerate(frame.to_dict(orient="records")):
        yield f"{path} row {i}", {k: plain(v) for k, v in record.items()}


def iter_csv(path: Path) -> Iterator[tuple[str, Record]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for record in reader:
            yield f"{path} line {reader.line_num}", dict(record)


def plain(value: Any) -> Any:
    """Parquet cells as plain Python: numpy arrays to lists, NaN/None to None."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def expect_object(record: Any, where: str) -> Record:
    if not isinstance(record, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def get_str(record: Record, key: str, where: str) -> str:
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def get_list(record: Record, key: str, where: str) -> list[Any]:
    value = record.get(key)
    if not isinstance(value, list):
        raise BenchmarkDataError(f"{where}: field {key!r} must be a list, got {type(value).__name__}")
    return value


def parse_list_string(value: Any, key: str, where: str) -> list[str]:
    """A list field that some releases store as the string of a Python list (MMMU ``options``)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise BenchmarkDataError(f"{where}: field {key!r} is not a Python list literal: {value[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchmarkDataError(f"{where}: field {key!r} must be a list of strings")
    return [v.strip() for v in value]


def lettered(texts: list[str], where: str) -> dict[str, str]:
    if not 2 <= len(texts) <= len(LETTERS):
        raise BenchmarkDataError(f"{where}: expected 2..{len(LETTERS)} options, got {len(texts)}")
    if any(not t for t in texts):
        raise BenchmarkDataError(f"{where}: empty option text in {texts!r}")
    return {LETTERS[i]: t for i, t in enumerate(texts)}


def check_letter(answer: str, options: dict[str, str], where: str) -> str:
    answer = answer.strip().upper()
    if answer not in options:
        raise BenchmarkDataError(f"{where}: gold answer {answer!r} is not one of the options {list(options)}")
    return answer


def letter_from_index(value: Any, options: dict[str, str], where: str, key: str) -> str:
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise BenchmarkDataError(f"{where}: field {key!r} must be an integer index, got {value!r}") from None
    if not 0 <= index < len(options):
        raise BenchmarkDataError(f"{where}: field {key!r} = {index} is out of range for {len(options)} options")
    return LETTERS[index]


def existing_image(path: Path, where: str) -> str:
    if not path.is_file():
        raise MissingBenchmarkFile(f"{where}: image file {path} is missing")
    return str(path.resolve())


# ---------------------------------------------------------------------------------------------------
# Images embedded in HF parquet files ({"bytes": ..., "path": ...}) are written once to a cache folder


IMAGE_CACHE = ".medkit_images"


@dataclass
class PendingImage:
    """An image to materialise after every record converted, so a bad record writes nothing."""

    target: Path
    data: bytes | None = None


def image_reference(value: Any, folder: Path, stem: str, where: str) -> PendingImage | None:
    """An image cell (dict with bytes/path, or a path string) as a file to use; None for an empty frame."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else folder / value
        if not path.is_file():
            raise MissingBenchmarkFile(f"{where}: image file {path} is missing")
        return PendingImage(path.resolve())
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path") or ""
        if data:
            suffix = Path(name).suffix.lower() or ".png"
            return PendingImage(folder / IMAGE_CACHE / f"{safe_name(stem)}{suffix}", bytes(data))
        if name:
            return image_reference(name, folder, stem, where)
        return None
    raise BenchmarkDataError(f"{where}: unsupported image cell of type {type(value).__name__}")


def materialize(images: list[PendingImage]) -> list[str]:
    paths = []
    for image in images:
        if image.data is not None and not (image.target.is_file() and image.target.read_bytes() == image.data):
            image.target.parent.mkdir(parents=True, exist_ok=True)
            tmp = image.target.with_name(f".{image.target.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(image.data)
            os.replace(tmp, image.target)  # atomic: a reader never sees a half-written image
        paths.append(str(image.target.resolve()))
    return paths


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
