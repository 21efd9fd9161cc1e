"""Kill-and-resume of ``medkit eval``: SIGKILL the run at several points, resume, compare with an
uninterrupted run (same predictions, none lost, none duplicated, same scores).

    python benchmarks/eval_resume.py [--kills 1 3 6]   (kill after that many stored batches)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCHMARK = "mimic_cxr_report"  # the largest synthetic counterpart (40 items)
BATCH = 4


def eval_command(model: Path, corpus: Path, out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "medkit", "eval", "--model", str(model), "--benchmarks", BENCHMARK,
           "--corpus", str(corpus), "--out", str(out), "--batch-size", str(BATCH), "--max-new-tokens", "16"]
    return cmd + (["--resume"] if resume else [])


def store_file(out: Path) -> Path | None:
    found = list((out / "predictions").glob(f"*/{BENCHMARK}/*.jsonl"))
    return found[0] if found else None


def stored_lines(out: Path) -> list[dict]:
    path = store_file(out)
    return [json.loads(line) for line in path.read_text().splitlines()] if path else []


def kill_after(cmd: list[str], out: Path, batches: int) -> int:
    """Run, SIGKILL once ``batches`` batches are stored; returns how many lines were stored then."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while len(stored_lines(out)) < batches * BATCH:
        if proc.poll() is not None:
            raise SystemExit("the run finished before the kill point; choose a smaller --kills value")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(stored_lines(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, nargs="+", default=[1, 3, 6])
    args = parser.parse_args()
    from medkit.chat import load_tokenizer
    from medkit.data.synthetic import generate_corpus
    from medkit.model.build import build_tiny_model
    from medkit.profiles import load_profile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_corpus(tmp / "corpus", seed=0)
        torch.manual_seed(0)
        tokenizer = load_tokenizer("tiny")
        build_tiny_model(load_profile("tiny"), tokenizer).save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        subprocess.run(eval_command(tmp / "model", tmp / "corpus", tmp / "full", False), check=True,
                       capture_output=True)
        reference = {line["id"]: line for line in stored_lines(tmp / "full")}
        ref_result = json.loads(next((tmp / "full" / "results").glob(f"*/{BENCHMARK}.json")).read_text())
        print(f"uninterrupted: {len(reference)} predictions, BLEU-2 {ref_result['metrics']['bleu2']['value']:.4f}")
        for batches in args.kills:
            out = tmp / f"killed{batches}"
            at_kill = kill_after(eval_command(tmp / "model", tmp / "corpus", out, False), out, batches)
            subprocess.run(eval_command(tmp / "model", tmp / "corpus", out, True), check=True, capture_output=True)
            lines = stored_lines(out)
            ids = [line["id"] for line in lines]
            result = json.loads(next((out / "results").glob(f"*/{BENCHMARK}.json")).read_text())
            same = all(reference[line["id"]] == line for line in lines)
            print(f"killed after {at_kill} stored: resumed with {result['generated_now']} generated; "
                  f"{len(ids)} stored, {len(ids) - len(set(ids))} duplicates, "
                  f"{len(set(reference) - set(ids))} missing, identical to uninterrupted: {same}, "
                  f"same metrics: {result['metrics'] == ref_result['metrics']}")


if __name__ == "__main__":
    main()
