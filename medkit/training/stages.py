"""The three-stage curriculum as data: StageConfig loaded from YAML, defaulting to the paper's Table 2.

Which parts train is a flag per part (vision / projector / llm), applied by ``apply_trainable``; the
optimizer gets one parameter group per trained part and decay class (``optimizer_groups``).

The paper contradicts itself on the vision encoder: Table 2 keeps it frozen in stages 0-1 and trains it
in stage 2, while the text trains it in pretraining and mid-training too. The default is Table 2;
``vision_schedule="text"`` makes the encoder trainable in every stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from torch import nn

from medkit.config import ConfigError, load_yaml
from medkit.profiles import CONFIG_DIR

STAGE_NAMES = ("pretrain", "midtrain", "instruct")
VisionSchedule = Literal["table2", "text"]


@dataclass(frozen=True)
class Trainable:
    vision: bool
    projector: bool
    llm: bool


@dataclass(frozen=True)
class LearningRates:
    vision: float
    projector: float
    llm: float


@dataclass(frozen=True)
class StageConfig:
    name: str
    index: int
    mixture: Literal["PT", "MT", "IT"]
    init_from: str | None
    trainable: Trainable
    learning_rate: LearningRates
    synthetic_tasks: list[str]  # the tiny profile's stand-in for the mixture
    # Table 2 / section 3.3 defaults, shared by all stages
    optimizer: str = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.05
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03  # the paper gives 0.01-0.03, not a value per stage
    epochs: float = 1.0
    max_length: int = 32768
    per_device_batch_size: int = 16
    global_batch_size: int = 128
    bf16: bool = True
    gradient_checkpointing: bool = True
    # packed: samples laid into rows of up to max_length with per-sample attention; padded: pad-to-longest
    batching: Literal["packed", "padded"] = "packed"

    def gradient_accumulation(self, world_size: int) -> int:
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"stage {self.name}: global batch {self.global_batch_size} is not a multiple of "
                f"{self.per_device_batch_size} per device x {world_size} ranks"
            )
        return self.global_batch_size // per_step


def load_stage(name: str, vision_schedule: VisionSchedule = "table2") -> StageConfig:
    if name not in STAGE_NAMES:
        raise ConfigError(f"unknown stage {name!r}; stages: {list(STAGE_NAMES)}")
    if vision_schedule not in ("table2", "text"):
        raise ConfigError(f"vision_schedule must be 'table2' or 'text', got {vision_schedule!r}")
    stage = load_yaml(StageConfig, CONFIG_DIR / "stages" / f"{name}.yaml")
    if vision_schedule == "text":
        stage = replace(stage, trainable=replace(stage.trainable, vision=True))
    return stage


def load_curriculum(vision_schedule: VisionSchedule = "table2") -> list[StageConfig]:
    return [load_stage(name, vision_schedule) for name in STAGE_NAMES]


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The trainable units of a MedGPT-OSS model; the LM includes its output head."""
    return {
        "vision": [model.model.vision_tower],
        "projector": [model.model.multi_modal_projector],
        "llm": [model.model.language_model, model.lm_head],
    }


def apply_trainable(model: nn.Module, trainable: Trainable) -> dict[str, int]:
    """Set requires_grad per part from the stage flags; returns trainable parameter counts per part."""
    counts = {}
    for part, modules in model_parts(model).items():
        flag = getattr(trainable, part)
        counts[part] = 0
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(flag)
                counts[part] += p.numel() if flag else 0
    return counts


def optimizer_groups(model: nn.Module, stage: StageConfig) -> list[dict]:
    """One AdamW group per trained part and decay class: weight decay only on tensors of 2+ dims
    (matrices, expert weights, embeddings), never on biases, norms or attention sinks."""
    groups = []
    for part, modules in model_parts(model).items():
        if not getattr(stage.trainable, part):
            continue
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        lr = getattr(stage.learning_rate, part)
        decay = [p for p in params if _ndim(p) >= 2]
        no_decay = [p for p in params if _ndim(p) < 2]
        groups.append({"name": f"{part}.decay", "params": decay, "lr": lr, "weight_decay": stage.weight_decay})
        groups.append({"name": f"{part}.no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _ndim(param: nn.Parameter) -> int:
    """Dimensions of a parameter, also when ZeRO-3 has partitioned it to an empty tensor."""
    return len(getattr(param, "ds_shape", param.shape))


def table2_rows(stages: list[StageConfig]) -> list[tuple[str, str]]:
    """Table 2 (hyperparameter, value) rows rendered from the stage configs."""
    by_name = {s.name: s for s in stages}
    first = stages[0]
    frozen_in = [str(s.index) for s in stages if not s.trainable.vision]
    trained_in = [str(s.index) for s in stages if s.trainable.vision]
    vision = "; ".join(
        part for part in (
            f"Frozen in stage {'–'.join(frozen_in) if len(frozen_in) > 1 else frozen_in[0]}" if frozen_in else "",
            f"jointly trained in stage {', '.join(trained_in)}" if trained_in else "",
        ) if part
    )
    return [
        ("Optimizer", "AdamW (DeepSpeed ZeRO-3)"),
        ("LR schedule", f"Cosine decay with warmup ratio {first.warmup_ratio}"),
        ("Max sequence length", f"{first.max_length:,}"),
        ("Per-device batch size", f"{first.per_device_batch_size} (global batch size: {first.global_batch_size})"),
        ("Projector LR (stage 0)", f"{_sci(by_name['pretrain'].learning_rate.projector)} (LLM "
                                   f"{'frozen' if not by_name['pretrain'].trainable.llm else 'trained'})"),
        ("LLM LR (mid-training)", _sci(by_name['midtrain'].learning_rate.llm)),
        ("LLM LR (instruction tuning)", _sci(by_name['instruct'].learning_rate.llm)),
        ("Vision encoder", vision),
        ("Weight decay", f"{first.weight_decay}"),
        ("Precision", "bfloat16 with gradient checkpointing" if first.bf16 and first.gradient_checkpointing
         else ("bfloat16" if first.bf16 else "float32")),
    ]


def _sci(value: float) -> str:
    """1e-3 -> '1e-3', 2e-05 -> '2e-5': the paper's notation without its typesetting."""
    exponent = math.floor(math.log10(value))
    return f"{value / 10**exponent:g}e{exponent}"

