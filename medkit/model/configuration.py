"""MedGPT-OSS model config: a vision encoder config + a GPT-oss text config + projector settings.

It is transformers' InternVL composite config (pixel-shuffle, LayerNorm-MLP projector, image features at
placeholder tokens) with the sub-configs resolved by ``model_type`` so any registered vision encoder
(CLIP, SigLIP, ViT) and GptOss round-trip through ``config.json``.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, InternVLConfig
from transformers.configuration_utils import SubConfigSpec


@strict
class MedGPTOssConfig(InternVLConfig):
    model_type = "medgpt_oss"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt_oss"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
    }
    encoder_name: str = "clip"
    vision_feature_layer: int | list[int] = -2
    # gpt-oss has a separate unembedding matrix
    tie_word_embeddings: bool = False

    @property
    def patches_per_side(self) -> int:
        size, patch = _as_int(self.vision_config.image_size), _as_int(self.vision_config.patch_size)
        if size % patch:
            raise ValueError(f"image_size {size} is not a multiple of patch_size {patch}")
        return size // patch

    @property
    def tokens_per_tile(self) -> int:
        """Visual tokens one tile becomes: (image_size / patch_size)^2 patches, pixel-shuffled."""
        side = self.patches_per_side
        shuffled = side * self.downsample_ratio
        if shuffled != int(shuffled):
            raise ValueError(f"{side}x{side} patch grid cannot be pixel-shuffled by {self.downsample_ratio}")
        return int(shuffled) ** 2

    @property
    def tile_size(self) -> int:
        return _as_int(self.vision_config.image_size)


def _as_int(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


# AutoConfig must know the type wherever a checkpoint's config.json is read, not only once the model class
# is imported: AutoTokenizer on a checkpoint folder reads it first, and an unknown type makes transformers
# warn that it instantiates "a model of type ``" in every evaluation notebook
AutoConfig.register("medgpt_oss", MedGPTOssConfig, exist_ok=True)
