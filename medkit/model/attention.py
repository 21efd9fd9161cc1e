"""Attention masks for packed rows, built on the model's device from the rows' position ids.

A packed row holds several samples (and a padding tail) whose ``position_ids`` restart at 0; a token may
attend only to earlier tokens of its own sample, and on GptOss's sliding layers only to the last
``sliding_window`` of them. The collator ships the positions alone; the model turns them into masks here,
on the device the row lives on, in the form the language model's attention implementation takes:

* ``eager`` - the dense additive ``(rows, 1, L, L)`` masks of transformers' own builders
  (``create_causal_mask`` / ``create_sliding_window_causal_mask``, which detect the samples from the
  positions). Fine for the toy profile; at 32,768 tokens one such mask is 4 GiB in float32.
* ``flex_attention`` - a document-aware ``BlockMask`` per layer type (PyTorch's FlexAttention): the mask
  is a function of (query, key) evaluated per 128x128 block, so only the blocks on the diagonal band of
  each sample are stored and computed, never an L x L tensor. transformers' ``flex_attention_forward``
  applies GptOss's attention sinks through the log-sum-exp it returns (on a GPU; FlexAttention has no
  CPU backward, which is why the tiny profile stays eager).

transformers 5.23's ``GptOssModel`` does not hand ``position_ids`` to its mask builders, so it cannot
find the samples itself; it does accept the ready ``{layer type: mask}`` mapping built here.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

IMPLEMENTATIONS = ("eager", "flex_attention")


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


def packed_masks(text_config: PretrainedConfig, position_ids: torch.Tensor, dtype: torch.dtype) -> dict:
    """The ``{layer type: mask}`` mapping GptOss takes, for the language model's implementation."""
    implementation = text_config._attn_implementation
    if implementation == "flex_attention":
        return block_packed_masks(text_config, position_ids)
    if implementation == "eager":
        return dense_packed_masks(text_config, position_ids, dtype)
    raise ValueError(f"packed rows need attn_implementation in {IMPLEMENTATIONS}, got {implementation!r}")


def use_attention(model, implementation: str) -> None:
    """Set the language model's attention (the vision tower keeps its own, e.g. SDPA for CLIP)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    model.set_attn_implementation({"text_config": implementation})
