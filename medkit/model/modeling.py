"""MedGPT-OSS: vision encoder -> pixel shuffle -> LayerNorm-MLP projector -> GptOss, as transformers models.

Built on transformers' InternVL classes (same projector, ``masked_scatter`` of image features at
placeholder tokens, generation and caching); what changes is how image features are read from a
generic vision tower (any hidden layer, CLS dropped or not, per config), a placeholder check that says
which sequence is wrong, and two things training at 32k tokens needs:

* packed rows carry only ``position_ids``; their attention masks are built here, on the model's device,
  in the form the language model's attention implementation takes (:mod:`medkit.model.attention`);
* with ``labels`` the loss is computed on supervised positions only, in checkpointed chunks
  (:mod:`medkit.model.loss`), plus GptOss's router load-balancing loss when ``output_router_logits`` is
  on (as ``GptOssForCausalLM`` adds it); such a forward returns no logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForImageTextToText
from transformers.modeling_outputs import BaseModelOutputWithPooling
from torch import nn
from transformers.models.gpt_oss.modeling_gpt_oss import load_balancing_loss_func
from transformers.models.internvl.modeling_internvl import (
    InternVLCausalLMOutputWithPast,
    InternVLForConditionalGeneration,
    InternVLModel,
    InternVLModelOutputWithPast,
    InternVLPreTrainedModel,
)

from medkit.model.attention import packed_masks
from medkit.model.configuration import MedGPTOssConfig
from medkit.model.loss import supervised_lm_loss
from medkit.model.projector import pixel_shuffle


class ImageTokenMismatchError(ValueError):
    """The number of image placeholder tokens differs from the number of visual features."""


@dataclass
class MedGPTOssModelOutput(InternVLModelOutputWithPast):
    router_logits: tuple[torch.Tensor, ...] | None = None


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

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                vision_feature_select_strategy=None, image_sizes=None, mm_encoder_outputs=None, **kwargs):
        # InternVL's forward with two changes: packed rows get their masks here, and the language
        # model's router logits are passed on (InternVL drops them; the MoE auxiliary loss needs them)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        image_features = self.image_features(input_ids, pixel_values, mm_encoder_outputs, inputs_embeds)
        if image_features is not None:
            mask = self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=image_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_features)
        elif self.training and input_ids is not None:
            # A text-only batch still runs the vision tower and projector on one blank tile, added with
            # weight 0: under ZeRO-3 every rank must join the same parameter gathers, and a rank that
            # skipped the vision tower while another ran it would hang the step.
            size = self.config.tile_size
            blank = torch.zeros(1, 3, size, size, dtype=self.vision_tower.dtype, device=inputs_embeds.device)
            inputs_embeds = inputs_embeds + 0.0 * self.get_image_features(blank).pooler_output.sum()
        if attention_mask is None and position_ids is not None and past_key_values is None:
            attention_mask = packed_masks(self.config.text_config, position_ids, inputs_embeds.dtype)
        outputs = self.language_model(attention_mask=attention_mask, position_ids=position_ids,
                                      past_key_values=past_key_values, inputs_embeds=inputs_embeds, **kwargs)
        return MedGPTOssModelOutput(
            last_hidden_state=outputs.last_hidden_state, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions, image_hidden_states=image_features,
            router_logits=getattr(outputs, "router_logits", None),
        )

    def image_features(self, input_ids, pixel_values, mm_encoder_outputs, inputs_embeds) -> torch.Tensor | None:
        """Projected features of the batch's tiles (or of precomputed encoder outputs), in the text dtype."""
        encoded = (mm_encoder_outputs or {}).get("image")
        if encoded is None and pixel_values is not None:
            encoded = self.get_image_features(pixel_values=pixel_values)
        if encoded is None:
            return None
        return encoded.pooler_output.to(inputs_embeds.device, inputs_embeds.dtype)

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

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, labels=None, logits_to_keep=0, mm_encoder_outputs=None,
                **kwargs):
        # mm_encoder_outputs is named so generate() sees it in the signature and encodes images once,
        # before prefill, as it does for InternVL
        if labels is None:  # generation and scoring: InternVL's forward, logits as usual
            return super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                   position_ids=position_ids, past_key_values=past_key_values,
                                   inputs_embeds=inputs_embeds, logits_to_keep=logits_to_keep,
                                   mm_encoder_outputs=mm_encoder_outputs, **kwargs)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                             position_ids=position_ids, past_key_values=past_key_values,
                             inputs_embeds=inputs_embeds, mm_encoder_outputs=mm_encoder_outputs, **kwargs)
        loss = supervised_lm_loss(outputs.last_hidden_state, self.lm_head, labels, num_items_in_batch)
        if outputs.router_logits:
            loss = loss + self.router_loss(outputs.router_logits, attention_mask).to(loss.device)
        return InternVLCausalLMOutputWithPast(loss=loss, logits=None, past_key_values=outputs.past_key_values,
                                              hidden_states=outputs.hidden_states, attentions=outputs.attentions,
                                              image_hidden_states=outputs.image_hidden_states)

    def router_loss(self, router_logits, attention_mask) -> torch.Tensor:
        """GptOss's load-balancing loss times its coefficient, as ``GptOssForCausalLM`` adds it (padding
        excluded where a 2D mask says which tokens are real; a packed row's short padding tail counts)."""
        text = self.config.text_config
        token_mask = attention_mask if torch.is_tensor(attention_mask) and attention_mask.dim() == 2 else None
        aux = load_balancing_loss_func(router_logits, text.num_local_experts, text.num_experts_per_tok, token_mask)
        return text.router_aux_loss_coef * aux


AutoModelForImageTextToText.register(MedGPTOssConfig, MedGPTOssForConditionalGeneration, exist_ok=True)
