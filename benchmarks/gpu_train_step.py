"""One training step of a real-shaped MedGPT-OSS slice on a GPU: tokens/s, model FLOPs utilisation, peak memory.

The slice is CLIP-ViT-L/14@336 + projector + gpt-oss-20b dimensions with 2 of its 24 layers, random
weights, bf16, one sequence of 8192 tokens holding several 13-tile images. Model FLOPs count the work
the model needs (6 x active parameters per token + attention), not recomputation from checkpointing.

    python benchmarks/gpu_train_step.py --layers 2 --seq 8192 --images 3
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from medkit.model.build import model_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.profiles import load_profile

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM)


def slice_config(layers: int, attn: str):
    profile = load_profile("paper")
    text = dict(profile.model.text_config)
    text["num_hidden_layers"] = layers
    text["layer_types"] = text["layer_types"][:layers]
    profile.model.text_config = text
    config = model_config(profile, img_token=200_020)  # an unused id in gpt-oss's reserved range
    config.text_config._attn_implementation = attn
    return config


def active_lm_params(model: MedGPTOssForConditionalGeneration) -> tuple[int, int]:
    """(parameters a token passes through in the decoder layers, lm_head parameters)."""
    text = model.config.text_config
    share = text.num_experts_per_tok / text.num_local_experts
    total = 0
    for name, p in model.model.language_model.layers.named_parameters():
        total += p.numel() * (share if ".experts." in name else 1)
    return int(total), model.lm_head.weight.numel()


def model_flops(model, seq: int, n_tiles: int) -> float:
    """Forward+backward FLOPs (3 x forward) for one sequence."""
    text, vision = model.config.text_config, model.config.vision_config
    layers_params, head_params = active_lm_params(model)
    flops = 6 * (layers_params + head_params) * seq
    attn_width = text.num_attention_heads * text.head_dim
    for kind in text.layer_types:  # QK^T and AV: 2 matmuls x 2 FLOPs x context length per token
        context = min(text.sliding_window, seq) if kind == "sliding_attention" else seq / 2
        flops += 3 * 4 * seq * context * attn_width
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
    flops += 6 * vision_params * patches * n_tiles
    flops += 3 * 4 * vision.num_hidden_layers * patches * patches * vision.hidden_size * n_tiles
    projector_params = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    flops += 6 * projector_params * model.config.tokens_per_tile * n_tiles
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--images", type=int, default=3, help="images of 13 tiles (12 + thumbnail) each")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--attn", default="eager", help="transformers attention implementation")
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = slice_config(args.layers, args.attn)
    with torch.device("cuda"):
        model = MedGPTOssForConditionalGeneration(config).to(torch.bfloat16)
    if not args.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    n_tiles = 13 * args.images
    n_image_tokens = n_tiles * config.tokens_per_tile
    if n_image_tokens >= args.seq:
        raise SystemExit(f"{n_image_tokens} image tokens do not fit in --seq {args.seq}")
    ids = torch.randint(0, 199_000, (1, args.seq), device="cuda")
    ids[0, 16 : 16 + n_image_tokens] = config.image_token_id
    tiles = torch.randn(n_tiles, 3, config.tile_size, config.tile_size, device="cuda", dtype=torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)

    def step():
        loss = model(input_ids=ids, pixel_values=tiles, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocator, kernels, optimizer state
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    flops = model_flops(model, args.seq, n_tiles)
    result = {
        "device": name,
        "layers": args.layers,
        "seq": args.seq,
        "tiles": n_tiles,
        "image_tokens": n_image_tokens,
        "attn": args.attn,
        "gradient_checkpointing": not args.no_checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": round(seconds, 4),
        "tokens_per_s": round(args.seq / seconds, 1),
        "model_tflops_per_step": round(flops / 1e12, 2),
        "achieved_tflops": round(flops / seconds / 1e12, 1),
        "mfu": round(flops / seconds / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
