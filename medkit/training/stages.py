"""The three-stage curriculum as data: StageConfig loaded from YAML, defaulting to the paper's Table 2.

Which parts train is a flag per part (vision / projector / llm), applied by ``apply_trainable``; the
optimizer gets one parameter group per trained part and decay class (``optimizer_groups``).

The paper contradicts itself on the vision encoder: Table 2 keeps it frozen in stages 0-1 and trains it
in stage 2, while the text trains it in pretraining and mid-training too. The default is Table 2;
``vision_schedule="text"`` makes the encoder trainable in every stage.

Batch sizes count samples, packed into rows (``BatchPlan``); when a stage saves checkpoints is a
``CheckpointPolicy`` in its YAML; what cannot fit a row is handled by ``overlong`` before training
(``medkit.data.mixture``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from torch import nn

from medkit.config import ConfigError, load_yaml
from medkit.profiles import CONFIG_DIR

if TYPE_CHECKING:
    from medkit.profiles import Profile

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
class BatchPlan:
    """What one optimizer step of a stage holds. Batch sizes count samples (conversations), never rows or
    tokens:

    - ``per_device`` samples go to each rank per micro-step (one forward and backward). The packing
      collator lays them into rows of at most ``max_length`` tokens, first-fit-decreasing, a sample never
      split across rows, so a micro-step is 1 to ``per_device`` rows and at most ``per_device x
      max_length`` tokens per rank (the padded path: ``per_device`` rows of the longest sample).
    - ``global_batch`` samples make one optimizer step, over every rank and micro-step.
    - gradient accumulation is derived, ``global_batch / (per_device x world_size)``, and must be whole.

    Table 2's "16 per device / 128 global / accumulation 1" on 8 GPUs is 16 samples per GPU per step,
    packed into rows of <= 32,768 tokens. On 32 GPUs the same 128-sample step is per-device 4
    (accumulation 1), or per-device 1 or 2 with accumulation 4 or 2. The loss is a mean over the
    supervised tokens of the whole optimizer step (the Trainer's ``num_items_in_batch``), and attention
    stays inside each sample, so how a step's samples are split into micro-steps and rows changes which
    tensors are formed, not the loss. DeepSpeed's ``train_micro_batch_size_per_gpu`` is ``per_device``
    (samples); the tensors' row count varies with packing.
    """

    per_device: int
    global_batch: int
    world_size: int
    max_length: int

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.per_device * self.world_size)

    @property
    def max_rows_per_micro_step(self) -> int:
        """Rows one rank's micro-step can become: one per sample when no two samples share a row."""
        return self.per_device

    @property
    def max_tokens_per_micro_step(self) -> int:
        return self.per_device * self.max_length


def batch_choices(global_batch: int, world_size: int) -> list[tuple[int, int]]:
    """(per-device, accumulation) pairs that make ``global_batch`` on ``world_size`` ranks."""
    if global_batch % world_size:
        return []
    per_rank = global_batch // world_size
    return [(p, per_rank // p) for p in range(1, per_rank + 1) if per_rank % p == 0]


def bad_batch_message(stage: str, per_device: int, global_batch: int, world_size: int) -> str:
    """Why per-device x ranks does not divide the global batch, with the combinations that would."""
    step = per_device * world_size
    nearest = -(-global_batch // step) * step  # the next global batch this per-device size can make
    choices = batch_choices(global_batch, world_size)
    head = (f"stage {stage}: global batch {global_batch} on {world_size} ranks needs per-device x "
            f"{world_size} to divide {global_batch}")
    if not choices:
        return (f"{head}, and no per-device size does ({global_batch} is not a multiple of {world_size}): "
                f"--global-batch-size {nearest} for per-device {per_device}")
    sizes = _or_list([str(p) for p, _ in choices])
    accumulations = ", ".join(str(a) for _, a in choices)
    return (f"{head}: --per-device-batch-size {sizes} (accumulation {accumulations}), "
            f"or --global-batch-size {nearest} for per-device {per_device}")


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a stage saves a checkpoint a killed run can resume from (the newest complete one).

    At paper scale one save is ~300 GB (~42 GB of gathered bf16 weights + ~255 GB of ZeRO optimizer
    state) and mid-training is 151,112 steps, so a step interval sized for the toy profile would write
    petabytes: the default is by wall clock, every 6 h (a few saves per day; at most 6 h of work lost).
    ``every_steps`` and ``every_minutes`` may be combined (whichever comes first; a save restarts the
    clock); at least one is set. ``model_only`` saves the weights alone (~42 GB): such a checkpoint
    cannot resume exactly (no optimizer moments, scheduler, RNG or data position), so a killed stage
    never resumes from one and starts over. ``keep`` checkpoints stay on disk (older ones are deleted):
    two, since the newest may be cut short by a kill and resuming then falls back to the one before.
    """

    every_steps: int | None = None
    every_minutes: float | None = 360.0
    model_only: bool = False
    keep: int = 2

    def __post_init__(self) -> None:
        if self.every_steps is None and self.every_minutes is None:
            raise ConfigError("checkpoint: set every_steps or every_minutes (a stage that never saves cannot resume)")
        if self.every_steps is not None and self.every_steps < 1:
            raise ConfigError(f"checkpoint.every_steps must be a positive integer, got {self.every_steps}")
        if self.every_minutes is not None and self.every_minutes <= 0:
            raise ConfigError(f"checkpoint.every_minutes must be positive, got {self.every_minutes}")
        if self.keep < 1:
            raise ConfigError(f"checkpoint.keep must be at least 1, got {self.keep}")

    def saves_during(self, steps: int, hours: float) -> int:
        """At most how many checkpoints a run of ``steps`` optimizer steps over ``hours`` writes (for the
        disk traffic of a plan; what stays on disk is ``keep`` of them)."""
        by_steps = steps // self.every_steps if self.every_steps else 0
        by_clock = math.floor(hours * 60 / self.every_minutes) if self.every_minutes else 0
        return by_steps + by_clock

    def describe(self) -> str:
        intervals = [f"every {self.every_steps:,} steps"] if self.every_steps else []
        if self.every_minutes:
            intervals.append(f"every {self.every_minutes:g} min")
        what = ("weights only (cannot resume: a killed stage starts over)" if self.model_only
                else "weights + optimizer state (resumable)")
        return f"{' or '.join(intervals)}, {what}, keep {self.keep}"


def checkpoint_policy(stage: StageConfig, *, save_steps: int | None = None, save_minutes: float | None = None,
                      model_only: bool | None = None) -> CheckpointPolicy:
    """The stage's policy with command-line overrides: an interval given there replaces both of the
    stage's intervals (``--save-steps 3`` alone saves every 3 steps and on no clock)."""
    policy = stage.checkpoint
    if save_steps is not None or save_minutes is not None:
        policy = replace(policy, every_steps=save_steps, every_minutes=save_minutes)
    if model_only is not None:
        policy = replace(policy, model_only=model_only)
    return policy


@dataclass(frozen=True)
class StageConfig:
    name: str
    index: int
    mixture: Literal["PT", "MT", "IT"]
    init_from: str | None
    trainable: Trainable
    learning_rate: LearningRates
    synthetic_tasks: list[str]  # the tiny profile's stand-in for the mixture
    # task -> draws per training record per epoch (the profile's training.task_weights; absent: 1)
    synthetic_weights: dict[str, float] = field(default_factory=dict)
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
    per_device_batch_size: int = 16  # samples per rank per micro-step (see BatchPlan)
    global_batch_size: int = 128  # samples per optimizer step
    bf16: bool = True
    gradient_checkpointing: bool = True
    # packed: samples laid into rows of up to max_length with per-sample attention; padded: pad-to-longest
    batching: Literal["packed", "padded"] = "packed"
    # a sample longer than it may be (max_length, or the model's max_position_embeddings if smaller):
    # "drop" leaves it out before training and counts it in data_report.json; "error" stops before any
    # rank starts, naming the records
    overlong: Literal["drop", "error"] = "drop"
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    def __post_init__(self) -> None:
        if self.per_device_batch_size < 1 or self.global_batch_size < 1:
            raise ConfigError(f"stage {self.name}: batch sizes must be positive, got per-device "
                              f"{self.per_device_batch_size}, global {self.global_batch_size}")

    def batch_plan(self, world_size: int) -> BatchPlan:
        """The stage's batches on ``world_size`` ranks; a combination that does not divide is an error
        listing the ones that do."""
        if self.global_batch_size % (self.per_device_batch_size * world_size):
            raise ConfigError(bad_batch_message(self.name, self.per_device_batch_size, self.global_batch_size,
                                                world_size))
        return BatchPlan(self.per_device_batch_size, self.global_batch_size, world_size, self.max_length)


def with_batch_sizes(stage: StageConfig, per_device: int | None = None, global_batch: int | None = None) -> StageConfig:
    """The stage with the batch sizes that are given replaced."""
    return replace(stage, per_device_batch_size=per_device or stage.per_device_batch_size,
                   global_batch_size=global_batch or stage.global_batch_size)


def stage_for_profile(stage: StageConfig, profile: Profile) -> StageConfig:
    """The stage with the profile's stand-ins applied: its batch sizes, its learning rate for every part
    if it has one for this stage (the tiny profile's toy-size values, see its ``training:``), and for a
    model built from the profile's configs rows no longer than its positions (Table 2's 32,768 tokens
    are for the released GPT-oss's 131,072; the toy model has 8,192). A released model's positions are
    checked instead (``check_row_length``): its config may not be the profile's."""
    stage = with_batch_sizes(stage, profile.training.per_device_batch_size, profile.training.global_batch_size)
    positions = profile.model.text_config.get("max_position_embeddings")
    if profile.is_tiny and positions:
        stage = replace(stage, max_length=min(stage.max_length, positions))
    weights = profile.training.task_weights.get(stage.name, {})
    unknown = sorted(set(weights) - set(stage.synthetic_tasks))
    if unknown:
        raise ConfigError(f"profile {profile.name}: training.task_weights.{stage.name} names task(s) {unknown} that "
                          f"stage {stage.name} does not train on; its tasks: {stage.synthetic_tasks}")
    if weights:
        stage = replace(stage, synthetic_weights={**stage.synthetic_weights, **weights})
    rate = profile.training.learning_rate.get(stage.name)
    if rate is None:
        return stage
    rates = rate if isinstance(rate, dict) else dict.fromkeys(("vision", "projector", "llm"), rate)
    return replace(stage, learning_rate=replace(stage.learning_rate, **rates))


def check_row_length(stage: StageConfig, max_position_embeddings: int) -> None:
    """Refuse a stage whose rows are longer than the model has positions for: its samples could be up to
    ``max_length`` tokens, and those past the positions would either train on rotary angles the model
    never learned or be dropped without the config saying so."""
    if stage.max_length > max_position_embeddings:
        raise ConfigError(f"stage {stage.name}: max_length {stage.max_length:,} tokens exceeds the model's "
                          f"max_position_embeddings {max_position_embeddings:,}; lower the stage's max_length to "
                          f"at most {max_position_embeddings:,} or start from a model with more positions")


def load_stage(name: str, vision_schedule: VisionSchedule = "table2") -> StageConfig:
    if name not in STAGE_NAMES:
        raise ConfigError(f"unknown stage {name!r}; stages: {list(STAGE_NAMES)}")
    if vision_schedule not in ("table2", "text"):
        raise ConfigError(f"vision_schedule must be 'table2' or 'text', got {vision_schedule!r}")
    path = CONFIG_DIR / "stages" / f"{name}.yaml"
    try:
        stage = load_yaml(StageConfig, path)
    except ConfigError as e:  # a value check of a nested section (checkpoint) does not know the file
        raise e if str(path) in str(e) else ConfigError(f"{path}: {e}") from None
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

