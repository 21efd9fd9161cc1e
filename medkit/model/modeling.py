"""MedGPT-OSS: vision encoder -> pixel shuffle -> LayerNorm-MLP projector -> GptOss, as transformers models.

Built on transformers' InternVL classes (same projector, ``masked_scatter`` of image features at
placeholder tokens, generation, caching and loss); what changes is how image features are read from a
generic vision tower (any hidden layer, CLS dropped or not, per config) and a placeholder check that
says which sequence is wrong.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.modeling_outputs import BaseModelOutputWithPooling
from torch import nn
from transformers.models.internvl.modeling_internvl import (
    InternVLForConditionalGeneration,
    InternVLModel,
    InternVLPreTrainedModel,
)

from medkit.model.configuration import MedGPTOssConfig
from medkit.model.projector import pixel_shuffle


class ImageTokenMismatchError(ValueError):
    """The number of image placeholder tokens differs from the number of visual features."""


class MedGPTOssModel(InternVLModel):
    config_class = MedGPTOssConfig

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """(n_tiles, 3, S, S) tiles -> (n_tiles, tokens_per_tile, text_hidden) projected features."""
        config = self.config
        tower = self.vision_tower(
            pixel_values=pixel_values.to(dtype=self.vision_tower.dtype),
            output_hidden_states=True,
            return_dict=True,
        )
        features = tower.hidden_states[config.vision_feature_layer]
        if config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # drop CLS
        features = pixel_shuffle(features, config.downsample_ratio)
        projected = self.multi_modal_projector(features)
        return BaseModelOutputWithPooling(last_hidden_state=tower.last_hidden_state, pooler_output=projected)

    def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):
        if self.training and pixel_values is None and input_ids is not None:
            # A text-only batch still runs the vision tower and projector on one blank tile, added with
            # weight 0: under ZeRO-3 every rank must join the same parameter gathers, and a rank that
            # skipped the vision tower while another ran it would hang the step.
            size = self.config.tile_size
            blank = torch.zeros(1, 3, size, size, dtype=self.vision_tower.dtype, device=input_ids.device)
            inputs_embeds = self.get_input_embeddings()(input_ids)
            inputs_embeds = inputs_embeds + 0.0 * self.get_image_features(blank).pooler_output.sum()
            input_ids = None
        return super().forward(input_ids=input_ids, pixel_values=pixel_values, inputs_embeds=inputs_embeds, **kwargs)

    def get_placeholder_mask(self, input_ids, inputs_embeds, image_features):
        if input_ids is None:
            raise ValueError("MedGPT-OSS needs input_ids to locate image placeholder tokens")
        mask = input_ids == self.config.image_token_id
        n_tokens, n_features = int(mask.sum()), image_features.shape[0] * image_features.shape[1]
        if n_tokens != n_features:
            per_row = mask.sum(dim=-1).tolist()
            raise ImageTokenMismatchError(
                f"image placeholder tokens ({n_tokens}; per sequence {per_row}) do not match visual features "
                f"({image_features.shape[0]} tiles x {image_features.shape[1]} tokens = {n_features})"
            )
        return mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)


class MedGPTOssForConditionalGeneration(InternVLForConditionalGeneration):
    config_class = MedGPTOssConfig
    _tied_weights_keys = {}  # gpt-oss keeps embedding and unembedding separate

    def __init__(self, config: MedGPTOssConfig):
        # skip InternVLForConditionalGeneration.__init__: it would build (and initialise) a second model
        InternVLPreTrainedModel.__init__(self, config)
        self.model = MedGPTOssModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register("medgpt_oss", MedGPTOssConfig, exist_ok=True)
AutoModelForImageTextToText.register(MedGPTOssConfig, MedGPTOssForConditionalGeneration, exist_ok=True)
