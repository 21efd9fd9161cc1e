"""DeepSpeed ZeRO-3 for the stages and the ablation: the config and the process set-up.

Batch sizes, precision and clipping are left "auto" so transformers' Trainer fills them from its
TrainingArguments; the optimizer is the Trainer's (one group per trained part, see stages.py).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP



def zero3_config() -> dict:
    """The same for every stage and the ablation: what differs (batches, precision, clipping) is "auto"."""
    return {
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
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
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


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
