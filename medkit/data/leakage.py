"""Leakage audit: training samples that overlap evaluation samples, found by image pHash and text MinHash.

The paper states that training data are kept apart from evaluation data. This module owns the check:
``audit_leakage`` compares every training sample with every evaluation sample on two signals (an image
within a pHash Hamming distance; question + answer text with MinHash Jaccard above a threshold), reports
the overlapping pairs with their ids, and returns the training set with the overlapping samples removed.
``write_leakage_report`` saves the report as JSON and Markdown. Fingerprints come from ``curation``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from datasketch import MinHash, MinHashLSH
from PIL import Image

from medkit.data.curation import PHashIndex, image_phash, open_images, sample_phashes, text_minhash
from medkit.data.schema import Sample, message_text

Signal = Literal["image_phash", "text_minhash"]


@dataclass(frozen=True)
class LeakagePair:
    train_id: str
    eval_id: str
    signal: Signal
    score: float  # Hamming distance in bits for image_phash, estimated Jaccard for text_minhash


@dataclass
class LeakageReport:
    n_train: int
    n_eval: int
    max_phash_distance: int
    text_jaccard_threshold: float
    pairs: list[LeakagePair] = field(default_factory=list)
    train_source: str | None = None  # what the training items were (a Table 1 data root), for whoever applies it

    @property
    def excluded_ids(self) -> list[str]:
        """Training ids removed for overlapping at least one evaluation sample, sorted."""
        return sorted({p.train_id for p in self.pairs})

    def counts(self) -> dict[str, int]:
        return {signal: sum(p.signal == signal for p in self.pairs) for signal in ("image_phash", "text_minhash")}

    def to_dict(self) -> dict:
        return {
            "n_train": self.n_train,
            "n_eval": self.n_eval,
            "max_phash_distance": self.max_phash_distance,
            "text_jaccard_threshold": self.text_jaccard_threshold,
            "train_source": self.train_source,
            "pairs_by_signal": self.counts(),
            "excluded_train_ids": self.excluded_ids,
            "pairs": [asdict(p) for p in self.pairs],
        }


def qa_text(sample: Sample) -> str:
    """The text a leak would repeat: user prompts/questions followed by the assistant answers."""
    user = [message_text(m) for m in sample.messages if m["role"] == "user"]
    answer = [message_text(m) for m in sample.messages if m["role"] == "assistant"]
    return " ".join(user + answer)


def _image_pairs(
    train: list[Sample], train_images: Callable[[Sample], list[Image.Image]], evaluation: list[Sample],
    eval_root: str | Path, max_distance: int
) -> list[LeakagePair]:
    eval_hashes = PHashIndex(max_distance)
    for s in evaluation:
        for h in sample_phashes(s, eval_root):
            eval_hashes.add(h, s.id)
    pairs = []
    for sample in train:
        # best (smallest) distance per evaluation sample, so one pair per (train, eval) couple
        best: dict[str, int] = {}
        for h in map(image_phash, train_images(sample)):
            for eval_id, distance in eval_hashes.within(h):
                best[eval_id] = min(distance, best.get(eval_id, distance))
        pairs += [LeakagePair(sample.id, e, "image_phash", float(d)) for e, d in sorted(best.items())]
    return pairs


def _text_pairs(
    train: list[Sample], evaluation: list[Sample], threshold: float, num_perm: int
) -> list[LeakagePair]:
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    eval_minhashes: dict[str, MinHash] = {}
    for sample in evaluation:
        minhash = text_minhash(qa_text(sample), num_perm)
        if minhash is not None:
            lsh.insert(sample.id, minhash)
            eval_minhashes[sample.id] = minhash
    pairs = []
    for sample in train:
        minhash = text_minhash(qa_text(sample), num_perm)
        if minhash is None:
            continue
        for eval_id in sorted(lsh.query(minhash)):
            jaccard = eval_minhashes[eval_id].jaccard(minhash)
            if jaccard >= threshold:  # confirm the LSH candidate on the estimate itself
                pairs.append(LeakagePair(sample.id, eval_id, "text_minhash", round(float(jaccard), 4)))
    return pairs


def audit_leakage(
    train: Iterable[Sample],
    train_root: str | Path,
    evaluation: Iterable[Sample],
    eval_root: str | Path,
    *,
    max_phash_distance: int = 6,
    text_jaccard_threshold: float = 0.7,
    num_perm: int = 128,
    train_images: Callable[[Sample], list[Image.Image]] | None = None,
) -> tuple[list[Sample], LeakageReport]:
    """Find train/eval overlaps by either signal; return the clean training set (input order) and the report.

    Training images are read relative to ``train_root``, or by ``train_images`` when the training items
    come from several folders or hold their images as bytes (``medkit.data.mixture.mixture_samples``)."""
    train, evaluation = list(train), list(evaluation)
    train_images = train_images or (lambda sample: open_images(sample, train_root))
    report = LeakageReport(len(train), len(evaluation), max_phash_distance, text_jaccard_threshold)
    report.pairs = _image_pairs(train, train_images, evaluation, eval_root, max_phash_distance)
    report.pairs += _text_pairs(train, evaluation, text_jaccard_threshold, num_perm)
    excluded = set(report.excluded_ids)
    return [s for s in train if s.id not in excluded], report


def report_markdown(report: LeakageReport) -> str:
    counts = report.counts()
    lines = [
        "# Train/eval leakage audit",
        "",
        f"- training samples: {report.n_train}",
        f"- evaluation samples: {report.n_eval}",
        f"- image signal: pHash Hamming distance <= {report.max_phash_distance}: {counts['image_phash']} pair(s)",
        f"- text signal: MinHash Jaccard >= {report.text_jaccard_threshold}: {counts['text_minhash']} pair(s)",
        f"- training samples excluded: {len(report.excluded_ids)}",
        "",
        "| train id | eval id | signal | score |",
        "|---|---|---|---|",
    ]
    lines += [f"| {p.train_id} | {p.eval_id} | {p.signal} | {p.score:g} |" for p in report.pairs]
    return "\n".join(lines) + "\n"


def write_leakage_report(report: LeakageReport, out_dir: str | Path, stem: str = "leakage") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    md_path.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
