"""Sequence packing and length-grouped batching for training.

Owns how encoded samples are laid into packed rows (first-fit-decreasing, deterministic), the tensors a
packed row becomes (``input_ids``, ``labels``, ``position_ids``, ``pixel_values``), and the length-grouped
sampler for the pad-to-longest path (``medkit.training.collator.PadCollator`` stays the padded collator).

A packed batch carries the sample boundaries, not masks: rows have ``position_ids`` that restart at 0 for
every sample, and the model builds the attention masks from them on its own device, dense for eager
attention and as FlexAttention block masks for long rows (:mod:`medkit.model.attention`). Nothing of
size L x L is made here, on the data-loader side. GptOss's sink logit is applied per query row, so it
stays per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from medkit.model.processor import IGNORE_INDEX, EncodedSample


class SampleTooLongError(ValueError):
    """A sample longer than a packed row; truncating it could cut image placeholders, so it is refused."""


def first_fit_decreasing(lengths: Sequence[int], max_length: int, ids: Sequence[str] | None = None) -> list[list[int]]:
    """Group item indices into bins whose lengths sum to at most ``max_length``.

    Items are placed longest first (ties by index, so the result is deterministic) into the first bin with
    room; within a bin, indices keep that placement order.
    """
    for index, length in enumerate(lengths):
        if length > max_length:
            name = ids[index] if ids is not None else f"#{index}"
            raise SampleTooLongError(f"sample {name}: {length} tokens exceed the packed row length {max_length}")
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        target = next((b for b, free in enumerate(room) if free >= lengths[index]), None)
        if target is None:
            bins.append([])
            room.append(max_length)
            target = len(bins) - 1
        bins[target].append(index)
        room[target] -= lengths[index]
    return bins


def pack_samples(samples: Sequence[EncodedSample], max_length: int) -> list[list[EncodedSample]]:
    """Encoded samples -> packed rows (lists of samples), each at most ``max_length`` tokens.

    For whole-dataset packing, pass ``first_fit_decreasing(lengths, max_length, ids)`` as a DataLoader's
    ``batch_sampler``: each batch is then one row, which this function leaves as it is.
    """
    bins = first_fit_decreasing([len(s.input_ids) for s in samples], max_length, [s.sample_id for s in samples])
    return [[samples[i] for i in row] for row in bins]


def sample_labels(sample: EncodedSample) -> torch.Tensor:
    """The sample's labels with its first position ignored.

    ``ForCausalLMLoss`` shifts labels left, so the label at a sample's first position is the target of
    the previous sample's last token; in a packed row that target would cross samples.
    """
    labels = sample.labels.clone()
    labels[0] = IGNORE_INDEX
    return labels


@dataclass
class PackingCollator:
    """Packs a batch of encoded samples into rows of at most ``max_length`` tokens.

    Rows are right-padded to the longest row; padding gets its own run of positions from 0, so it forms
    a separate (unsupervised) sequence that no real token attends to.
    """

    pad_token_id: int
    max_length: int

    def __call__(self, batch: list[EncodedSample]) -> dict[str, torch.Tensor]:
        rows = pack_samples(batch, self.max_length)
        width = max(sum(len(s.input_ids) for s in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for sample in row:
                n = len(sample.input_ids)
                input_ids[r, start : start + n] = sample.input_ids
                labels[r, start : start + n] = sample_labels(sample)
                position_ids[r, start : start + n] = torch.arange(n)
                start += n
            position_ids[r, start:] = torch.arange(width - start)
        out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        # placeholders are scattered in row-major order, so tiles follow the samples row by row
        tiles = [s.pixel_values for row in rows for s in row if s.pixel_values.shape[0]]
        if tiles:
            out["pixel_values"] = torch.cat(tiles)
        return out


def length_grouped_sampler(lengths: Sequence[int], batch_size: int, seed: int) -> LengthGroupedSampler:
    """transformers' ``LengthGroupedSampler`` over known lengths, seeded: each run of ``batch_size``
    indices has similar lengths, and the same seed gives the same order (epoch by epoch)."""
    generator = torch.Generator().manual_seed(seed)
    return LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator)
