"""Training throughput of the tiny model through DeepSpeed ZeRO-3: 1 rank vs 2 ranks, same global batch.

Runs the instruction-tuning stage (every part trains) with ``medkit.training.stage_run`` under torch's
launcher, on the CPU cores of this machine split evenly between ranks, and reads the non-padding
tokens seen and the train-loop time the Trainer records. Prints tokens/s for each and the ratio.

    python benchmarks/train_throughput.py [--steps 20] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from medkit.data.synthetic import generate_corpus


def run(corpus: Path, out: Path, nproc: int, steps: int, cores: int, port: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
           "-m", "medkit.training.stage_run", "--stage", "instruct", "--corpus", str(corpus), "--out", str(out),
           "--max-steps", str(steps), "--save-steps", str(10 * steps), "--batching", "padded"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(max(1, cores // nproc))}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    metrics = json.loads((out / "train_metrics.json").read_text())
    return {"ranks": nproc, "threads_per_rank": env["OMP_NUM_THREADS"], "tokens": metrics["tokens_seen"],
            "seconds": metrics["train_runtime"], "tokens_per_s": metrics["tokens_seen"] / metrics["train_runtime"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        generate_corpus(corpus, seed=0)
        rows = [run(corpus, Path(tmp) / f"ranks{n}", n, args.steps, args.cores, 29541 + n) for n in (1, 2)]
    for r in rows:
        print(f"{r['ranks']} rank(s) x {r['threads_per_rank']} thread(s): {r['tokens']:,} tokens in "
              f"{r['seconds']:.1f} s = {r['tokens_per_s']:,.0f} tokens/s")
    print(f"2 ranks / 1 rank throughput: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x "
          f"(global batch 8 in both; {args.steps} optimizer steps)")


if __name__ == "__main__":
    main()
