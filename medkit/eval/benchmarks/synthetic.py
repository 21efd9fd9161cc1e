"""Helpers that turn the synthetic corpus's eval split into small counterparts of every benchmark.

Each benchmark draws from the task that matches its family (VQA <- ``vqa_mc`` and image questions of
``reasoning``; text QA <- ``text_mc`` and text questions of ``reasoning``; report <- ``report_long`` and
``report``; trial <- ``trial``; impression <- ``impression``), eval split only. Benchmarks of one
family get disjoint subsets: an item belongs to the member whose ``stable_int(item id, member name)``
is smallest, so the assignment is deterministic, independent of file order, and adding a member only
moves items to the newcomer. At most :data:`MAX_ITEMS` items per benchmark (lowest ids first).
Every item is re-rendered with the unified prompt builders of :mod:`.prompts`; only the question text,
options, gold answer and images are taken from the corpus. 1-shot exemplars come from the train split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from medkit.data.schema import Sample, content_parts, read_jsonl
from medkit.eval.benchmarks.base import BenchmarkDataError, stable_int
from medkit.eval.benchmarks.prompts import MC_CONSTRAINT, PatientInfo

MAX_ITEMS = 100  # items per counterpart: a 95% CI of about +-10 points at 50% accuracy
SOURCE = "synthetic"


def corpus_items(corpus_dir: Path, task: str, split: str) -> list[Sample]:
    path = Path(corpus_dir) / f"{task}.jsonl"
    if not path.is_file():
        return []
    return [s for s in read_jsonl(path) if s.meta.get("split") == split]


def family_subset(items: Sequence[Sample], member: str, members: Sequence[str], limit: int = MAX_ITEMS) -> list[Sample]:
    """The items of ``member``: those whose smallest stable hash over the family members is its own."""
    if member not in members:
        raise ValueError(f"{member!r} is not among the family members {list(members)}")
    mine = [s for s in items if min(members, key=lambda m: stable_int(s.id, m)) == member]
    return sorted(mine, key=lambda s: s.id)[:limit]


def absolute_images(sample: Sample, corpus_dir: Path) -> list[str]:
    return [p if Path(p).is_absolute() else str((Path(corpus_dir) / p).resolve()) for p in sample.images]


def user_message(sample: Sample) -> dict[str, Any]:
    users = [m for m in sample.messages if m["role"] == "user"]
    if len(users) != 1:
        raise BenchmarkDataError(f"synthetic item {sample.id}: expected one user turn, got {len(users)}")
    return users[0]


def split_mc_text(text: str, options: dict[str, str], item_id: str) -> str:
    """The question text of a corpus MC prompt: everything before the option lines and constraint."""
    lines = text.rstrip("\n").split("\n")
    if lines and lines[-1].startswith("Answer with"):
        lines = lines[:-1]
    option_lines = [f"{letter}. {option}" for letter, option in options.items()]
    if lines[-len(option_lines):] != option_lines:
        raise BenchmarkDataError(f"synthetic item {item_id}: prompt does not end with its options")
    question = "\n".join(lines[: -len(option_lines)]).strip()
    if not question or MC_CONSTRAINT in question:
        raise BenchmarkDataError(f"synthetic item {item_id}: could not recover the question text")
    return question


def image_captions_and_text(sample: Sample) -> tuple[list[str], str]:
    """Per-image caption (text right before each image, '' if none) and the final text part."""
    captions: list[str] = []
    pending = ""
    for part in content_parts(user_message(sample)):
        if part["type"] == "image":
            captions.append(pending)
            pending = ""
        else:
            pending = (pending + "\n" + part["text"]).strip()
    return captions, pending


PATIENT_LINE = re.compile(r"Patient: (\d+)-year-old (\w+)\. Indication: (.+)")


def patient_info(sample: Sample) -> PatientInfo | None:
    """Age, sex and indication from the corpus's optional ``Patient: ...`` line."""
    for part in content_parts(user_message(sample)):
        if part["type"] == "text":
            match = PATIENT_LINE.search(part["text"])
            if match:
                return PatientInfo(int(match.group(1)), match.group(2), match.group(3).split("\n")[0].strip())
    return None


def base_meta(benchmark: str, sample: Sample, answer: str, **extra: Any) -> dict[str, Any]:
    return {"benchmark": benchmark, "answer": answer, "source": SOURCE, "source_id": sample.id,
            "source_task": sample.meta.get("task"), **extra}
