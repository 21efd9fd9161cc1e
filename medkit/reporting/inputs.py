"""Reading and checking the result files the tables are built from, before anything is written.

A tables run reads every input first: each evaluation result (``results/<model>/<benchmark>.json``) and
the encoder ablation's ``results.json`` must be valid JSON, an object, and carry the keys the tables read
with the types they use. A file that does not raises :class:`ResultFileError` (a ``ValueError``, so the
CLI prints it as ``medkit tables: error: ...``) naming the file and what is wrong, so a truncated or
hand-edited file is found by name instead of as a ``KeyError`` half-way through writing the tables.
Keys the tables do not read (``weights``, fingerprints, timings, ...) are never checked.
"""

from __future__ import annotations

import json
import numbers
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

from medkit.reporting.published import RESULT_TABLES, result_spec

ITEMS_SUFFIX = ".items.json"  # per-item rows beside each result; the tables never read them
KIND_TEXT = {"string": "a non-empty string", "number": "a number", "integer": "an integer", "object": "an object",
             "array": "an array", "null": "null"}


class ResultFileError(ValueError):
    """A result file that cannot be read, is not valid JSON, or lacks what the tables need; names the file."""


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as a reader of the file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Real):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def read_json(path: Path) -> Any:
    """The decoded JSON of ``path``; any failure names the file (and the line and column of a decode error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ResultFileError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e
    except OSError as e:
        raise ResultFileError(f"{path}: cannot be read: {e.strerror or e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultFileError(f"{path}: not valid JSON (truncated or corrupt?): {e.msg} at line {e.lineno}, "
                              f"column {e.colno}") from e


def _fail(source: str | Path, what: str) -> NoReturn:
    raise ResultFileError(f"{source}: {what}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require(data: dict, key: str, source: str | Path, where: str, kinds: tuple[str, ...],
             optional: bool = False) -> None:
    """``data[key]`` is one of ``kinds`` ('string', 'number', 'integer', 'object', 'array', 'null')."""
    if key not in data:
        if not optional:
            _fail(source, f"no {key!r}{where}")
        return
    value = data[key]
    fits = {"string": isinstance(value, str) and value != "", "number": _is_number(value),
            "integer": isinstance(value, numbers.Integral) and not isinstance(value, bool),
            "object": isinstance(value, dict), "array": isinstance(value, list), "null": value is None}
    if not any(fits[k] for k in kinds):
        wanted = " or ".join(KIND_TEXT[k] for k in kinds)
        _fail(source, f"{key!r}{where} must be {wanted}, found {json_type(value)} ({value!r:.40})")


def _require_object(value: Any, source: str | Path, what: str) -> dict:
    if not isinstance(value, dict):
        _fail(source, f"{what} must be a JSON object, found {json_type(value)}")
    return value


# ---------------------------------------------------------------- evaluation results

@cache
def table_metrics() -> dict[str, frozenset[str]]:
    """Benchmark -> the metric keys Tables 4-6 and Figure 2 read from its result file."""
    needed: dict[str, set[str]] = {}
    for table in RESULT_TABLES:
        for row in result_spec(table).rows:
            needed.setdefault(row.benchmark, set()).add(row.metric)
    return {b: frozenset(m) for b, m in needed.items()}


def _check_metric(entry: dict, value_key: str, source: Path, where: str) -> None:
    """One metric as :func:`medkit.reporting.tables.metric_cell` reads it: a value, a status, a CI."""
    _require(entry, value_key, source, where, ("number", "null"), optional=True)
    _require(entry, "status", source, where, ("string",), optional=True)
    for bound in ("ci_low", "ci_high"):
        _require(entry, bound, source, where, ("number", "null"), optional=True)


def check_result(record: Any, source: Path) -> dict[str, Any]:
    """``record`` if it has what the tables read: benchmark, model, n, metrics in the scorer's layout
    (strict MC: accuracy + CI at the top of ``metrics``; generation: one object per metric)."""
    record = _require_object(record, source, "the file")
    for key in ("benchmark", "model"):
        _require(record, key, source, "", ("string",))
    _require(record, "n", source, "", ("integer",))  # Table 3's loaded counts
    _require(record, "metrics", source, "", ("object",))
    _require(record, "profile", source, "", ("string", "null"), optional=True)  # the stamp's profile and seed
    _require(record, "seed", source, "", ("integer", "null"), optional=True)
    metrics = record["metrics"]
    for metric in sorted(table_metrics().get(record["benchmark"], ())):
        if metric == "accuracy":
            _check_metric(metrics, "accuracy", source, " in 'metrics'")
        elif metric in metrics:  # absent: the table says "not computed", which is true
            _require(metrics, metric, source, " in 'metrics'", ("object",))
            _check_metric(metrics[metric], "value", source, f" in 'metrics.{metric}'")
    return record


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def result_paths(eval_out: str | Path) -> list[Path]:
    """Every ``results/<model>/<benchmark>.json`` under ``eval_out``, per-item files left out, and hidden
    folders too: an evaluation stages a run's results in ``results/.<model>.staging-*`` before moving
    them in, so a copy there is unfinished (or left by a killed run), never a model's results."""
    folder = Path(eval_out) / "results"
    return sorted(p for p in folder.glob("*/*.json")
                  if not p.name.endswith(ITEMS_SUFFIX) and not _hidden(p) and not _hidden(p.parent))


def _check_unique(loaded: list[tuple[Path, dict[str, Any]]]) -> None:
    """Two files for one (model, benchmark) would fill the same cell; which one wins must not be chance."""
    seen: dict[tuple[str, str], Path] = {}
    for path, record in loaded:
        key = (record["model"], record["benchmark"])
        if key in seen:
            raise ResultFileError(
                f"{seen[key]} and {path} both hold model {key[0]!r} on benchmark {key[1]!r}, so the tables "
                "cannot tell them apart; remove one, or give the copy its own model name in its 'model' field")
        seen[key] = path


def load_result_files(eval_out: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, checked record) of every result file under ``eval_out``; raises on the first bad file."""
    loaded = [(path, check_result(read_json(path), path)) for path in result_paths(eval_out)]
    _check_unique(loaded)
    return loaded


# ---------------------------------------------------------------- encoder ablation (Figure 1)

def check_ablation(data: Any, source: str | Path) -> dict[str, Any]:
    """``data`` if it has what Figure 1 and its values table read: profile, seed, one object per encoder
    with its MC accuracy and held-out loss, each with a 95% CI and n."""
    data = _require_object(data, source, "the file")
    _require(data, "profile", source, "", ("string",))
    _require(data, "seed", source, "", ("integer", "null"))
    _require(data, "encoders", source, "", ("array",))
    if not data["encoders"]:
        _fail(source, "'encoders' is empty: no encoder was ablated")
    for i, row in enumerate(data["encoders"]):
        where = f" in encoders[{i}]"
        row = _require_object(row, source, f"encoders[{i}]")
        _require(row, "encoder", source, where, ("string",))
        for part, value_key in (("mc_accuracy", "accuracy"), ("heldout_loss", "mean")):
            _require(row, part, source, where, ("object",))
            inner = f" in encoders[{i}].{part}"
            for key in (value_key, "ci_low", "ci_high"):
                _require(row[part], key, source, inner, ("number",))
            _require(row[part], "n", source, inner, ("integer",))
    return data


def read_ablation(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return check_ablation(read_json(path), path)
