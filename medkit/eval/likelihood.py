"""Per-item held-out loss: mean cross-entropy over each item's supervised (assistant) tokens.

Per item rather than per batch so a bootstrap over items gives a confidence interval, and so the value
does not depend on how items were batched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from medkit.data.schema import Sample
from medkit.model.processor import IGNORE_INDEX, MedGPTOssProcessor
from medkit.training.collator import PadCollator


@torch.no_grad()
def per_item_loss(
    model: PreTrainedModel,
    processor: MedGPTOssProcessor,
    items: Sequence[tuple[Sample, Path]],
    batch_size: int = 8,
) -> dict[str, float]:
    """{sample id: mean token loss on its assistant tokens}."""
    model.eval()
    collator = PadCollator(processor.tokenizer.pad_token_id)
    losses: dict[str, float] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = collator([processor.encode(sample, root) for sample, root in chunk])
        labels = batch.pop("labels")
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(**batch).logits.float()
        # position t predicts token t + 1
        token_loss = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels[:, 1:].to(logits.device), ignore_index=IGNORE_INDEX, reduction="none"
        )
        counted = (labels[:, 1:] != IGNORE_INDEX).to(token_loss.device)
        for (sample, _), row_loss, row_count in zip(chunk, token_loss, counted):
            if row_count.sum() == 0:
                raise ValueError(f"record {sample.id}: no supervised tokens (no assistant turn to score)")
            losses[sample.id] = float((row_loss * row_count).sum() / row_count.sum())
    return losses
