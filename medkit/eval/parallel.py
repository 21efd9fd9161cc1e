"""Data-parallel evaluation: N rank processes share the pending batches of every benchmark.

The parent (``medkit eval --nproc N``) has already loaded the benchmarks, opened the stores and cut the
pending items into length-sorted batches. It writes that plan once, starts N ranks, each confined to its
share of the GPUs (or CPU cores) by :mod:`medkit.eval.placement`, and follows their progress from the
store shards. Rank r loads the model once and decodes batches r, r + N, r + 2N, ... of each benchmark,
appending each finished batch to its own shard. Batches are the ones a single process would decode, so
the merged predictions are the same; a killed run leaves complete shard lines that the next run (with
any N) folds in before it plans again.

Run as ``python -m medkit.eval.parallel PLAN --rank R`` (by the parent only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence


from medkit.progress import progress_bar
from medkit.eval.placement import split_devices, visible_gpus

POLL_SECONDS = 1.0
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class AdapterSource:
    """How a rank rebuilds the parent's adapter: a medkit checkpoint folder or a baseline name."""

    model: str
    profile: str | None = None  # a medkit checkpoint's profile; None: inferred from its config
    name: str | None = None  # result folder name; None: the checkpoint folder's or baseline's name
    reasoning_effort: str | None = None  # a medkit checkpoint's harmony reasoning setting; None: the profile's


def open_adapter(source: AdapterSource):
    """The adapter for a medkit checkpoint folder or a baseline of medkit/configs/baselines.yaml; nothing
    heavy is loaded until it generates."""
    from medkit.eval.adapters import MedkitAdapter
    from medkit.profiles import load_profile

    if Path(source.model).is_dir():
        profile = load_profile(source.profile) if source.profile else None
        adapter = MedkitAdapter.load(source.model, profile, name=source.name,
                                     reasoning_effort=source.reasoning_effort)
    else:
        if source.reasoning_effort:
            raise ValueError(f"--reasoning-effort sets GPT-oss's harmony prompt; baseline {source.model!r} "
                             "uses its own chat template")
        from medkit.eval.baselines import baseline_names, load_baseline

        if source.model not in baseline_names():
            raise FileNotFoundError(f"--model {source.model!r}: not a checkpoint folder nor a baseline "
                                    f"({baseline_names()})")
        adapter = load_baseline(source.model)
        if source.name:
            adapter.name = source.name
    adapter.opened_from = source  # what ranks rebuild it from (baselines have their own `source`: the hub id)
    return adapter


class EvalRankError(RuntimeError):
    """A rank exited non-zero; the message names it, its exit code and the end of its log."""


def plan_document(source: AdapterSource, prepared: Sequence[Any], request: Any) -> dict[str, Any]:
    return {
        "source": asdict(source),
        "nproc": request.nproc,
        "request": {"data_root": str(request.data_root) if request.data_root else None,
                    "corpus_dir": str(request.corpus_dir) if request.corpus_dir else None,
                    "limit": request.limit},
        "work": [{"benchmark": job.name, "options": job.loaded.options, "key": job.store.key,
                  "store_root": str(job.store.folder.parent),
                  "settings": {"max_new_tokens": job.settings.max_new_tokens, "batch_size": job.settings.batch_size},
                  "batches": [[s.id for s in batch] for batch in job.batches]}
                 for job in prepared if job.batches],
    }


def decode_in_parallel(adapter: Any, prepared: Sequence[Any], request: Any, progress: bool) -> float:
    """Decode every pending batch on ``request.nproc`` ranks; returns the wall seconds. Raises
    :class:`EvalRankError` if a rank fails (what the ranks finished stays in their shards)."""
    source = getattr(adapter, "opened_from", None)
    if source is None:
        raise ValueError(f"adapter {adapter.name!r} was not opened from a checkpoint or baseline name "
                         "(medkit.eval.parallel.open_adapter), so ranks cannot rebuild it; use nproc=1")
    devices = split_devices(request.nproc, visible_gpus())  # fails before any rank starts
    folder = request.out_dir / "parallel"
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "plan.json"
    plan.write_text(json.dumps(plan_document(source, prepared, request), indent=1, sort_keys=True))
    start = time.perf_counter()
    ranks = [start_rank(plan, rank, folder) for rank in devices]
    try:
        wait_for_ranks(ranks, prepared, progress)
    finally:
        stop(ranks)
    return round(time.perf_counter() - start, 2)


