"""Build a MedGPT-OSS model for a profile: from configs (tiny), or composed from released checkpoints (paper).

Both profiles end as the same thing: a ``MedGPTOssForConditionalGeneration`` checkpoint folder that
``from_pretrained`` loads (under an ``HfDeepSpeedConfig`` for ZeRO-3 training).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config, PreTrainedTokenizerBase
from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector

from medkit.chat import IMAGE_CONTEXT_TOKEN
from medkit.model.configuration import MedGPTOssConfig
from medkit.model.encoders import checkpoint_file, load_vision_tower, vision_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.profiles import EncoderSpec, Profile


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MXFP4 = "mxfp4"  # quant_method of the released gpt-oss experts (config.json quantization_config)
LM_CONFIG_FILE = "config.json"


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


def hub_revision(profile: Profile, source: str) -> str | None:
    """The revision ``model.revisions`` pins hub id ``source`` to; None: the hub's latest commit."""
    return profile.model.revisions.get(source)


@contextmanager
def checkpoint_source(source: str, profile_key: str, revision: str | None = None):
    """Turn a failed checkpoint load into an error that says which checkpoint, why, and which profile key to set."""
    try:
        yield
    except OSError as e:
        raise FileNotFoundError(unavailable_message(source, profile_key, revision, e)) from None


def unavailable_message(source: str, profile_key: str, revision: str | None, error: BaseException) -> str:
    """Why ``source`` did not load, told apart by the hub's answer: gated, no such revision, no such repo,
    or (no answer: offline or unreachable) not in the cache."""
    hub_error = _hub_cause(error)
    first_line = str(error).splitlines()[0] if str(error) else ""
    detail = f"({type(error).__name__}: {first_line})"
    if isinstance(hub_error, GatedRepoError):
        return (f"cannot load checkpoint {source!r}: it is a gated Hugging Face repo and this machine has no access "
                f"to it. Accept its license on https://huggingface.co/{source} (signed in to your account), then "
                f"log in here with `hf auth login` (`huggingface-cli login` in older huggingface_hub) or set "
                f"HF_TOKEN to a token of that account; or download it where you have access and set {profile_key} "
                f"in a profile YAML to the local folder. {detail}")
    if isinstance(hub_error, RevisionNotFoundError):
        return (f"cannot load checkpoint {source!r}: it has no revision {revision!r}. Set model.revisions"
                f"[{source!r}] in a profile YAML to one of its commits, branches or tags. {detail}")
    if isinstance(hub_error, RepositoryNotFoundError):
        return (f"cannot load checkpoint {source!r}: not a local folder and no Hugging Face repo of that name is "
                f"visible (a private repo needs `hf auth login` or HF_TOKEN). Set {profile_key} in a profile YAML "
                f"to a hub id or a local folder. {detail}")
    at_revision = f" at revision {revision!r}" if revision else ""
    return (f"cannot load checkpoint {source!r}: not a local folder and not in the Hugging Face cache{at_revision} "
            f"(offline, or the hub unreachable). Download it on a connected machine or set {profile_key} in a "
            f"profile YAML to a local folder. {detail}")


def _hub_cause(error: BaseException | None) -> HfHubHTTPError | None:
    # transformers re-raises the hub's errors as plain OSErrors `from` them; hf_hub_download raises them as is
    while error is not None and not isinstance(error, HfHubHTTPError):
        error = error.__cause__ or error.__context__
    return error


def trainable_weights_kwargs(lm_source: str, revision: str | None) -> dict[str, Any]:
    """``from_pretrained`` arguments that load the language model's weights as plain tensors to train.

    The released gpt-oss-20b ships its MoE experts as MXFP4 blocks and scales. Left to itself, transformers
    keeps them quantized (and not trainable) where MXFP4 kernels are installed on a GPU and dequantizes them
    elsewhere; ``dequantize=True`` makes the load dequantize them everywhere, and the loaded model then
    carries no ``quantization_config``, so the saved bf16 checkpoint loads as a plain one. A checkpoint
    without a quantization config gets no quantization argument (one would ask for quantizing it).
    """
    config, _ = GptOssConfig.get_config_dict(lm_source, revision=revision)
    quantization = config.get("quantization_config")
    if quantization is None:
        return {}
    method = quantization.get("quant_method")
    if method != MXFP4:
        raise ValueError(f"language model {lm_source!r} is quantized with {method!r}; medkit trains from "
                         f"unquantized or {MXFP4} checkpoints (gpt-oss's release format), which it dequantizes. "
                         f"Set model.language_model in a profile YAML to such a checkpoint")
    return {"quantization_config": Mxfp4Config(dequantize=True)}


def source_record(source: str, revision: str | None, marker_file: str) -> dict[str, str | None]:
    """What one checkpoint was loaded from: hub id or folder, the requested revision, and the commit it
    resolved to where a Hugging Face cache snapshot path says (``.../snapshots/<commit>/<marker_file>``)."""
    local = Path(source)
    if local.is_dir():  # a folder may itself be a cache snapshot
        path = local.absolute() / marker_file
    else:
        path = try_to_load_from_cache(source, marker_file, revision=revision)
    return {"source": source, "revision": revision, "commit": _snapshot_commit(path)}


def _snapshot_commit(path: str | Path | object | None) -> str | None:
    """``<cache>/models--<owner>--<name>/snapshots/<commit>/...`` -> ``<commit>``; None for any other path."""
    if not isinstance(path, (str, Path)):  # not cached (None) or cached as missing (a sentinel object)
        return None
    parts = Path(path).parts
    for i in range(1, len(parts) - 1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i + 1]
    return None


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
    Hub ids load at the revision ``model.revisions`` pins them to. The LM's own config is used as is:
    gpt-oss-20b's YaRN scaling is already in it; its MXFP4 experts are dequantized to ``model.dtype``.
    What was loaded is recorded in the config (``medkit_sources``: source, revision, resolved commit), so
    every checkpoint saved from this model says which released weights it started from.
    """
    spec = profile.encoder
    dtype = DTYPES[profile.model.dtype]
    encoder_source = encoder_path or profile.model.encoder_path or spec.hub_id
    lm_source = lm_path or profile.model.language_model
    encoder_revision, lm_revision = hub_revision(profile, encoder_source), hub_revision(profile, lm_source)
    with checkpoint_source(encoder_source, "model.encoder_path", encoder_revision):
        tower = load_vision_tower(spec, encoder_source, encoder_config, revision=encoder_revision).to(dtype)
    with checkpoint_source(lm_source, "model.language_model", lm_revision):
        lm = GptOssForCausalLM.from_pretrained(lm_source, revision=lm_revision, dtype=dtype,
                                               **trainable_weights_kwargs(lm_source, lm_revision))
    if len(tokenizer) > lm.config.vocab_size:
        lm.resize_token_embeddings(len(tokenizer))
    config = compose_config(spec, tower.config, lm.config, profile, image_token_id(tokenizer))
    config.medkit_sources = {
        "vision_encoder": source_record(encoder_source, encoder_revision, checkpoint_file(spec)),
        "language_model": source_record(lm_source, lm_revision, LM_CONFIG_FILE),
    }
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
