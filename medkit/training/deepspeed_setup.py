"""DeepSpeed ZeRO-3 for the stages and the ablation: the config and the process set-up.

Batch sizes, precision and clipping are left "auto" so transformers' Trainer fills them from its
TrainingArguments; the optimizer is the Trainer's (one group per trained part, see stages.py).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP



# transformers' "auto" bucket sizes are hidden^2 (reduce) and 0.9 x hidden^2 (prefetch): 8.3M elements at
# GPT-oss's 2,880, but 4,096 at the tiny profile's 64, where ZeRO-3 then ran one reduce-scatter per one or
# two parameters, ~64 a step. A floor of 2^22 elements binds only below a width of 2,048; on the tiny
# stage it took a 2-rank CPU step from 0.58 to 0.36 s (benchmarks/README.md).
MIN_BUCKET_ELEMENTS = 2**22


def bucket_sizes(hidden_size: int | None) -> dict:
    """ZeRO-3's reduce and prefetch bucket sizes for a language model of ``hidden_size``: transformers'
    auto values with :data:`MIN_BUCKET_ELEMENTS` as a floor ("auto" when the width is not known here)."""
    if hidden_size is None:
        return {"reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto"}
    return {"reduce_bucket_size": max(hidden_size * hidden_size, MIN_BUCKET_ELEMENTS),
            "stage3_prefetch_bucket_size": max(int(0.9 * hidden_size * hidden_size), MIN_BUCKET_ELEMENTS)}


def language_width(profile) -> int | None:
    """The language model's hidden size as the profile states it (the tiny config, or the released one's
    mirror on paper), for :func:`zero3_config`."""
    return profile.model.text_config.get("hidden_size")


def zero3_config(hidden_size: int | None = None) -> dict:
    """The same for every stage and the ablation: what differs (batches, precision, clipping) is "auto";
    the buckets follow the language model's ``hidden_size`` (see :func:`bucket_sizes`)."""
    return {
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            **bucket_sizes(hidden_size),
            "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True,  # save a whole checkpoint, not shards
        },
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def init_distributed(args) -> None:
    """Set up the process group before the model is built, so ZeRO-3 partitions over every rank.

    Reading ``args.device`` makes the Trainer's accelerate state create the group; DeepSpeed's own comm
    layer is then initialised on it (gloo on CPU, nccl on GPUs).
    """
    _ = args.device
    tell_deepspeed_the_local_ranks()
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def tell_deepspeed_the_local_ranks() -> None:
    """On CPU, set DeepSpeed's LOCAL_SIZE to the launcher's ranks on this node (torchrun's LOCAL_WORLD_SIZE).
    Without it DeepSpeed's CPU accelerator counts its "devices" by running `numactl --hardware` in a
    subprocess on every gradient reduce-scatter (~64 per step on the tiny profile). A value set is kept."""
    if not torch.cuda.is_available() and "LOCAL_WORLD_SIZE" in os.environ:
        os.environ.setdefault("LOCAL_SIZE", os.environ["LOCAL_WORLD_SIZE"])


def mark_moe_leaf_modules(model: nn.Module) -> None:
    """Make each GptOss MoE block a ZeRO-3 leaf: experts not routed to on one rank would otherwise never
    be gathered there, and ranks would wait on each other forever."""
    name_cpu_accelerator()
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, [GptOssMLP])


DS_ACCELERATOR = "DS_ACCELERATOR"  # DeepSpeed's explicit accelerator choice (else it auto-detects)


def cpu_environment() -> dict[str, str]:
    """Environment for DeepSpeed ranks on a machine without GPUs."""
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault(DS_ACCELERATOR, "cpu")
    return env


def name_cpu_accelerator() -> None:
    """On a machine without GPUs, tell DeepSpeed in this process that it runs on the CPU, as
    :func:`cpu_environment` tells the ranks, before anything imports it.

    A Trainer and ``save_pretrained`` import deepspeed even when nothing uses it (accelerate's
    ``extract_model_from_parallel`` does whenever the package is installed), and DeepSpeed's auto-detection
    then prints "[WARNING] ... Setting accelerator to CPU. If you have GPU or other accelerator, we were
    unable to detect it." into every CPU run (notebook 02's executed copy). With ``DS_ACCELERATOR=cpu`` set
    it takes the CPU as chosen and says so at INFO only. A value already set is kept; on a machine with GPUs
    nothing changes (DeepSpeed finds CUDA itself)."""
    if not torch.cuda.is_available():
        os.environ.setdefault(DS_ACCELERATOR, "cpu")


def build_cpu_comm_op() -> bool:
    """Compile DeepSpeed's shared-memory communication op for CPU ranks now (a g++ build of ~30 s, cached
    under ``~/.cache/torch_extensions`` or ``$TORCH_EXTENSIONS_DIR``), so the first training notebook does
    not spend its first step on it. ``make env`` calls this on CPU machines. False where the op does not
    apply (a GPU machine, or a CPU DeepSpeed cannot build it for)."""
    if torch.cuda.is_available():
        return False
    name_cpu_accelerator()
    from deepspeed.comm.torch import build_shm_op  # what DeepSpeed's CPU comm backend runs when it starts

    return build_shm_op() is not None


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--build-cpu-ops"]:
        sys.exit("usage: python -m medkit.training.deepspeed_setup --build-cpu-ops")
    print("DeepSpeed CPU communication op: " + ("built" if build_cpu_comm_op() else "not needed here"))
