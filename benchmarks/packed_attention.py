"""Forward + backward time of one packed row on the tiny model: dense-mask eager against packed_eager.

Eager attention over a packed row computes an L x L score matrix per head and layer, most of it masked
(samples never attend to each other); packed_eager runs the same eager attention per sample. Rows of 4
and 8 instruction-tuning samples from the synthetic corpus (default sizes), one thread, the same
batches for both; prints seconds per row and the ratio. Usage:

    python benchmarks/packed_attention.py [--rows 5] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from medkit.chat import load_tokenizer
from medkit.data.mixture import stage_dataset
from medkit.data.synthetic import ensure_corpus
from medkit.model.attention import PACKED_EAGER, use_attention
from medkit.model.build import build_tiny_model
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import load_profile
from medkit.training.packing import PackingCollator
from medkit.training.stages import load_stage, stage_for_profile


def seconds_per_row(model, rows: list[dict]) -> float:
    model(**rows[0]).loss.backward()  # warm-up
    start = time.perf_counter()
    for row in rows:
        model(**row).loss.backward()
    return (time.perf_counter() - start) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=None, help="default: a fresh default-size corpus")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile, tokenizer = load_profile("tiny"), load_tokenizer("tiny")
    corpus = args.corpus or ensure_corpus(Path(tempfile.mkdtemp()) / "corpus", seed=0)
    model = build_tiny_model(profile, tokenizer).train()
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    stage = stage_for_profile(load_stage("instruct"), profile)
    dataset, _ = stage_dataset(stage, processor, corpus=corpus)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    collate = PackingCollator(tokenizer.pad_token_id, stage.max_length)
    print(f"tiny model, 1 thread, {args.rows} rows per setting, instruction-tuning samples of {corpus}")
    for per_row in (4, 8):
        rows = [collate([dataset[i] for i in order[k * per_row:(k + 1) * per_row]]) for k in range(args.rows + 1)]
        length = sum(r["input_ids"].shape[1] for r in rows) / len(rows)
        times = {}
        for implementation in ("eager", PACKED_EAGER):
            m = copy.deepcopy(model)
            use_attention(m, implementation)
            times[implementation] = seconds_per_row(m, rows)
        print(f"{per_row} samples per row (mean {length:,.0f} tokens): eager {times['eager']:.3f} s, "
              f"packed_eager {times[PACKED_EAGER]:.3f} s, ratio {times['eager'] / times[PACKED_EAGER]:.1f}x")


if __name__ == "__main__":
    main()
