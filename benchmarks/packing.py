"""Share of non-pad tokens per batch: packed rows vs pad-to-longest (plain order and length-grouped).

Two length sets:

(i) the synthetic corpus (all eight tasks, seed 0) encoded by the tiny profile's processor, so the lengths
    are real placeholder-expanded token counts;
(ii) an assumed length distribution shaped like the paper's training mix (the real corpus is not public):
    - 85% short items (captions, single-image VQA): log-normal, median 320 tokens, sigma 0.5,
      clipped to [64, 2048];
    - 15% long multi-image reports: 2-6 images x 5 tiles x the paper model's tokens per tile (144 for
      CLIP-L/336, read from the paper profile's config) plus log-normal report text (median 600,
      sigma 0.6), clipped to 32768 tokens;
    - packed rows of 32768 tokens (the paper's maximum length).

Packed share = real tokens / (rows x row length) per batch of ``rows_per_batch`` rows, the capacity a
fixed-shape training step pays for. Pad-to-longest share = real tokens / (batch size x longest sample).
Numbers are token-weighted over all batches; the worst batch is shown too.

    python benchmarks/packing.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from medkit.chat import load_tokenizer
from medkit.data.dataset import ConversationDataset
from medkit.data.synthetic import DEFAULT_SIZES, generate_corpus
from medkit.model.build import build_tiny_model, model_config
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import load_profile
from medkit.training.packing import first_fit_decreasing, length_grouped_sampler

Batches = list[list[int]]


def synthetic_corpus_lengths(items_per_task: int, seed: int) -> list[int]:
    """Encoded lengths of the synthetic corpus, every task, through the tiny profile's processor."""
    profile, tokenizer = load_profile("tiny"), load_tokenizer("tiny")
    config = build_tiny_model(profile, tokenizer).config
    processor = MedGPTOssProcessor.for_model(config, tokenizer, profile)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "corpus"
        generate_corpus(out, seed=seed, sizes={task: items_per_task for task in DEFAULT_SIZES})
        dataset = ConversationDataset.from_jsonl(sorted(out.glob("*.jsonl")), processor)
        return [len(dataset[i].input_ids) for i in range(len(dataset))]


def paper_mix_lengths(n: int, seed: int) -> list[int]:
    """Lengths drawn from the assumed paper-like mix described in the module docstring."""
    rng = np.random.default_rng(seed)
    long = rng.random(n) < 0.15
    short = np.clip(rng.lognormal(np.log(320), 0.5, n), 64, 2048)
    images = rng.integers(2, 7, n)
    tokens_per_tile = model_config(load_profile("paper")).tokens_per_tile
    report = images * 5 * tokens_per_tile + rng.lognormal(np.log(600), 0.6, n)
    return [int(x) for x in np.where(long, np.clip(report, 0, 32768), short)]


def share(real: int, slots: int) -> float:
    return real / slots


def pad_to_longest_shares(lengths: Sequence[int], batches: Batches) -> list[tuple[int, int]]:
    return [(sum(lengths[i] for i in b), len(b) * max(lengths[i] for i in b)) for b in batches]


def packed_shares(lengths: Sequence[int], max_length: int, rows_per_batch: int) -> list[tuple[int, int]]:
    rows = first_fit_decreasing(lengths, max_length)
    batches = [rows[i : i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]
    return [(sum(lengths[i] for row in b for i in row), len(b) * max_length) for b in batches]


def summary(name: str, counts: list[tuple[int, int]]) -> str:
    total = share(sum(r for r, _ in counts), sum(s for _, s in counts))
    worst = min(share(r, s) for r, s in counts)
    return f"| {name} | {len(counts)} | {100 * total:.1f}% | {100 * worst:.1f}% |"


def report(title: str, lengths: list[int], batch_size: int, max_length: int, rows_per_batch: int, seed: int) -> None:
    plain = [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    order = list(length_grouped_sampler(lengths, batch_size, seed))
    grouped = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    print(f"\n### {title}\n")
    print(
        f"{len(lengths)} samples, {sum(lengths)} tokens, lengths min/median/max "
        f"{min(lengths)}/{int(np.median(lengths))}/{max(lengths)}; pad batches of {batch_size}, "
        f"packed rows of {max_length} ({rows_per_batch} per batch)\n"
    )
    print("| batching | batches | non-pad share | worst batch |\n|---|---|---|---|")
    print(summary("pad-to-longest, corpus order", pad_to_longest_shares(lengths, plain)))
    print(summary("pad-to-longest, length-grouped", pad_to_longest_shares(lengths, grouped)))
    print(summary("packed (first-fit-decreasing)", packed_shares(lengths, max_length, rows_per_batch)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-per-task", type=int, default=40)
    parser.add_argument("--paper-samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = synthetic_corpus_lengths(args.items_per_task, args.seed)
    report("Synthetic corpus, tiny profile", corpus, batch_size=8, max_length=4096, rows_per_batch=1, seed=args.seed)
    paper = paper_mix_lengths(args.paper_samples, args.seed)
    report("Assumed paper-like mix", paper, batch_size=8, max_length=32768, rows_per_batch=1, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
