"""Batching encoded samples: pad to the longest sequence (right for training, left for generation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from medkit.model.processor import IGNORE_INDEX, EncodedSample


@dataclass
class PadCollator:
    pad_token_id: int
    padding_side: Literal["right", "left"] = "right"

    def __call__(self, batch: list[EncodedSample]) -> dict[str, torch.Tensor]:
        length = max(len(s.input_ids) for s in batch)
        input_ids = torch.full((len(batch), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, sample in enumerate(batch):
            n = len(sample.input_ids)
            cols = slice(length - n, length) if self.padding_side == "left" else slice(0, n)
            input_ids[row, cols] = sample.input_ids
            labels[row, cols] = sample.labels
            attention_mask[row, cols] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        tiles = [s.pixel_values for s in batch if s.pixel_values.shape[0]]
        if tiles:
            out["pixel_values"] = torch.cat(tiles)  # tiles in sample order = placeholder order
        return out
