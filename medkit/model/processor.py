"""Conversation samples -> model inputs: images tiled, placeholders expanded, harmony-rendered, labels masked.

Labels come from the token spans of the one rendering function (``medkit.chat.render_chat``): only the
assistant's completions carry loss; system, user and image tokens are -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from medkit.chat import render_chat
from medkit.data.schema import Sample, resolve_image_paths
from medkit.model.configuration import MedGPTOssConfig
from medkit.model.image_processing import TileImageProcessor, image_size, load_image
from medkit.profiles import ChatSection, Profile

IGNORE_INDEX = -100


class PlaceholderMismatchError(ValueError):
    """A sample whose image placeholders and image files disagree in number."""


@dataclass
class EncodedSample:
    sample_id: str
    input_ids: torch.Tensor  # (seq,)
    labels: torch.Tensor  # (seq,), IGNORE_INDEX where no loss
    pixel_values: torch.Tensor  # (tiles, 3, S, S), possibly 0 tiles
    tiles_per_image: list[int]


class MedGPTOssProcessor:
    """Holds the tokenizer, the tile processor and the chat settings of one model."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: TileImageProcessor,
        tokens_per_tile: int,
        chat: ChatSection | None = None,
    ):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.tokens_per_tile = tokens_per_tile
        self.chat = chat or ChatSection()

    @classmethod
    def for_model(cls, config: MedGPTOssConfig, tokenizer: PreTrainedTokenizerBase, profile: Profile):
        spec = profile.encoder
        if spec.name != config.encoder_name:
            raise ValueError(f"profile encoder {spec.name!r} does not match the model's {config.encoder_name!r}")
        image_processor = TileImageProcessor(
            tile_size=config.tile_size,
            image_mean=tuple(spec.image_mean),
            image_std=tuple(spec.image_std),
            max_tiles=profile.tiling.max_tiles,
            min_tiles=profile.tiling.min_tiles,
            use_thumbnail=profile.tiling.use_thumbnail,
        )
        return cls(tokenizer, image_processor, config.tokens_per_tile, profile.chat)

    def prompt_length(self, sample: Sample, root: str | Path) -> int:
        """Token count of the generation prompt, from image sizes only (no pixels decoded): used to batch
        prompts of similar length so left padding wastes little."""
        messages = sample.messages[:-1] if sample.messages[-1]["role"] == "assistant" else sample.messages
        counts = []
        for path in resolve_image_paths(sample, root):
            size = image_size(path, record=sample.id)  # the header only
            counts.append(self.image_processor.tile_count(*size) * self.tokens_per_tile)
        rendered = render_chat(messages, self.tokenizer, image_token_counts=counts, add_generation_prompt=True,
                               date=self.chat.date, reasoning_effort=self.chat.reasoning_effort)
        return len(rendered.input_ids)

    def encode(self, sample: Sample, root: str | Path, *, for_generation: bool = False,
               images: list | None = None) -> EncodedSample:
        """Encode a sample for training (full conversation) or for generation (prompt up to the last
        assistant turn, which is dropped, plus the assistant header). ``images``: the sample's images
        already decoded (a ``datasets`` row holding image bytes); by default they are read from ``root``."""
        messages = sample.messages
        if for_generation and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        n_parts = sample.num_image_parts  # the dropped assistant turn holds no images
        if images is None:
            images = [load_image(p, record=sample.id) for p in resolve_image_paths(sample, root)]
        if n_parts != len(images):
            raise PlaceholderMismatchError(
                f"record {sample.id}: {n_parts} image placeholder(s) but {len(images)} image file(s)"
            )
        tiled = self.image_processor(images)
        rendered = render_chat(
            messages,
            self.tokenizer,
            image_token_counts=[n * self.tokens_per_tile for n in tiled.tiles_per_image],
            add_generation_prompt=for_generation,
            date=self.chat.date,
            reasoning_effort=self.chat.reasoning_effort,
        )
        input_ids = torch.tensor(rendered.input_ids, dtype=torch.long)
        mask = torch.tensor(rendered.assistant_mask, dtype=torch.bool)
        labels = torch.where(mask, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        return EncodedSample(sample.id, input_ids, labels, tiled.pixel_values, tiled.tiles_per_image)

