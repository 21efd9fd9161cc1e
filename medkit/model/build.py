"""Build a MedGPT-OSS model for a profile: from configs (tiny), or composed from released checkpoints (paper).

Both profiles end as the same thing: a ``MedGPTOssForConditionalGeneration`` checkpoint folder that
``from_pretrained`` loads (under an ``HfDeepSpeedConfig`` for ZeRO-3 training).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import GptOssConfig, GptOssForCausalLM, PreTrainedTokenizerBase
from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector

from medkit.chat import IMAGE_CONTEXT_TOKEN
from medkit.model.configuration import MedGPTOssConfig
from medkit.model.encoders import load_vision_tower, vision_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.profiles import EncoderSpec, Profile


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {IMAGE_CONTEXT_TOKEN} token; load it with medkit.chat.load_tokenizer")
    return token_id


def compose_config(spec: EncoderSpec, vision_cfg, text_cfg: GptOssConfig, profile: Profile, img_token: int) -> MedGPTOssConfig:
    config = MedGPTOssConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_id=img_token,
        downsample_ratio=profile.model.downsample_ratio,
        projector_hidden_act=profile.model.projector_hidden_act,
        vision_feature_layer=spec.feature_layer,
        vision_feature_select_strategy=spec.select_strategy,
        encoder_name=spec.name,
    )
    config.image_seq_length = config.tokens_per_tile  # validates the grid, recorded for readers of config.json
    return config


def model_config(profile: Profile, vocab_size: int | None = None, img_token: int = 0) -> MedGPTOssConfig:
    """The full model config from the profile's data alone (no downloads)."""
    spec = profile.encoder
    text_kwargs = dict(profile.model.text_config)
    if vocab_size is not None:
        text_kwargs["vocab_size"] = max(vocab_size, text_kwargs.get("vocab_size", 0))
    text_cfg = GptOssConfig(**text_kwargs)
    size = "tiny" if profile.is_tiny else "paper"
    return compose_config(spec, vision_config(spec, size), text_cfg, profile, img_token)


def build_tiny_model(profile: Profile, tokenizer: PreTrainedTokenizerBase) -> MedGPTOssForConditionalGeneration:
    """A randomly initialised model from the profile's configs, seeded so two builds are identical."""
    config = model_config(profile, vocab_size=len(tokenizer), img_token=image_token_id(tokenizer))
    torch.manual_seed(profile.seed)
    return MedGPTOssForConditionalGeneration(config).to(DTYPES[profile.model.dtype])


@contextmanager
def checkpoint_source(source: str, profile_key: str):
    """Turn a hub/cache miss into an error that says which checkpoint and which profile key to set."""
    try:
        yield
    except OSError as e:
        raise FileNotFoundError(
            f"cannot load checkpoint {source!r}: not a local folder and not in the Hugging Face cache "
            f"(no hub downloads here). Download it on a connected machine or set {profile_key} in a "
            f"profile YAML to a local folder. ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def compose_pretrained(
    profile: Profile,
    tokenizer: PreTrainedTokenizerBase,
    encoder_path: str | None = None,
    lm_path: str | None = None,
    encoder_config=None,
) -> MedGPTOssForConditionalGeneration:
    """Released encoder + released GPT-oss + a freshly initialised projector, as one model.

    ``encoder_path`` / ``lm_path`` default to the registry's hub id and the profile's language model;
    ``encoder_config`` overrides the registry config of open_clip encoders (see ``load_vision_tower``).
    The LM's own config is used as is: gpt-oss-20b's YaRN scaling is already in it.
    """
    spec = profile.encoder
    dtype = DTYPES[profile.model.dtype]
    encoder_source = encoder_path or profile.model.encoder_path or spec.hub_id
    lm_source = lm_path or profile.model.language_model
    with checkpoint_source(encoder_source, "model.encoder_path"):
        tower = load_vision_tower(spec, encoder_source, encoder_config).to(dtype)
    with checkpoint_source(lm_source, "model.language_model"):
        lm = GptOssForCausalLM.from_pretrained(lm_source, dtype=dtype)
    if len(tokenizer) > lm.config.vocab_size:
        lm.resize_token_embeddings(len(tokenizer))
    config = compose_config(spec, tower.config, lm.config, profile, image_token_id(tokenizer))
    with torch.device("meta"):
        model = MedGPTOssForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    torch.manual_seed(profile.seed)
    model.model.multi_modal_projector = InternVLMultiModalProjector(config).to(dtype)
    return model


def load_model(path: str | Path, dtype: str = "float32", **placement) -> MedGPTOssForConditionalGeneration:
    """A saved MedGPT-OSS checkpoint; ``placement``: ``device_map`` (see medkit.eval.placement)."""
    return MedGPTOssForConditionalGeneration.from_pretrained(path, dtype=DTYPES[dtype], **placement)
