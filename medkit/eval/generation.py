"""Deterministic greedy decoding of conversation samples: batched with left padding and the KV cache.

Every benchmark item is a prompt (a Sample without its answer turn); the model continues it after the
harmony ``<|start|>assistant`` header. What is kept is the raw completion text (special tokens included)
and its ``final``-channel content; the ``analysis`` channel is never scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medkit.chat.harmony import CALL_TOKEN, END_OF_TEXT_TOKEN, RETURN_TOKEN, parse_final
from medkit.data.schema import Sample
from medkit.model.processor import MedGPTOssProcessor
from medkit.training.collator import PadCollator

STOP_TOKENS = (RETURN_TOKEN, CALL_TOKEN, END_OF_TEXT_TOKEN)


@dataclass(frozen=True)
class DecodeSettings:
    """Everything about decoding that changes an output (part of the prediction-store key)."""

    max_new_tokens: int = 64
    batch_size: int = 8
    do_sample: bool = False  # greedy: one deterministic decode per item

    def key(self) -> dict:
        # batch size is left out: left-padded batched decoding gives the same tokens as one at a time
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}


@dataclass(frozen=True)
class Completion:
    id: str
    raw: str  # the generated text with special tokens, as decoded
    final: str  # the harmony final-channel content


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]


@torch.no_grad()
def generate_batch(
    model: PreTrainedModel,
    processor: MedGPTOssProcessor,
    items: Sequence[tuple[Sample, Path]],
    settings: DecodeSettings,
) -> list[Completion]:
    """Greedy completions of one batch of (sample, image root) prompts, in order."""
    tokenizer = processor.tokenizer
    encoded = [processor.encode(sample, root, for_generation=True) for sample, root in items]
    batch = PadCollator(tokenizer.pad_token_id, padding_side="left")(encoded)
    batch.pop("labels")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    out = model.generate(
        **batch,
        do_sample=settings.do_sample,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    prompt_length = batch["input_ids"].shape[1]
    completions = []
    for (sample, _), row in zip(items, out):
        raw = tokenizer.decode(trim_padding(row[prompt_length:], tokenizer.pad_token_id), skip_special_tokens=False)
        completions.append(Completion(sample.id, raw, parse_final(raw)))
    return completions


def trim_padding(ids: torch.Tensor, pad_token_id: int) -> list[int]:
    """Drop the pads generate() appends to rows that stopped early."""
    ids = ids.tolist()
    while ids and ids[-1] == pad_token_id:
        ids.pop()
    return ids


def by_length(processor: MedGPTOssProcessor, items: Sequence[tuple[Sample, Path]]) -> list[int]:
    """Item indices ordered by prompt length, so each batch pads little (ties keep input order)."""
    lengths = [processor.prompt_length(sample, root) for sample, root in items]
    return sorted(range(len(items)), key=lambda i: lengths[i])


def generate(
    model: PreTrainedModel,
    processor: MedGPTOssProcessor,
    items: Sequence[tuple[Sample, Path]],
    settings: DecodeSettings = DecodeSettings(),
) -> list[Completion]:
    """Completions for all items in input order; batches of ``settings.batch_size`` similar-length prompts."""
    model.eval()
    order = by_length(processor, items)
    completions: dict[int, Completion] = {}
    for start in range(0, len(order), settings.batch_size):
        chunk = order[start : start + settings.batch_size]
        for index, completion in zip(chunk, generate_batch(model, processor, [items[i] for i in chunk], settings)):
            completions[index] = completion
    return [completions[i] for i in range(len(items))]
