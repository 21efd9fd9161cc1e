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

Strictness: a data file must be UTF-8 (a bad byte is an error naming file and line); a gold index must
be an integer (not a bool, not a float), a gold letter a string; an id or answer text may be a string or
an integer (SLAKE's ``qid``, MIMIC's ids are integers) but not a float or a bool. A file a record refers
to (an image) must resolve, symlinks followed, inside the data root (see :func:`data_roots`), exist, and
have a header PIL reads within ``medkit.model.image_processing.MAX_IMAGE_PIXELS``; all of this is
checked while converting, so a bad image fails the load naming file and record, not a later decode.
"""

from __future__ import annotations

import ast
import codecs
import csv
import hashlib
import io
import json
import math
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

    ``native`` receives the benchmark's own folder (``data_root / data_dir``, so its parent is the data
    root that bounds the files its records may name); ``synthetic`` receives the synthetic corpus
    folder. ``native_files`` documents the files ``native`` expects there.
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
        if self.data_dir in ("", ".", "..") or Path(self.data_dir).name != self.data_dir:
            # one folder directly under data_root: data_roots() finds the root as the folder's parent
            raise ValueError(f"benchmark {self.name!r}: data_dir must be one folder name, got {self.data_dir!r}")
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
        where = f"{self.name} (native, {folder})"
        items = checked(self.native(folder, **resolved), where)
        images_inside_root(items, folder, where)
        if not items and not getattr(items, "note", ""):  # the runner refuses it; the note says where we looked
            items = NativeItems(items, f"no records in the data files under {folder}")
        return items

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


def images_inside_root(items: list[Sample], folder: Path, where: str) -> None:
    """A last guard over every converter: no item may point at a file outside the data root (converters
    check each path as they read it, naming file and record; this catches a converter that forgot)."""
    roots = data_roots(folder)
    for item in items:
        for image in item.images:
            if not inside(resolved_path(Path(image), f"{where} item {item.id}"), roots):
                raise BenchmarkDataError(f"{where}: item {item.id!r} image {image} is outside the data root "
                                         f"{roots[0]}")


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


def utf8(data: bytes, where: str, line_of: Callable[[int], str] | None = None) -> str:
    """``data`` decoded; bad bytes are an error naming the file, the line and the column (Python's own
    message names only an offset into a buffer, and no file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_of(e.start) if line_of else ""
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise BenchmarkDataError(f"{where}{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                                 "save the file as UTF-8") from None


def read_text(path: Path) -> str:
    """A whole UTF-8 file (a leading byte-order mark dropped, as spreadsheet exports write one)."""
    data = require_file(path).read_bytes()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    return utf8(data, str(path), lambda offset: f" line {line_number(data, offset)}")


def line_number(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file read a line at a time, each line decoded on its own so a bad
    byte names its line; a leading byte-order mark is dropped."""
    with path.open("rb") as f:
        for line_no, data in enumerate(f, start=1):
            if line_no == 1 and data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8):]
            yield line_no, utf8(data, f"{path} line {line_no}")


def read_json(path: Path) -> Any:
    text = read_text(path)
    if not text.strip():
        raise BenchmarkDataError(f"{path}: the file is empty (expected a JSON list or object)")
    try:
        return json.loads(text)
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
    for line_no, line in text_lines(require_file(path)):
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
    """Rows through pyarrow, a batch at a time: pandas would turn an integer column with a null into
    floats (a gold index 2 read as 2.0), and a whole MMMU file of embedded images need not sit in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=256)
        for batch in batches:
            for record in batch.to_pylist():
                yield f"{path} row {row}", {k: plain(v) for k, v in record.items()}
                row += 1
    except (pa.ArrowException, OSError) as e:  # a truncated, empty or non-parquet file
        raise BenchmarkDataError(f"{path}: not a readable parquet file (at row {row}: {e})") from None


def iter_csv(path: Path) -> Iterator[tuple[str, Record]]:
    text = read_text(path)  # whole, since a quoted CSV field may span lines
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for record in reader:
            yield f"{path} line {reader.line_num}", dict(record)
    except csv.Error as e:
        raise BenchmarkDataError(f"{path} line {reader.line_num}: not valid CSV ({e})") from None


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


def is_int(value: Any) -> bool:
    """A true integer: bool is an int subclass in Python but never an index or an id."""
    return isinstance(value, int) and not isinstance(value, bool)


def get_str(record: Record, key: str, where: str) -> str:
    """A non-empty text field; an integer is taken as its digits (SLAKE's ``qid``, MIMIC's ids are integers),
    a float or bool is refused (2.0 as an id or answer is an export slip, and "2.0" would not match "2")."""
    value = record.get(key)
    if is_int(value):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def optional_id(record: Record, key: str, where: str, default: str) -> str:
    """An id field that may be absent (then ``default``), else a string or an integer as :func:`get_str`."""
    return default if record.get(key) in (None, "") else get_str(record, key, where)


def option_text(value: Any, where: str, key: str) -> str:
    """An option's text: a string, or a number some releases write bare (an option "5" stored as 5);
    never a bool, a NaN or an empty text."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: option {key!r} must be a non-empty text, got {value!r}")
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


def check_letter(answer: Any, options: dict[str, str], where: str, key: str = "answer") -> str:
    """The gold letter, which must be a string naming one of the options (a bare 2 is no letter)."""
    if not isinstance(answer, str):
        raise BenchmarkDataError(f"{where}: field {key!r} must be an option letter (a string), got {answer!r} "
                                 f"({type(answer).__name__})")
    answer = answer.strip().upper()
    if answer not in options:
        raise BenchmarkDataError(f"{where}: gold answer {answer!r} is not one of the options {list(options)}")
    return answer


def letter_from_index(value: Any, options: dict[str, str], where: str, key: str, first: int = 0) -> str:
    """The letter of a gold index counted from ``first`` (0 or 1). The index must be an int: int() would
    take True as 1 and truncate 2.9 to 2, turning a corrupt gold into a plausible wrong one; no release
    medkit reads stores indices as strings or floats (MedMCQA's ``cop`` and MMLU's ``answer`` are integers)."""
    if not is_int(value):
        raise BenchmarkDataError(f"{where}: field {key!r} must be an integer index, got {value!r} "
                                 f"({type(value).__name__})")
    if not first <= value < first + len(options):
        last = first + len(options) - 1
        raise BenchmarkDataError(f"{where}: field {key!r} = {value} is out of range {first}..{last} for "
                                 f"{len(options)} options")
    return LETTERS[value - first]


# ---------------------------------------------------------------------------------------------------
# Files a record refers to (images): inside the data root, present, and with a readable header


def resolved_path(path: Path, where: str) -> Path:
    """``path`` absolute with every symlink followed; a link loop or a NUL byte is a data error."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise BenchmarkDataError(f"{where}: cannot resolve the path {str(path)!r} ({e})") from None


def data_roots(folder: Path) -> tuple[Path, ...]:
    """Where the files a benchmark's records name may lie: the data root (``folder``'s parent, since
    ``load_native`` passes ``data_root / data_dir`` with a one-folder ``data_dir``) and the benchmark folder
    itself, symlinks resolved. The root, not only the folder, so releases may share an image folder; the
    folder too, so a benchmark folder linked in from other storage (``mimic_cxr -> /physionet/...``)
    still loads. A record's "../x.png", "/etc/passwd" or a symlink inside that leads out of both is refused."""
    root, own = resolved_path(folder.parent, str(folder)), resolved_path(folder, str(folder))
    return (root,) if own.is_relative_to(root) else (root, own)


def inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def contained_path(name: str | Path, base: Path, folder: Path, where: str, what: str = "image") -> Path:
    """The file a record names (relative to ``base``, or absolute), symlinks resolved, refused unless it is
    inside :func:`data_roots` of the benchmark ``folder``; checked before the file is opened or even looked at."""
    named = Path(name)
    path = resolved_path(named if named.is_absolute() else base / named, where)
    roots = data_roots(folder)
    if not inside(path, roots):
        allowed = " or ".join(str(r) for r in roots)
        raise BenchmarkDataError(f"{where}: {what} path {str(name)!r} resolves to {path}, outside the data root "
                                 f"{allowed}; a record may only name files inside it")
    return path


def check_image_header(source: Any, where: str, name: str | None = None) -> None:
    """The image header read (not the pixels): an unreadable file or one over the pixel limit (a
    decompression bomb) fails the load here, naming file and record, not a decode deep in generation."""
    # imported here: the module imports torch, which listing or loading text benchmarks does not need
    from medkit.model.image_processing import ImageLoadError, image_size

    try:
        image_size(source, name=name)
    except ImageLoadError as e:
        raise BenchmarkDataError(f"{where}: {e}") from None


def readable_image(path: Path, where: str) -> Path:
    if not path.is_file():
        raise MissingBenchmarkFile(f"{where}: image file {path} is missing")
    check_image_header(path, where)
    return path


def record_image(name: str | Path, base: Path, folder: Path, where: str) -> Path:
    """A record's image file: inside the data root, present, with a readable header of a sane size."""
    return readable_image(contained_path(name, base, folder, where), where)


# ---------------------------------------------------------------------------------------------------
# Images embedded in HF parquet files ({"bytes": ..., "path": ...}) are written once to a cache folder


IMAGE_CACHE = ".medkit_images"


@dataclass
class PendingImage:
    """An image to materialise after every record converted, so a bad record writes nothing."""

    target: Path
    data: bytes | None = None


def image_reference(value: Any, folder: Path, stem: str, where: str) -> PendingImage | None:
    """An image cell (dict with bytes/path, or a path string) as a file to use; None for an empty frame.

    A path is resolved against ``folder`` and must stay inside the data root; embedded bytes go to the
    cache folder (itself checked, so a planted link there cannot redirect the write). Either way the image
    header is read now, so a corrupt or oversized image fails the load naming file and record."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        return PendingImage(record_image(value, folder, folder, where))
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path") or ""
        if data:
            if not isinstance(data, (bytes, bytearray)) or not isinstance(name, str):
                raise BenchmarkDataError(f"{where}: image cell 'bytes' must be bytes and 'path' a string, got "
                                         f"{type(data).__name__} and {type(name).__name__}")
            check_image_header(io.BytesIO(data), where, name=f"embedded image {name or stem!r}")
            suffix = Path(name).suffix.lower() or ".png"
            target = contained_path(Path(IMAGE_CACHE) / f"{safe_name(stem)}{suffix}", folder, folder, where,
                                    "image cache")
            return PendingImage(target, bytes(data))
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
