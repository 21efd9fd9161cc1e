"""The one conversation schema every medkit dataset is read into (synthetic corpus, training sets, benchmarks).

A sample is a JSON object, one per line in a JSONL file::

    {"id": "synth-vqa-000042",
     "images": ["images/synth-vqa-000042-0.png", "images/synth-vqa-000042-1.png"],
     "messages": [
        {"role": "system", "content": "You are a careful radiology assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                     {"type": "text", "text": "Which lung shows the opacity? ..."}]},
        {"role": "assistant", "content": "B", "thinking": "optional reasoning trace"}],
     "meta": {"task": "vqa_mc", "split": "train", "answer": "B", ...}}

Rules: roles are system / user / assistant; ``content`` is a string or a list of parts; an image part
``{"type": "image"}`` refers to the next unused entry of ``images`` (so images appear in the order
listed, in any user turn); the number of image parts equals ``len(images)``; image paths are relative
to the JSONL file's folder unless absolute; ``thinking`` (assistant only) is a reasoning trace that is
rendered on the harmony ``analysis`` channel.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROLES = ("system", "user", "assistant")


class SchemaError(ValueError):
    """A record that does not follow the conversation schema; the message names file and record."""


@dataclass
class Sample:
    id: str
    messages: list[dict[str, Any]]
    images: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "images": self.images, "messages": self.messages, "meta": self.meta},
            ensure_ascii=False,
            sort_keys=True,
        )

    @property
    def num_image_parts(self) -> int:
        return sum(1 for m in self.messages for p in content_parts(m) if p.get("type") == "image")


def content_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's content as a list of parts (a plain string is one text part)."""
    content = message.get("content", "")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


def message_text(message: dict[str, Any]) -> str:
    """All text parts of a message joined, image parts skipped."""
    return "".join(p["text"] for p in content_parts(message) if p.get("type") == "text")


def validate_sample(record: Any, where: str) -> Sample:
    """Check one decoded record against the schema and return it as a Sample.

    ``where`` names the record for error messages, e.g. ``"train.jsonl line 12"``.
    """
    if not isinstance(record, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(record).__name__}")
    sample_id = record.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise SchemaError(f"{where}: missing or empty 'id'")
    where = f"{where} (id {sample_id!r})"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SchemaError(f"{where}: 'messages' must be a non-empty list")
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise SchemaError(f"{where}: 'images' must be a list of file paths")
    n_image_parts = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise SchemaError(f"{where}: message {i} needs a role in {ROLES}")
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise SchemaError(f"{where}: message {i} content must be a string or a list of parts")
        for part in content_parts(message):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                if message["role"] != "user":
                    raise SchemaError(f"{where}: message {i} ({message['role']}) holds an image; only user turns may")
                n_image_parts += 1
            elif kind != "text" or not isinstance(part.get("text"), str):
                raise SchemaError(f"{where}: message {i} has a malformed part {part!r}")
        if "thinking" in message and (message["role"] != "assistant" or not isinstance(message["thinking"], str)):
            raise SchemaError(f"{where}: message {i}: 'thinking' is a string on assistant messages only")
    if n_image_parts != len(images):
        raise SchemaError(f"{where}: {n_image_parts} image placeholder(s) in messages but {len(images)} image file(s)")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise SchemaError(f"{where}: 'meta' must be an object")
    return Sample(id=sample_id, messages=messages, images=list(images), meta=dict(meta))


def read_jsonl(path: str | Path) -> Iterator[Sample]:
    """Yield validated samples from a JSONL file; a bad line raises SchemaError naming file and line."""
    for _, sample in numbered_samples(path):
        yield sample


def numbered_samples(path: str | Path) -> Iterator[tuple[int, Sample]]:
    """(line number, validated sample) of each non-blank line of a JSONL file. A line that is not UTF-8,
    not JSON or not a conversation raises SchemaError naming file and line (read as bytes and decoded
    line by line: a text-mode reader fails on a whole buffer, and its UnicodeDecodeError names no line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such dataset file: {path}")
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path} line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SchemaError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}: "
                                  f"{e.reason})") from None
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SchemaError(f"{where}: not valid JSON ({e.msg})") from None
            yield line_no, validate_sample(record, where)


def is_blank_jsonl(path: str | Path) -> bool:
    """Whether a JSONL file holds no record (empty, or blank lines only); stops at the first record line,
    so a large file costs one read of its head."""
    with Path(path).open("rb") as f:
        return not any(line.strip() for line in f)


def resolve_image_paths(sample: Sample, root: str | Path) -> list[Path]:
    """Image paths of a sample made absolute against ``root`` (the JSONL file's folder)."""
    root = Path(root)
    return [Path(p) if Path(p).is_absolute() else root / p for p in sample.images]


class ImagePathError(SchemaError):
    """A training image that is not there, or that leads outside the folders its dataset may read."""


def checked_image_path(path: Path, allowed: tuple[Path, ...], where: str) -> Path:
    """``path`` if it is a file inside one of the ``allowed`` folders (given resolved) once symlinks are
    resolved. What trains must be what the data root holds: a record naming ``../../x.png``, an absolute
    path elsewhere or a symlink pointing out would read files that nobody curated or audited with it."""
    real = path.resolve()
    if not any(real.is_relative_to(folder) for folder in allowed):
        inside = " or ".join(str(folder) for folder in allowed)
        via = f" (resolves to {real})" if real != Path(os.path.normpath(path.absolute())) else ""
        raise ImagePathError(f"{where}: image {path}{via} is outside {inside}")
    if not real.is_file():
        raise ImagePathError(f"{where}: image file {path} not found")
    return path
