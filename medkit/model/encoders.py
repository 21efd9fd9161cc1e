"""Vision-encoder construction: a transformers config per registry entry, and weight loading per format.

``transformers`` checkpoints (CLIP, SigLIP, MedSigLIP) load with the matching ``*VisionModel``; BiomedCLIP
ships an open_clip checkpoint whose image trunk is a timm ViT, converted here into transformers' ViTModel
(the same layout mapping transformers uses for timm ViTs), so open_clip/timm are not needed at run time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CONFIG_MAPPING, MODEL_MAPPING, AutoModel, PretrainedConfig, PreTrainedModel

from medkit.profiles import EncoderSpec

OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
TIMM_TRUNK_PREFIX = "visual.trunk."
# timm ViT block -> transformers ViTLayer (the fused qkv projection is split separately)
TIMM_TO_VIT_BLOCK = {
    "attn.proj": "attention.o_proj",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def vision_config(spec: EncoderSpec, profile: str) -> PretrainedConfig:
    """The encoder's transformers config for a profile, built offline from the registry's values."""
    return CONFIG_MAPPING[spec.model_type](**spec.config_kwargs(profile))


def checkpoint_file(spec: EncoderSpec) -> str:
    """The file every checkpoint of the encoder's format has (its cache path tells the snapshot loaded)."""
    return OPEN_CLIP_WEIGHTS if spec.weights_format == "open_clip" else "config.json"


def load_vision_tower(spec: EncoderSpec, path_or_id: str, config: PretrainedConfig | None = None,
                      revision: str | None = None) -> PreTrainedModel:
    """The encoder's vision tower with its released weights (a hub id or a local folder).

    ``config`` is only read for open_clip checkpoints, whose own config is not a transformers one; it
    defaults to the registry's ``paper`` values. ``revision``: the commit, branch or tag of a hub id
    (None: the hub's latest); a local folder is read as it is.
    """
    if spec.weights_format == "open_clip":
        config = config or vision_config(spec, "paper")
        tower = AutoModel.from_config(config)
        weights = _resolve_file(path_or_id, OPEN_CLIP_WEIGHTS, revision)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = tower.load_state_dict(convert_open_clip_vit(state, config.num_hidden_layers), strict=False)
        # the ViT pooler is not part of the timm trunk and is never read (features come from hidden states)
        missing = [k for k in missing if not k.startswith("pooler.")]
        if missing or unexpected:
            raise KeyError(f"{path_or_id}: open_clip trunk does not fit ViT config: missing {missing}, unexpected {unexpected}")
        return tower
    # full CLIP / SigLIP checkpoints load into their *VisionModel, which keeps only the vision weights
    tower_class = MODEL_MAPPING[CONFIG_MAPPING[spec.model_type]]
    return tower_class.from_pretrained(path_or_id, revision=revision, dtype=torch.float32)


def _resolve_file(path_or_id: str, filename: str, revision: str | None) -> Path:
    local = Path(path_or_id)
    if local.is_dir():
        file = local / filename
        if not file.is_file():
            raise FileNotFoundError(f"{local}: expected {filename} (open_clip checkpoint)")
        return file
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(path_or_id, filename, revision=revision))


def convert_open_clip_vit(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """open_clip ``visual.trunk.*`` (timm ViT) weights -> transformers ``ViTModel`` state dict.

    timm fuses q, k, v into one ``qkv`` projection; transformers keeps three, so it is split in thirds.
    """
    trunk = {k[len(TIMM_TRUNK_PREFIX):]: v for k, v in state.items() if k.startswith(TIMM_TRUNK_PREFIX)}
    if not trunk:
        raise KeyError(f"no '{TIMM_TRUNK_PREFIX}*' weights found: not an open_clip timm-trunk checkpoint")
    out = {
        "embeddings.cls_token": trunk["cls_token"],
        "embeddings.position_embeddings": trunk["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": trunk["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": trunk["patch_embed.proj.bias"],
        "layernorm.weight": trunk["norm.weight"],
        "layernorm.bias": trunk["norm.bias"],
    }
    for i in range(num_layers):
        src, dst = f"blocks.{i}.", f"layers.{i}."
        for suffix in ("weight", "bias"):
            q, k, v = trunk[f"{src}attn.qkv.{suffix}"].chunk(3, dim=0)
            out.update({f"{dst}attention.q_proj.{suffix}": q, f"{dst}attention.k_proj.{suffix}": k,
                        f"{dst}attention.v_proj.{suffix}": v})
            for timm_name, hf_name in TIMM_TO_VIT_BLOCK.items():
                out[f"{dst}{hf_name}.{suffix}"] = trunk[f"{src}{timm_name}.{suffix}"]
    return out
