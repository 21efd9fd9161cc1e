"""Where an evaluated model's weights go: the GPUs a rank owns, or the CPU.

A data-parallel eval (``medkit eval --nproc N``) gives each rank an equal, contiguous share of the GPUs
it can see, through ``CUDA_VISIBLE_DEVICES``: with 8 GPUs and ``--nproc 8`` every rank holds a whole
model on one GPU (gpt-oss-20b in bf16 is ~42 GB, an 80 GB H100 holds it with room for the KV cache);
with ``--nproc 4`` each rank shards its model over two GPUs with accelerate's ``device_map="auto"``
(a 32B baseline in bf16, ~65 GB, needs that on 80 GB cards once the cache grows). On a machine without
GPUs every rank runs on the CPU with an equal share of the cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


class PlacementError(ValueError):
    """Ranks and devices that do not go together (e.g. more ranks than GPUs)."""


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parent_gpu_ids(n_gpus: int) -> list[str]:
    """The names the parent's GPUs have in ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs): a rank's own
    ``CUDA_VISIBLE_DEVICES`` must list these, not 0..n-1, or it would leave the GPUs the parent was given."""
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:n_gpus] if len(listed) >= n_gpus else [str(i) for i in range(n_gpus)]


@dataclass(frozen=True)
class RankDevices:
    """What one eval rank may use: GPU indices (as the parent sees them) or a number of CPU threads."""

    rank: int
    gpus: tuple[str, ...]  # as CUDA_VISIBLE_DEVICES names them in the parent
    cpu_threads: int

    def environment(self) -> dict[str, str]:
        """Environment variables that confine the rank's process to its devices."""
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}
        threads = str(self.cpu_threads)
        return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def split_devices(nproc: int, n_gpus: int, n_cpus: int | None = None) -> list[RankDevices]:
    """An equal, contiguous share of the GPUs per rank (GPUs that do not divide evenly stay idle);
    without GPUs, an equal share of the CPU cores."""
    if nproc < 1:
        raise PlacementError(f"--nproc must be a positive integer, got {nproc}")
    if n_gpus:
        if nproc > n_gpus:
            raise PlacementError(f"--nproc {nproc} is more ranks than the {n_gpus} visible GPU(s); "
                                 f"use --nproc {n_gpus} or fewer (a rank needs at least one GPU)")
        per_rank, ids = n_gpus // nproc, parent_gpu_ids(n_gpus)
        return [RankDevices(r, tuple(ids[r * per_rank:(r + 1) * per_rank]), 0) for r in range(nproc)]
    cores = n_cpus or os.cpu_count() or 1
    return [RankDevices(r, (), max(1, cores // nproc)) for r in range(nproc)]


def model_placement(n_gpus: int | None = None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that put a model on this process's GPUs: all of it on the
    one GPU a rank sees, sharded layer-wise over several, nothing (the CPU) without a GPU."""
    n_gpus = visible_gpus() if n_gpus is None else n_gpus
    if n_gpus == 0:
        return {}
    if n_gpus == 1:
        return {"device_map": {"": 0}}
    return {"device_map": "auto"}
