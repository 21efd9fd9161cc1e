"""The language-modelling loss on supervised tokens only, in chunks, never over the full vocabulary grid.

transformers' ``ForCausalLMLoss`` takes logits for every position (rows x length x 201,088 for GPT-oss)
and upcasts them to float32: ~12 GiB in bf16 plus ~24 GiB in float32 (and as much again for the
gradient) per 32,768-token row. Only the positions whose next token is supervised (the assistant turns)
contribute to the loss, so here the unembedding runs on those positions alone, ``chunk_tokens`` at a
time, each chunk under activation checkpointing: at most one chunk's float32 logits exist at once, in
the forward and again in the backward. The result equals ``ForCausalLMLoss`` on the full logits (same
shift, same reduction: a mean over supervised tokens, or a sum over ``num_items_in_batch`` when the
Trainer accumulates gradients over several micro-batches).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
CHUNK_TOKENS = 1024  # one chunk: 1,024 x 201,088 logits in bf16 and fp32, log-softmax and gradients, ~3 GiB


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Position t is trained to predict labels[t + 1] (the shift ``ForCausalLMLoss`` makes)."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def chunk_loss_sum(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    # the head is called as a module so DeepSpeed ZeRO-3 gathers its partitioned weight for the call
    logits = lm_head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def supervised_lm_loss(hidden_states: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor,
                       num_items_in_batch: torch.Tensor | int | None = None,
                       chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor:
    """Mean next-token cross-entropy over supervised positions (sum / ``num_items_in_batch`` if given)."""
    targets = next_token_targets(labels.to(hidden_states.device))
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden_states[keep], targets[keep]
    if hidden.shape[0] == 0:
        # no supervised token: still run the head on one position, weighted 0, so under ZeRO-3 this rank
        # joins the same gathers and gradient reduction as the others (skipping them would hang the step)
        first = hidden_states.reshape(-1, hidden_states.shape[-1])[:1]
        return chunk_loss_sum(first, lm_head, torch.zeros(1, dtype=torch.long, device=first.device)) * 0.0
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        total = total + checkpoint(chunk_loss_sum, hidden[part], lm_head, targets[part], use_reentrant=False)
    denominator = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if torch.is_tensor(denominator):
        denominator = denominator.to(total.device)
    return total / denominator
