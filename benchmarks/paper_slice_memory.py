"""Planned vs measured peak memory of one training step of a real-width slice of the paper model (CPU).

The slice is gpt-oss-20b at full width (hidden 2,880, 64 query / 8 KV heads, 32 experts top-4, the
201,088-token vocabulary) with ``--layers`` of its 24 layers, full-width CLIP-ViT-L/14@336, the projector,
in bf16, gradient checkpointing on, trained as the stage says (default ``pretrain``: the projector
trains, gradients flow back through the frozen LLM). Each row is packed from real-shaped samples: one
image of 12 tiles + thumbnail (13 x 144 = 1,872 visual tokens) and a short text turn with a supervised
answer. One forward, backward and optimizer step runs per size, each in a fresh process whose peak
resident memory (``ru_maxrss``) above what the process held after importing torch is the measurement.

The plan is ``medkit.training.memory_plan.step_memory`` for the same slice: the code path ``medkit plan``
prints for the full model. On CPU the language model runs eager attention (FlexAttention has no CPU
backward), so the plan is evaluated for eager; a size whose planned peak exceeds this machine's memory is
reported as not run. The last line reads ``planned <X> GiB, measured <Y> GiB, ratio <Y/X>`` for the
largest size run (``--quick``: the smallest).

    python benchmarks/paper_slice_memory.py [--layers 1] [--tokens 2048 4096 8192] [--quick] [--stage pretrain]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GIB = 2**30
SAMPLE_TILES = 13  # 12 tiles + the thumbnail: the most one image becomes
TEXT_TOKENS = 128  # per sample besides the image tokens
ANSWER_TOKENS = 64  # of those, supervised


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def slice_profile(layers: int):
    from medkit.profiles import load_profile

    profile = load_profile("paper")
    text = profile.model.text_config
    text["num_hidden_layers"] = layers
    text["layer_types"] = text["layer_types"][:layers]
    profile.model.attn_implementation = "eager"  # no FlexAttention backward on CPU
    return profile


def sample_lengths(tokens: int, tokens_per_tile: int) -> list[int]:
    """Whole samples that fill a row of ``tokens`` (the last one shortened to fit)."""
    per_sample = SAMPLE_TILES * tokens_per_tile + TEXT_TOKENS
    lengths = [per_sample] * (tokens // per_sample)
    rest = tokens - sum(lengths)
    if rest > TEXT_TOKENS:  # a text-only sample fills the rest of the row
        lengths.append(rest)
    return lengths


def child(tokens: int, layers: int, stage_name: str) -> dict:
    import torch

    baseline = rss_bytes()  # python + torch + transformers imported below are part of it
    from medkit.model.build import image_token_id, model_config
    from medkit.model.modeling import MedGPTOssForConditionalGeneration
    from medkit.model.processor import IGNORE_INDEX, EncodedSample
    from medkit.training.packing import PackingCollator
    from medkit.training.stages import apply_trainable, load_stage
    import medkit.chat  # noqa: F401  (tokenizer module, imported with the rest before the baseline)

    baseline = rss_bytes()
    profile = slice_profile(layers)
    config = model_config(profile, img_token=7)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no float32 copy, so the peak is the step's
    model = MedGPTOssForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    model.set_attn_implementation({"text_config": "eager"})
    stage = load_stage(stage_name)
    apply_trainable(model, stage.trainable)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    after_model = rss_bytes()

    samples = []
    per_tile = config.tokens_per_tile
    for i, length in enumerate(sample_lengths(tokens, per_tile)):
        tiles = SAMPLE_TILES if length > SAMPLE_TILES * per_tile else 0
        ids = torch.randint(100, 190000, (length,))
        ids[:tiles * per_tile] = 7
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[-ANSWER_TOKENS:] = ids[-ANSWER_TOKENS:]
        pixels = torch.randn(tiles, 3, config.tile_size, config.tile_size, dtype=torch.bfloat16)
        samples.append(EncodedSample(f"s{i}", ids, labels, pixels, [tiles] if tiles else []))
    batch = PackingCollator(0, tokens)(samples)
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    return {"tokens": int(batch["input_ids"].numel()), "rows": int(batch["input_ids"].shape[0]),
            "tiles": int(batch.get("pixel_values", torch.zeros(0)).shape[0]),
            "supervised": int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
            "baseline_gib": baseline / GIB, "model_gib": (after_model - baseline) / GIB,
            "measured_gib": (peak_rss_bytes() - baseline) / GIB, "step_seconds": seconds}


def planned(tokens: int, layers: int, stage_name: str, rows: int, tiles: int, supervised: int):
    from medkit.training.memory_plan import StepShape, step_memory
    from medkit.training.stages import load_stage

    profile = slice_profile(layers)
    shape = StepShape(rows=rows, row_length=tokens // rows, tiles=tiles, supervised_tokens=supervised)
    return step_memory(profile, load_stage(stage_name), shape, num_gpus=1, gradient_checkpointing=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--stage", default="pretrain")
    parser.add_argument("--quick", action="store_true", help="the smallest size only")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.layers, args.stage)))
        return
    sizes = sorted(args.tokens)[:1] if args.quick else sorted(args.tokens)
    rows, last = [], None
    for tokens in sizes:
        from medkit.model.build import model_config

        per_tile = model_config(slice_profile(args.layers)).tokens_per_tile
        lengths = sample_lengths(tokens, per_tile)
        tiles = SAMPLE_TILES * sum(n > SAMPLE_TILES * per_tile for n in lengths)
        plan = planned(tokens, args.layers, args.stage, 1, tiles, ANSWER_TOKENS * len(lengths) - 1)
        if plan.total_bytes > 0.9 * available_bytes():
            print(f"{tokens:>6} tokens: not run: planned {plan.total_bytes / GIB:.2f} GiB exceeds 90% of the "
                  f"{available_bytes() / GIB:.1f} GiB available here")
            continue
        out = subprocess.run([sys.executable, __file__, "--child", str(tokens), "--layers", str(args.layers),
                              "--stage", args.stage], capture_output=True, text=True, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        plan = planned(tokens, args.layers, args.stage, measured["rows"], measured["tiles"], measured["supervised"])
        ratio = measured["measured_gib"] / (plan.total_bytes / GIB)
        print(f"{tokens:>6} tokens ({measured['tiles']} tiles, {measured['supervised']} supervised): planned "
              f"{plan.total_bytes / GIB:6.2f} GiB, measured {measured['measured_gib']:6.2f} GiB, ratio {ratio:.2f}  "
              f"[step {measured['step_seconds']:.0f} s; weights measured {measured['model_gib']:.2f} GiB]")
        print("        plan: " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in plan.breakdown.items()))
        rows.append((tokens, plan, measured, ratio))
        last = rows[-1] if not args.quick else rows[0]
    if last is None:
        sys.exit("no size could run on this machine")
    tokens, plan, measured, ratio = last
    print(f"planned {plan.total_bytes / GIB:.2f} GiB, measured {measured['measured_gib']:.2f} GiB, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
