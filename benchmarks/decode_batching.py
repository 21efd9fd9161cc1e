"""Batched KV-cache greedy decoding vs a one-at-a-time loop, on the same tiny model and items.

Both paths are medkit's own (``medkit.eval.generation``): left-padded batches through ``generate`` with
the KV cache, and the same call with batch size 1. Checks the completions are identical and prints the
speed-up (target >= 8x). Timings on a shared 2-core machine swing by +-20% run to run, so both paths
run ``--repeats`` times, interleaved, and the speed-up is the ratio of the medians.

    python benchmarks/decode_batching.py [--items 64] [--batch-size 32] [--max-new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medkit.chat import load_tokenizer
from medkit.eval.benchmarks import load_benchmark
from medkit.eval.generation import DecodeSettings, generate
from medkit.data.synthetic import generate_corpus
from medkit.model.build import build_tiny_model
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import load_profile

BENCHMARKS = ("medqa", "medmcqa", "pubmedqa", "mmlu_med", "medxpertqa_text", "medbullets", "slake", "medxpertqa_mm", "medframeqa", "mmmu_med")


def timed(model, processor, items, settings) -> tuple[list, float]:
    start = time.perf_counter()
    completions = list(generate(model, processor, items, settings))
    return completions, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path, interleaved")
    args = parser.parse_args()
    torch.manual_seed(0)
    profile = load_profile("tiny")
    tokenizer = load_tokenizer("tiny")
    model = build_tiny_model(profile, tokenizer).eval()  # random weights: every item decodes all new tokens
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    with tempfile.TemporaryDirectory() as tmp:
        generate_corpus(Path(tmp), seed=0)
        samples = [s for name in BENCHMARKS for s in load_benchmark(name, corpus_dir=Path(tmp)).items]
        items = [(s, Path("/")) for s in samples[: args.items]]
        generate(model, processor, items[:2], DecodeSettings(args.max_new_tokens, batch_size=2))  # warm-up
        runs = []
        for _ in range(args.repeats):
            batched, t_batched = timed(model, processor, items, DecodeSettings(args.max_new_tokens, args.batch_size))
            single, t_single = timed(model, processor, items, DecodeSettings(args.max_new_tokens, batch_size=1))
            same = sum(a.raw == b.raw for a, b in zip(batched, single))
            runs.append((t_single, t_batched, same))
    print(f"{len(items)} items ({sum(bool(s.images) for s, _ in items)} with images), {args.max_new_tokens} new tokens")
    for t_single, t_batched, same in runs:
        print(f"  one at a time {t_single:.2f} s, batched ({args.batch_size}) {t_batched:.2f} s: "
              f"{t_single / t_batched:.1f}x, identical completions {same}/{len(items)}")
    single_median = statistics.median(r[0] for r in runs)
    batched_median = statistics.median(r[1] for r in runs)
    print(f"median of {args.repeats}: one at a time {single_median:.2f} s; batched {batched_median:.2f} s; "
          f"speed-up {single_median / batched_median:.1f}x (target >= 8x)")
    print(f"identical completions: {min(r[2] for r in runs)}/{len(items)} in every run")


if __name__ == "__main__":
    main()