@dataclass
class RankProcess:
    rank: int
    process: subprocess.Popen
    log: Path


def start_rank(plan: Path, devices: Any, folder: Path) -> RankProcess:
    log = folder / f"rank{devices.rank}.log"
    env = {**os.environ, **devices.environment()}
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen([sys.executable, "-m", "medkit.eval.parallel", str(plan), "--rank",
                                    str(devices.rank)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=terminate_with_parent)
    return RankProcess(devices.rank, process, log)


PR_SET_PDEATHSIG = 1


def terminate_with_parent() -> None:
    """In a rank, before it runs: SIGTERM when the parent dies (even by SIGKILL), so no orphaned rank
    goes on appending to a shard that the next run is folding into the store (Linux; elsewhere a no-op)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def wait_for_ranks(ranks: list[RankProcess], prepared: Sequence[Any], progress: bool) -> None:
    """Poll the ranks and their shards (for the progress bar) until all exit; the first failure stops
    the others, so a bad rank (out of memory, a broken image) is reported at once, not hours later."""
    total = sum(job.pending for job in prepared)
    bar = progress_bar(total=total, desc=f"eval on {len(ranks)} ranks", unit="item", disable=not progress)
    try:
        while True:
            bar.update(stored_in_shards(prepared) - bar.n)
            codes = [r.process.poll() for r in ranks]
            failed = [r for r, code in zip(ranks, codes) if code not in (None, 0)]
            if failed:
                raise EvalRankError(rank_failure(failed[0]))
            if all(code == 0 for code in codes):
                return
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()


def stored_in_shards(prepared: Sequence[Any]) -> int:
    count = 0
    for job in prepared:
        for shard in job.store.shard_paths():
            count += shard.read_bytes().count(b"\n")
    return count


def rank_failure(rank: RankProcess) -> str:
    lines = rank.log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    tail = "\n".join(f"  | {line}" for line in lines)
    return (f"eval rank {rank.rank} exited with code {rank.process.returncode} (log: {rank.log}); the batches "
            f"every rank finished are kept: rerun with --resume to continue.\n{tail}")


def stop(ranks: list[RankProcess], grace: float = 30.0) -> None:
    """Terminate ranks still running (the parent failed or was interrupted), then kill stragglers."""
    for r in ranks:
        if r.process.poll() is None:
            r.process.terminate()
    deadline = time.monotonic() + grace
    for r in ranks:
        try:
            r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.process.kill()
            r.process.wait()


# ------------------------------------------------------------------------------------------- rank side

def run_rank(plan_path: Path, rank: int) -> None:
    """Decode this rank's share of the plan: batches rank, rank + N, ... of every benchmark."""
    from medkit.eval.benchmarks import get_benchmark, load_benchmark
    from medkit.eval.generation import DecodeSettings
    from medkit.eval.runner import decode_batches
    from medkit.eval.store import PredictionStore

    plan = json.loads(plan_path.read_text())
    nproc, request = plan["nproc"], plan["request"]
    mine = [(job, job["batches"][rank::nproc]) for job in plan["work"]]
    mine = [(job, batches) for job, batches in mine if batches]
    if not mine:
        return
    adapter = open_adapter(AdapterSource(**plan["source"]))
    data_root = Path(request["data_root"]) if request["data_root"] else None
    for job, batches in mine:
        loaded = load_benchmark(job["benchmark"], data_root=data_root,
                                corpus_dir=None if data_root else Path(request["corpus_dir"]),
                                limit=request["limit"], options=job["options"] or None)
        by_id = {s.id: s for s in loaded.items}
        store = PredictionStore(job["store_root"], job["benchmark"], job["key"], rank=rank)
        settings = DecodeSettings(**job["settings"])
        decode_batches(adapter, get_benchmark(job["benchmark"]), [[by_id[i] for i in b] for b in batches],
                       store, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medkit.eval.parallel", description=__doc__.splitlines()[0])
    parser.add_argument("plan", type=Path)
    parser.add_argument("--rank", type=int, required=True)
    args = parser.parse_args(argv)
    run_rank(args.plan, args.rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
