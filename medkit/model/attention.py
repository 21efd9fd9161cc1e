"""Attention masks for packed rows, built on the model's device from the rows' position ids.

A packed row holds several samples (and a padding tail) whose ``position_ids`` restart at 0; a token may
attend only to earlier tokens of its own sample, and on GptOss's sliding layers only to the last
``sliding_window`` of them. The collator ships the positions alone; the model turns them into masks here,
on the device the row lives on, in the form the language model's attention implementation takes:

* ``eager`` - the dense additive ``(rows, 1, L, L)`` masks of transformers' own builders
  (``create_causal_mask`` / ``create_sliding_window_causal_mask``, which detect the samples from the
  positions). Fine for the toy profile; at 32,768 tokens one such mask is 4 GiB in float32.
* ``packed_eager`` - GptOss's own eager attention (sinks included) run on each sample of a row by itself,
  with that sample's causal / sliding mask: the same numbers as ``eager`` without the L x L work. A row
  of 4 samples of ~280 tokens costs 4 x 280^2 score entries instead of 1,100^2; on the tiny profile's CPU
  stages a step took half the time (8 samples per row: a fifth), measured in benchmarks/README.md. Rows
  given an ordinary attention mask (padded batches, generation) get plain eager attention.
* ``flex_attention`` - a document-aware ``BlockMask`` per layer type (PyTorch's FlexAttention): the mask
  is a function of (query, key) evaluated per 128x128 block, so only the blocks on the diagonal band of
  each sample are stored and computed, never an L x L tensor. transformers' ``flex_attention_forward``
  applies GptOss's attention sinks through the log-sum-exp it returns (on a GPU; FlexAttention has no
  CPU backward, which is why the tiny profile stays eager).

transformers 5.23's ``GptOssModel`` does not hand ``position_ids`` to its mask builders, so it cannot
find the samples itself; it does accept the ready ``{layer type: mask}`` mapping built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, PretrainedConfig
from transformers.masking_utils import (AttentionMaskInterface, create_causal_mask, create_sliding_window_causal_mask,
                                        eager_mask)
from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

PACKED_EAGER = "packed_eager"
IMPLEMENTATIONS = ("eager", PACKED_EAGER, "flex_attention")


def sequence_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(rows, L) index of the sample each token belongs to: a new sample starts wherever the position
    does not continue the previous one by 1 (the rule of transformers' ``find_packed_sequence_indices``)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return starts.long().cumsum(dim=1)


def dense_packed_masks(text_config: PretrainedConfig, position_ids: torch.Tensor,
                       dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
    """transformers' eager masks for packed rows (additive, ``dtype``'s minimum where masked)."""
    shape_only = torch.empty(*position_ids.shape, 0, dtype=dtype, device=position_ids.device)
    kwargs = dict(config=text_config, inputs_embeds=shape_only, attention_mask=None, past_key_values=None,
                  position_ids=position_ids)
    return {"full_attention": create_causal_mask(**kwargs),
            "sliding_attention": create_sliding_window_causal_mask(**kwargs)}


def block_packed_masks(text_config: PretrainedConfig, position_ids: torch.Tensor) -> dict:
    """FlexAttention ``BlockMask``s for packed rows: causal within each sample, and on sliding layers
    also within the window (a key at most ``sliding_window - 1`` tokens back, as transformers' overlay)."""
    from torch.nn.attention.flex_attention import create_block_mask

    sample = sequence_ids(position_ids)
    rows, length = position_ids.shape
    window = text_config.sliding_window

    def causal_in_sample(b, h, q, kv):
        return (sample[b, q] == sample[b, kv]) & (kv <= q)

    def sliding_in_sample(b, h, q, kv):
        return causal_in_sample(b, h, q, kv) & (q - kv < window)

    def block_mask(mask_mod):
        # compiled on a GPU, as transformers builds its own: uncompiled, the mask is evaluated densely
        # (L x L int64 temporaries, ~10 GiB per 32k row) before it is reduced to blocks
        return create_block_mask(mask_mod, rows, None, length, length, device=position_ids.device,
                                 _compile=position_ids.is_cuda)

    masks = {"full_attention": block_mask(causal_in_sample)}
    if "sliding_attention" in text_config.layer_types:
        masks["sliding_attention"] = block_mask(sliding_in_sample)
    return masks


@dataclass
class SampleSpans:
    """Where each sample of each packed row lies, ``[(start, end), ...]`` per row, and the causal window
    (None on full-attention layers): what ``packed_eager`` gets in place of a dense mask."""

    spans: list[list[tuple[int, int]]]
    window: int | None
    dtype: torch.dtype
    _masks: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def mask(self, length: int, device: torch.device) -> torch.Tensor:
        """The additive (1, 1, length, length) mask of one sample: causal, and within the window if any
        (a key at most ``window - 1`` tokens back, as transformers' sliding overlay); one per length."""
        if length not in self._masks:
            q = torch.arange(length, device=device)[:, None]
            kv = torch.arange(length, device=device)[None, :]
            allowed = kv <= q
            if self.window is not None:
                allowed &= q - kv < self.window
            zeros = torch.zeros(length, length, dtype=self.dtype, device=device)
            self._masks[length] = zeros.masked_fill(~allowed, torch.finfo(self.dtype).min)[None, None]
        return self._masks[length]


def sample_spans(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each sample (the padding tail is a sample of its own)."""
    spans = []
    for row in sequence_ids(position_ids).tolist():
        starts = [0] + [i for i in range(1, len(row)) if row[i] != row[i - 1]]
        spans.append(list(zip(starts, starts[1:] + [len(row)])))
    return spans


def packed_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """GptOss's eager attention per sample of each packed row; the same interface as transformers'
    attention functions (query/key/value ``(rows, heads, L, head_dim)``, output ``(rows, L, heads, head_dim)``).
    With a dense mask (or none) it is plain eager attention."""
    if not isinstance(attention_mask, SampleSpans):
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    rows = []
    for r, spans in enumerate(attention_mask.spans):
        pieces = [eager_attention_forward(module, query[r:r + 1, :, a:b], key[r:r + 1, :, a:b],
                                          value[r:r + 1, :, a:b], attention_mask.mask(b - a, query.device),
                                          scaling, dropout)[0] for a, b in spans]
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows), None


AttentionInterface.register(PACKED_EAGER, packed_eager_attention)
AttentionMaskInterface.register(PACKED_EAGER, eager_mask)  # padded batches and generation build eager masks


def spans_packed_masks(text_config: PretrainedConfig, position_ids: torch.Tensor, dtype: torch.dtype) -> dict:
    """``packed_eager``'s masks: the rows' sample spans, with the window on sliding layers."""
    spans = sample_spans(position_ids)
    masks = {"full_attention": SampleSpans(spans, None, dtype)}
    if "sliding_attention" in text_config.layer_types:
        masks["sliding_attention"] = SampleSpans(spans, text_config.sliding_window, dtype)
    return masks


def packed_masks(text_config: PretrainedConfig, position_ids: torch.Tensor, dtype: torch.dtype) -> dict:
    """The ``{layer type: mask}`` mapping GptOss takes, for the language model's implementation."""
    implementation = text_config._attn_implementation
    if implementation == "flex_attention":
        return block_packed_masks(text_config, position_ids)
    if implementation == "eager":
        return dense_packed_masks(text_config, position_ids, dtype)
    if implementation == PACKED_EAGER:
        return spans_packed_masks(text_config, position_ids, dtype)
    raise ValueError(f"packed rows need attn_implementation in {IMPLEMENTATIONS}, got {implementation!r}")


def use_attention(model, implementation: str) -> None:
    """Set the language model's attention (the vision tower keeps its own, e.g. SDPA for CLIP)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    model.set_attn_implementation({"text_config": implementation})
