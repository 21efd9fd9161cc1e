"""Model summary: parameters per part (total and trainable) and visual-token budget per encoder.

For the ``paper`` profile the model is instantiated on the meta device from configs alone, so the
20B numbers come without weights or downloads.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
from torch import nn

from medkit.model.build import model_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.profiles import Profile, encoder_registry

# (part, predicate on parameter name); first match wins, in this order
PARTS: list[tuple[str, str]] = [
    ("vision_tower", "model.vision_tower."),
    ("projector", "model.multi_modal_projector."),
    ("lm.embed_tokens", "model.language_model.embed_tokens."),
    ("lm.attention", ".self_attn."),
    ("lm.router", ".mlp.router."),
    ("lm.experts", ".mlp.experts."),
    ("lm.norms", "model.language_model."),  # what is left in the LM: layer norms
    ("lm_head", "lm_head."),
]


def part_of(name: str) -> str:
    for part, marker in PARTS:
        if marker in name or name.startswith(marker):
            return part
    return "other"


def parameter_table(model: nn.Module) -> "OrderedDict[str, dict[str, int]]":
    """{part: {"total": n, "trainable": n}} plus a "total" row."""
    table: OrderedDict[str, dict[str, int]] = OrderedDict((p, {"total": 0, "trainable": 0}) for p, _ in PARTS)
    for name, param in model.named_parameters():
        row = table.setdefault(part_of(name), {"total": 0, "trainable": 0})
        row["total"] += param.numel()
        row["trainable"] += param.numel() if param.requires_grad else 0
    table["total"] = {k: sum(r[k] for p, r in table.items() if p != "total") for k in ("total", "trainable")}
    return table


@dataclass
class EncoderTokens:
    encoder: str
    tile_size: int
    patches_per_tile: int
    tokens_per_tile: int
    max_tiles_per_image: int
    max_tokens_per_image: int


def encoder_token_budget(profile: Profile) -> list[EncoderTokens]:
    """Visual tokens per tile and per image (max tiles + thumbnail) for every registered encoder."""
    rows = []
    max_tiles = profile.tiling.max_tiles + (1 if profile.tiling.use_thumbnail and profile.tiling.max_tiles > 1 else 0)
    for name in encoder_registry():
        config = model_config(replace(profile, model=replace(profile.model, encoder=name)))
        rows.append(EncoderTokens(
            encoder=name,
            tile_size=config.tile_size,
            patches_per_tile=config.patches_per_side ** 2,
            tokens_per_tile=config.tokens_per_tile,
            max_tiles_per_image=max_tiles,
            max_tokens_per_image=max_tiles * config.tokens_per_tile,
        ))
    return rows


def meta_model(profile: Profile, vocab_size: int | None = None) -> MedGPTOssForConditionalGeneration:
    """The profile's model with no storage (meta device): shapes and counts only."""
    with torch.device("meta"):
        return MedGPTOssForConditionalGeneration(model_config(profile, vocab_size=vocab_size))


def format_summary(profile: Profile, model: nn.Module) -> str:
    lines = [f"MedGPT-OSS [{profile.name}] encoder={profile.model.encoder} lm={profile.model.language_model}", ""]
    lines.append(f"{'part':<18}{'parameters':>18}{'trainable':>18}")
    for part, row in parameter_table(model).items():
        if row["total"]:
            lines.append(f"{part:<18}{row['total']:>18,}{row['trainable']:>18,}")
    lines += ["", f"{'encoder':<12}{'tile px':>8}{'patches':>9}{'tokens/tile':>13}{'max tiles':>11}{'max tokens/img':>16}"]
    for r in encoder_token_budget(profile):
        lines.append(f"{r.encoder:<12}{r.tile_size:>8}{r.patches_per_tile:>9}{r.tokens_per_tile:>13}"
                     f"{r.max_tiles_per_image:>11}{r.max_tokens_per_image:>16}")
    return "\n".join(lines)
