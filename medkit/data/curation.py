"""Curation filters for image-text training pairs, as described in Section 3.2 of the paper.

The paper restricts pretraining data to single-panel images and removes artifacts and duplicates. This
module owns the filters that can be run without a model: single-panel check, minimum image size, caption
length bounds, near-duplicate images (pHash) and near-duplicate captions (MinHash over word shingles), plus
the fingerprint helpers (``image_phash``, ``text_minhash``) that the leakage audit reuses. The LLM-assisted
filters of the paper (clinical relevance, misleading numbers) are not reproduced here.

Every filter takes schema ``Sample``s (and the image root the sample paths are relative to), keeps input
order, and returns a ``FilterResult``: the kept samples and a report of the removed ids per reason.
Filters are deterministic: on duplicates the first occurrence is kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from datasketch import MinHash, MinHashLSH
from PIL import Image

from medkit.data.schema import Sample, message_text, resolve_image_paths


class CurationError(ValueError):
    """An input that a filter cannot judge (e.g. an unreadable image); the message names file and record."""


@dataclass
class FilterReport:
    """What one filter removed: sample ids per reason, and for duplicates which kept sample they repeat."""

    filter: str
    n_in: int
    removed: dict[str, list[str]] = field(default_factory=dict)
    duplicate_of: dict[str, str] = field(default_factory=dict)

    def remove(self, sample_id: str, reason: str) -> None:
        self.removed.setdefault(reason, []).append(sample_id)

    @property
    def counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.removed.items()}

    @property
    def n_removed(self) -> int:
        return sum(self.counts.values())

    @property
    def removed_ids(self) -> set[str]:
        return {i for ids in self.removed.values() for i in ids}


@dataclass
class FilterResult:
    kept: list[Sample]
    report: FilterReport


# --- reading -------------------------------------------------------------------------------------------


def open_images(sample: Sample, root: str | Path) -> list[Image.Image]:
    """A sample's images, fully decoded; a missing or corrupt file raises CurationError naming it."""
    from medkit.model.image_processing import ImageLoadError, image_size

    images = []
    for path in resolve_image_paths(sample, root):
        try:
            image_size(path, record=sample.id)  # the pixel limit, from the header: a bomb is never decoded
            with Image.open(path) as image:
                image.load()  # decode now so a truncated file fails here, not later inside a filter
                images.append(image.copy())
        # PIL reports a corrupt PNG chunk as SyntaxError, other bad files as OSError
        except (ImageLoadError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise CurationError(f"{path}: cannot read image of record {sample.id!r} ({e})") from None
    return images


def caption_text(sample: Sample) -> str:
    """The caption of an image-text pair: the assistant turns' text."""
    return " ".join(message_text(m) for m in sample.messages if m["role"] == "assistant")


def _filter_each(
    samples: Iterable[Sample], name: str, reason_of: Callable[[Sample], str | None]
) -> FilterResult:
    """Keep samples for which ``reason_of`` returns None; record the reason for the others."""
    samples = list(samples)
    report = FilterReport(filter=name, n_in=len(samples))
    kept = []
    for sample in samples:
        reason = reason_of(sample)
        if reason is None:
            kept.append(sample)
        else:
            report.remove(sample.id, reason)
    return FilterResult(kept, report)


# --- single panel ----------------------------------------------------------------------------------------


def find_gutters(
    image: Image.Image,
    *,
    extreme: int = 12,
    min_coverage: float = 0.97,
    min_width: int = 3,
    min_panel_fraction: float = 0.15,
) -> list[tuple[str, int]]:
    """Straight white or black bands that cut the image into panels, as ("row" | "column", centre index).

    Heuristic: a row (column) is a gutter line when at least ``min_coverage`` of its pixels are all near
    white (>= 255 - ``extreme``) or all near black (<= ``extreme``). A gutter is a run of at least
    ``min_width`` such lines with at least ``min_panel_fraction`` of the image of non-gutter content on each
    side, so that a plain border or a dark background at the edge of a radiograph is not taken for a gutter.
    Thin gutters, coloured gutters and panels that abut without a gap are not detected.
    """
    gray = np.asarray(image.convert("L"), dtype=np.int16)
    gutters = []
    for axis_name, lines in (("row", gray), ("column", gray.T)):
        white = (lines >= 255 - extreme).mean(axis=1) >= min_coverage
        black = (lines <= extreme).mean(axis=1) >= min_coverage
        for is_gutter in (white, black):
            gutters += [(axis_name, c) for c in _gutter_centres(is_gutter, min_width, min_panel_fraction)]
    return sorted(gutters)


def _gutter_centres(is_gutter: np.ndarray, min_width: int, min_panel_fraction: float) -> list[int]:
    n = len(is_gutter)
    min_panel = max(1, int(np.ceil(min_panel_fraction * n)))
    content = np.cumsum(~is_gutter)  # content[i]: non-gutter lines in [0, i]
    centres = []
    start = None
    for i, flag in enumerate([*is_gutter, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            before = content[start - 1] if start > 0 else 0
            after = content[-1] - content[i - 1]
            if i - start >= min_width and before >= min_panel and after >= min_panel:
                centres.append((start + i - 1) // 2)
            start = None
    return centres


def is_single_panel(image: Image.Image) -> bool:
    return not find_gutters(image)


def filter_single_panel(samples: Iterable[Sample], root: str | Path) -> FilterResult:
    """Drop samples with a multi-panel image (see ``find_gutters`` for the heuristic)."""
    return _filter_each(
        samples,
        "single_panel",
        lambda s: None if all(is_single_panel(im) for im in open_images(s, root)) else "multi_panel",
    )


# --- size and caption length -----------------------------------------------------------------------------


def filter_min_image_size(samples: Iterable[Sample], root: str | Path, min_side: int = 64) -> FilterResult:
    """Drop samples with an image whose shorter side is below ``min_side`` pixels (thumbnails, icons)."""
    return _filter_each(
        samples,
        "min_image_size",
        lambda s: None if all(min(im.size) >= min_side for im in open_images(s, root)) else "image_too_small",
    )


def filter_caption_length(samples: Iterable[Sample], min_words: int = 5, max_words: int = 512) -> FilterResult:
    """Keep captions of ``min_words``..``max_words`` words (inclusive)."""

    def reason(sample: Sample) -> str | None:
        n = len(caption_text(sample).split())
        return "caption_too_short" if n < min_words else "caption_too_long" if n > max_words else None

    return _filter_each(samples, "caption_length", reason)


# --- fingerprints ----------------------------------------------------------------------------------------


def image_phash(image: Image.Image) -> imagehash.ImageHash:
    """64-bit perceptual hash; robust to re-encoding and resizing, compared by Hamming distance."""
    return imagehash.phash(image)


def normalise_text(text: str) -> list[str]:
    """Words of ``text`` after Unicode (NFKC) and case folding, punctuation removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"\w+", text)


def word_shingles(text: str, size: int = 3) -> set[str]:
    """Overlapping ``size``-word shingles of the normalised text (the whole text when it is shorter)."""
    words = normalise_text(text)
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def text_minhash(text: str, num_perm: int = 128, shingle_size: int = 3) -> MinHash | None:
    """MinHash of the text's word shingles (fixed seed, so deterministic); None for a text without words."""
    shingles = word_shingles(text, shingle_size)
    if not shingles:
        return None
    minhash = MinHash(num_perm=num_perm, seed=1)
    minhash.update_batch([shingle.encode("utf-8") for shingle in sorted(shingles)])  # = update() each, vectorised
    return minhash


def sample_phashes(sample: Sample, root: str | Path) -> list[imagehash.ImageHash]:
    return [image_phash(im) for im in open_images(sample, root)]


class PHashIndex:
    """The 64-bit pHashes added so far, searched for those within ``radius`` bits of a query.

    Hashes are kept as 64-bit integers in one numpy array and a query is a single XOR + popcount over all
    of them: exact, in insertion order, and about 1,400x faster than comparing ``ImageHash`` objects pair
    by pair (``benchmarks/phash_index.py``: 93 us per query against 50,000 hashes).
    """

    def __init__(self, radius: int):
        if not 0 <= radius < 64:
            raise ValueError(f"pHash radius must be in 0..63 bits, got {radius}")
        self.radius = radius
        self._bits = np.zeros(1024, dtype=np.uint64)
        self._keys: list[str] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, phash: imagehash.ImageHash, key: str) -> None:
        if len(self._keys) == len(self._bits):  # grow by doubling: adding stays amortised O(1)
            self._bits = np.concatenate([self._bits, np.zeros_like(self._bits)])
        self._bits[len(self._keys)] = phash_bits(phash)
        self._keys.append(key)

    def within(self, phash: imagehash.ImageHash) -> list[tuple[str, int]]:
        """(key, Hamming distance) of every added hash within the radius, in the order they were added."""
        distances = np.bitwise_count(self._bits[: len(self._keys)] ^ np.uint64(phash_bits(phash)))
        return [(self._keys[i], int(distances[i])) for i in np.flatnonzero(distances <= self.radius)]


def phash_bits(phash: imagehash.ImageHash) -> int:
    """The hash's bits as one integer (its hex form), so Hamming distance is a popcount of the XOR."""
    return int(str(phash), 16)


# --- near duplicates -------------------------------------------------------------------------------------


def filter_near_duplicate_images(
    samples: Iterable[Sample], root: str | Path, max_distance: int = 6
) -> FilterResult:
    """Drop a sample when one of its images is within ``max_distance`` pHash bits of an earlier kept image
    (the earliest such image names the duplicate). Kept hashes are searched through a ``PHashIndex``."""
    samples = list(samples)
    report = FilterReport(filter="near_duplicate_images", n_in=len(samples))
    kept: list[Sample] = []
    seen = PHashIndex(max_distance)
    for sample in samples:
        hashes = sample_phashes(sample, root)
        match = next((found[0][0] for found in map(seen.within, hashes) if found), None)
        if match is None:
            kept.append(sample)
            for h in hashes:
                seen.add(h, sample.id)
        else:
            report.remove(sample.id, "near_duplicate_image")
            report.duplicate_of[sample.id] = match
    return FilterResult(kept, report)


def filter_near_duplicate_texts(
    samples: Iterable[Sample],
    threshold: float = 0.7,
    num_perm: int = 128,
    shingle_size: int = 3,
    text_of: Callable[[Sample], str] = caption_text,
) -> FilterResult:
    """Drop a sample whose caption has estimated Jaccard >= ``threshold`` with an earlier kept caption.

    LSH proposes candidates; each is confirmed on the MinHash Jaccard estimate so that the LSH's
    probabilistic banding cannot remove a pair below the threshold.
    """
    samples = list(samples)
    report = FilterReport(filter="near_duplicate_texts", n_in=len(samples))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    minhashes: dict[str, MinHash] = {}
    kept: list[Sample] = []
    for sample in samples:
        minhash = text_minhash(text_of(sample), num_perm, shingle_size)
        if minhash is None:  # nothing to compare; caption length filtering handles empty captions
            kept.append(sample)
            continue
        matches = sorted(k for k in lsh.query(minhash) if minhashes[k].jaccard(minhash) >= threshold)
        if matches:
            report.remove(sample.id, "near_duplicate_text")
            report.duplicate_of[sample.id] = matches[0]
        else:
            lsh.insert(sample.id, minhash)
            minhashes[sample.id] = minhash
            kept.append(sample)
    return FilterResult(kept, report)


# --- pipeline --------------------------------------------------------------------------------------------


@dataclass
class CurationConfig:
    min_side: int = 64
    min_words: int = 5
    max_words: int = 512
    max_phash_distance: int = 6
    text_jaccard_threshold: float = 0.7


def curate(
    samples: Iterable[Sample], root: str | Path, config: CurationConfig | None = None
) -> tuple[list[Sample], list[FilterReport]]:
    """Run all filters, cheapest first, and return the kept samples with one report per filter."""
    config = config or CurationConfig()
    steps: list[Callable[[list[Sample]], FilterResult]] = [
        lambda s: filter_caption_length(s, config.min_words, config.max_words),
        lambda s: filter_min_image_size(s, root, config.min_side),
        lambda s: filter_single_panel(s, root),
        lambda s: filter_near_duplicate_images(s, root, config.max_phash_distance),
        lambda s: filter_near_duplicate_texts(s, config.text_jaccard_threshold),
    ]
    kept, reports = list(samples), []
    for step in steps:
        result = step(kept)
        kept = result.kept
        reports.append(result.report)
    return kept, reports
