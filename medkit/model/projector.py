"""Pixel-shuffle downsampling of a patch grid, the step before the LayerNorm-MLP projector.

The projector itself is transformers' ``InternVLMultiModalProjector`` (LayerNorm -> Linear -> GELU ->
Linear into the LM's hidden size); this module owns the token-grid bookkeeping in front of it.
"""

from __future__ import annotations

import math

import torch


def pixel_shuffle(features: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """(batch, side*side, C) patch features -> (batch, (side*ratio)^2, C/ratio^2).

    Each output token concatenates a (1/ratio x 1/ratio) block of neighbouring patches, so a 24x24 CLIP
    grid becomes 12x12 tokens of 4x the width.
    """
    batch, n_patches, channels = features.shape
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"pixel_shuffle needs a square patch grid, got {n_patches} patches")
    scale = round(1 / ratio)
    if side % scale or abs(scale * ratio - 1) > 1e-6:
        raise ValueError(f"a {side}x{side} patch grid cannot be pixel-shuffled by ratio {ratio}")
    out_side = side // scale
    x = features.reshape(batch, side, out_side, channels * scale)  # merge neighbouring columns
    x = x.permute(0, 2, 1, 3).reshape(batch, out_side, out_side, channels * scale * scale)  # merge rows
    x = x.permute(0, 2, 1, 3)  # back to row-major order
    return x.reshape(batch, out_side * out_side, channels * scale * scale)
