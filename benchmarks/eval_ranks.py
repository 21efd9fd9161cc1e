"""Eval throughput on 1 and 2 data-parallel ranks (``medkit eval --nproc N``), tiny model, CPU.

Both runs go through the CLI's own path (``run_eval`` with ``nproc``): benchmarks loaded, batches sorted
by length, ranks started (each with its share of the cores), shards merged and scored. Each run writes a
fresh output folder, so everything is decoded; the merged predictions of the two runs are compared.
Rank start-up (a Python process importing torch and loading the model) is inside the measured time, as a
user would see it. Items/s and the ratio of the two are printed; where a GPU is present the ranks take
GPUs instead of cores (one GPU each).

    python benchmarks/eval_ranks.py [--items 24] [--max-new-tokens 32] [--batch-size 8] [--nproc 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from medkit.chat import load_tokenizer
from medkit.data.synthetic import generate_corpus
from medkit.eval.benchmarks import benchmark_names
from medkit.eval.parallel import AdapterSource, open_adapter
from medkit.eval.runner import EvalRequest, run_eval
from medkit.model.build import build_tiny_model
from medkit.profiles import load_profile

BENCHMARKS = benchmark_names(table="4") + benchmark_names(table="5")  # the 12 multiple-choice benchmarks
SIZES = {"caption": 5, "report_long": 5, "report": 5, "vqa_mc": 1200, "text_mc": 1200, "reasoning": 5,
         "trial": 5, "impression": 5}


def merged_predictions(out: Path) -> dict[str, str]:
    lines = {}
    for path in sorted((out / "predictions").glob("*/*/*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            lines[f"{path.parent.name}/{record['id']}"] = record["raw"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24, help="items per benchmark (Tables 4 and 5)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_corpus(tmp / "corpus", seed=0, sizes=SIZES)
        torch.manual_seed(0)
        tokenizer = load_tokenizer("tiny")
        build_tiny_model(load_profile("tiny"), tokenizer).save_pretrained(tmp / "model")  # random weights:
        tokenizer.save_pretrained(tmp / "model")  # every item decodes all its new tokens
        rates, predictions = {}, {}
        for nproc in args.nproc:
            out = tmp / f"out{nproc}"
            request = EvalRequest(benchmarks=BENCHMARKS, out_dir=out, corpus_dir=tmp / "corpus", limit=args.items,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, nproc=nproc,
                                  n_boot=100)
            adapter = open_adapter(AdapterSource(str(tmp / "model")))
            start = time.perf_counter()
            results = run_eval(adapter, request, progress=False)
            seconds = time.perf_counter() - start
            items = sum(r["n"] for r in results)
            rates[nproc] = items / seconds
            predictions[nproc] = merged_predictions(out)
            print(f"nproc {nproc}: {items} items in {seconds:.1f} s = {rates[nproc]:.2f} items/s")
        first = args.nproc[0]
        same = all(predictions[n] == predictions[first] for n in args.nproc)
        print(f"predictions identical across rank counts: {same}")
        for nproc in args.nproc[1:]:
            print(f"speed-up {nproc} vs {first} rank(s): {rates[nproc] / rates[first]:.2f}x")


if __name__ == "__main__":
    main()
