"""Compute plan for one curriculum stage on given hardware: per-GPU memory, checkpoints and GPU-hours.

Per-GPU memory of one micro-step is model states plus what the step holds (activations of the
checkpointed layers, one layer's recompute with its attention and MoE working set, the vision tower at
the step's tiles, the projector, the supervised-token loss, gathered ZeRO-3 parameters, the CUDA runtime:
:mod:`medkit.training.memory_plan`), with a fits / does-not-fit verdict and the largest micro-batch that
fits. A micro-step's size depends on the data (samples are packed into rows of up to ``max_length``
tokens), so the plan takes a typical sample as an assumption it prints (``sample_tokens``,
``sample_tiles``); ``benchmarks/paper_slice_memory.py`` checks the memory formulas against a measured
step of a real-width slice.

Memory comes from DeepSpeed's own ZeRO-3 estimator (``estimate_zero3_model_states_mem_needs``) fed with
parameter counts of the meta-device model, plus a frozen-aware variant of the same formula (below).
Time is estimated two ways: scaling the paper's measured stage times on 8 x B200 by peak BF16 FLOPS, and,
given a token count, from a FLOPs count divided by peak x an assumed MFU. Hardware specs and the paper's
reference run are data (``configs/hardware.yaml``).

Frozen-aware memory: DeepSpeed's estimate assumes every parameter trains, i.e. 18 bytes per parameter
in ZeRO-3 = 2 (bf16 weights) + 16 (gradients, fp32 master weights and the two Adam moments). ZeRO-3
still shards the bf16 weights of every parameter, but the other 16 bytes exist only for trainable
ones, so the frozen-aware estimate is the same formula with 2 * total + 16 * trainable bytes. With every
part trainable it equals DeepSpeed's numbers exactly.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


from medkit.config import ConfigError, from_dict, load_yaml
from medkit.profiles import CONFIG_DIR, Profile, load_profile
from medkit.training.memory_plan import StepMemory, StepShape, step_memory
from medkit.training.stages import CheckpointPolicy, StageConfig, Trainable, model_parts

HARDWARE_PATH = CONFIG_DIR / "hardware.yaml"
DEFAULT_MFU = 0.25  # an assumption; our measured H100 slice ran at 23.3% MFU with flex attention
ALL_TRAINABLE_BYTES = 18  # DeepSpeed's ZeRO-3 bytes per parameter (no offload)
WEIGHT_BYTES = 2  # bf16 weights, kept for every parameter
TRAINABLE_STATE_BYTES = ALL_TRAINABLE_BYTES - WEIGHT_BYTES  # grads + fp32 master + Adam m, v
FORWARD_ORDER = ("vision", "projector", "llm")  # the order activations flow through the parts
GIB = 2**30

# A typical sample when the data is not at hand: one image at the most tiles (12 + thumbnail = 1,872
# visual tokens with CLIP-L/336) and a short turn. An assumption, printed with the plan.
DEFAULT_SAMPLE_TOKENS = 2000
DEFAULT_SAMPLE_TILES = 13
MAX_SEARCH_FACTOR = 8
DEFAULT_DISK_GBPS = 2.0  # sustained checkpoint write speed, GB/s: an assumption (local NVMe RAID; NFS is slower)


# ---- hardware and the reference run (data) ------------------------------------------------------------

@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    memory_gib: float
    bf16_dense_tflops: float  # dense BF16 Tensor Core peak, no structured sparsity
    gpus_per_node: int


@dataclass(frozen=True)
class WallClock:
    hours: int
    minutes: int

    @property
    def as_hours(self) -> float:
        return self.hours + self.minutes / 60


@dataclass(frozen=True)
class ReferenceRun:
    hardware: str
    num_gpus_per_node: int
    num_nodes: int
    wall_clock: dict[str, WallClock]  # stage name -> measured time

    @property
    def num_gpus(self) -> int:
        return self.num_gpus_per_node * self.num_nodes


@dataclass(frozen=True)
class HardwareFile:
    reference: ReferenceRun
    gpus: dict[str, dict[str, Any]]  # checked entry by entry, so errors name the GPU


@cache
def _load_file(path: Path) -> tuple[ReferenceRun, dict[str, Hardware]]:
    raw = load_yaml(HardwareFile, path)
    gpus = {
        name: from_dict(Hardware, {"name": name, **spec}, where=f"{path}:gpus.{name}")
        for name, spec in raw.gpus.items()
    }
    if raw.reference.hardware not in gpus:
        raise ConfigError(f"{path}: reference.hardware {raw.reference.hardware!r} is not one of {sorted(gpus)}")
    return raw.reference, gpus


def hardware_names(path: str | Path = HARDWARE_PATH) -> list[str]:
    return list(_load_file(Path(path))[1])


def load_hardware(name: str, path: str | Path = HARDWARE_PATH) -> Hardware:
    gpus = _load_file(Path(path))[1]
    if name not in gpus:
        raise ConfigError(f"unknown hardware {name!r}; known: {list(gpus)}")
    return gpus[name]


def load_reference(path: str | Path = HARDWARE_PATH) -> ReferenceRun:
    return _load_file(Path(path))[0]


# ---- parameter counts of the model ---------------------------------------------------------------------

@dataclass(frozen=True)
class ModelCounts:
    """Parameter counts of a profile's model, per trainable part (as ``stages.model_parts`` splits it)."""

    total: int
    largest_layer: int  # params held directly by one module, as DeepSpeed's ``model_to_params`` counts
    largest_leaf: int  # the most params ZeRO-3 gathers at once: a whole MoE block (a z3 leaf) or a module
    parts: dict[str, int]  # vision / projector / llm
    llm_experts: int  # MoE expert weights and biases inside the LM
    llm_embed_tokens: int
    experts_per_token: int
    num_experts: int

    def trainable(self, trainable: Trainable) -> int:
        return sum(n for part, n in self.parts.items() if getattr(trainable, part))

    @property
    def llm_active(self) -> int:
        """LM parameters used per token: all but the unrouted experts (top-k of E experts per token)."""
        inactive = self.llm_experts * (self.num_experts - self.experts_per_token) // self.num_experts
        return self.parts["llm"] - inactive

    @property
    def llm_active_matmul(self) -> int:
        """Active LM params that do a matmul per token: the input embedding is a lookup, not a matmul."""
        return self.llm_active - self.llm_embed_tokens


def model_counts(profile: str | Profile = "paper") -> ModelCounts:
    if isinstance(profile, str):
        return _cached_counts(profile)
    return _count(profile)


@cache
def _cached_counts(profile_name: str) -> ModelCounts:
    return _count(load_profile(profile_name))


def _count(profile: Profile) -> ModelCounts:
    from medkit.model.summary import meta_model, part_of  # builds the model; import only when needed

    model = meta_model(profile)
    text_config = model.config.text_config
    parts = {part: sum(p.numel() for m in modules for p in m.parameters())
             for part, modules in model_parts(model).items()}
    by_name = dict(model.named_parameters())
    return ModelCounts(
        total=sum(p.numel() for p in model.parameters()),
        largest_layer=_largest_layer(model),
        largest_leaf=_largest_leaf(model),
        parts=parts,
        llm_experts=sum(p.numel() for n, p in by_name.items() if part_of(n) == "lm.experts"),
        llm_embed_tokens=sum(p.numel() for n, p in by_name.items() if part_of(n) == "lm.embed_tokens"),
        experts_per_token=text_config.num_experts_per_tok,
        num_experts=text_config.num_local_experts,
    )


def _largest_leaf(model) -> int:
    """The largest set of parameters ZeRO-3 gathers at once: a GptOss MoE block is made one leaf (all its
    experts gathered together, ``deepspeed_setup.mark_moe_leaf_modules``), any other module gathers the
    parameters it holds directly."""
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

    return max(sum(p.numel() for p in m.parameters(recurse=isinstance(m, GptOssMLP))) for m in model.modules())


def _largest_layer(model) -> int:
    # DeepSpeed's model_to_params computes this too, but it deduplicates tensors by data_ptr(), which is
    # 0 for every meta tensor, so its total would collapse to one tensor; only the largest layer is reused.
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


# ---- memory --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryEstimate:
    offload_param: bool
    offload_optimizer: bool
    zero_init: bool
    per_gpu_bytes: int
    per_cpu_bytes: int  # per node

    @property
    def options(self) -> str:
        return (f"offload_param={'cpu' if self.offload_param else 'none'}, "
                f"offload_optimizer={'cpu' if self.offload_optimizer else 'none'}, "
                f"zero_init={int(self.zero_init)}")


# (offload_optimizer, offload_param) in the order DeepSpeed's estimate_*_all_cold prints them
OFFLOAD_OPTIONS = ((True, True), (True, False), (False, False))


def deepspeed_estimates(total_params: int, largest_layer_params: int, num_gpus_per_node: int,
                        num_nodes: int) -> list[MemoryEstimate]:
    """Every configuration DeepSpeed's ``estimate_zero3_model_states_mem_needs_all_cold`` prints."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    rows = []
    for offload_optimizer, offload_param in OFFLOAD_OPTIONS:
        for zero_init in (True, False):
            with contextlib.redirect_stdout(io.StringIO()):
                cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                    total_params=total_params, largest_layer_params=largest_layer_params,
                    num_gpus_per_node=num_gpus_per_node, num_nodes=num_nodes, cpu_offload=offload_optimizer,
                    cpu_offload_params=offload_param, zero_init=zero_init)
            rows.append(MemoryEstimate(offload_param, offload_optimizer, zero_init, gpu, cpu))
    return rows


def frozen_aware_estimates(total_params: int, trainable_params: int, largest_layer_params: int,
                           num_gpus_per_node: int, num_nodes: int,
                           additional_buffer_factor: float = 1.5) -> list[MemoryEstimate]:
    """DeepSpeed's zero_init=True formulas with 2 bytes for every parameter and 16 more only for trainable
    ones (see the module docstring); zero_init=False is left out: it only changes the CPU buffer."""
    total_gpus = num_gpus_per_node * num_nodes
    node_share = 1 / num_nodes
    gathered_layer = 4 * largest_layer_params
    weights = WEIGHT_BYTES * total_params
    states = TRAINABLE_STATE_BYTES * trainable_params
    rows = []
    for offload_optimizer, offload_param in OFFLOAD_OPTIONS:
        if offload_param:
            gpu = gathered_layer
            cpu = (weights + states) * node_share * additional_buffer_factor
        elif offload_optimizer:
            gpu = gathered_layer + int(weights / total_gpus)
            cpu = states * node_share * additional_buffer_factor
        else:
            gpu = gathered_layer + int((weights + states) / total_gpus)
            cpu = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
        rows.append(MemoryEstimate(offload_param, offload_optimizer, True, int(gpu), int(cpu)))
    return rows


# ---- time ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceTime:
    """(a) The paper's measured time scaled by peak BF16 FLOPS: assumes the same MFU as the paper's run."""

    reference_wall_hours: float
    reference_gpu_hours: float
    peak_ratio: float  # reference peak / target peak
    gpu_hours: float
    wall_hours: float


@dataclass(frozen=True)
class FlopsTime:
    """(b) FLOPs / (peak x MFU) for a user-given token count."""

    tokens: float
    flops_per_token: float
    multipliers: dict[str, int]  # part -> 6 (trained), 4 (frozen, backpropagated through), 2 (forward only)
    total_flops: float
    mfu: float
    gpu_hours: float
    wall_hours: float
    implied_reference_mfu: float  # the MFU at which these FLOPs take the paper's measured time


def flops_multipliers(trainable: Trainable) -> dict[str, int]:
    """FLOPs per parameter per token: forward 2; backward 2 for activation gradients + 2 for weight
    gradients. A frozen part needs activation gradients only when a trainable part lies before it."""
    multipliers = {}
    upstream_trains = False
    for part in FORWARD_ORDER:
        trains = getattr(trainable, part)
        multipliers[part] = 6 if trains else (4 if upstream_trains else 2)
        upstream_trains = upstream_trains or trains
    return multipliers


def flops_per_token(counts: ModelCounts, trainable: Trainable) -> float:
    # Every token is counted through the vision tower and projector as if it were an image token: an
    # overestimate that keeps the count to one token number (they are ~8% of the active parameters).
    params = {"vision": counts.parts["vision"], "projector": counts.parts["projector"],
              "llm": counts.llm_active_matmul}
    return float(sum(m * params[part] for part, m in flops_multipliers(trainable).items()))


def _reference_time(stage: str, hardware: Hardware, total_gpus: int, reference: ReferenceRun,
                    reference_hardware: Hardware) -> ReferenceTime:
    if stage not in reference.wall_clock:
        raise ConfigError(f"no reference time for stage {stage!r}; known: {sorted(reference.wall_clock)}")
    wall = reference.wall_clock[stage].as_hours
    reference_gpu_hours = wall * reference.num_gpus
    ratio = reference_hardware.bf16_dense_tflops / hardware.bf16_dense_tflops
    gpu_hours = reference_gpu_hours * ratio
    return ReferenceTime(wall, reference_gpu_hours, ratio, gpu_hours, gpu_hours / total_gpus)


def _flops_time(counts: ModelCounts, trainable: Trainable, tokens: float, mfu: float, hardware: Hardware,
                total_gpus: int, reference: ReferenceTime, reference_hardware: Hardware) -> FlopsTime:
    per_token = flops_per_token(counts, trainable)
    total = per_token * tokens
    gpu_seconds = total / (hardware.bf16_dense_tflops * 1e12 * mfu)
    reference_flops_capacity = reference.reference_gpu_hours * 3600 * reference_hardware.bf16_dense_tflops * 1e12
    return FlopsTime(tokens, per_token, flops_multipliers(trainable), total, mfu, gpu_seconds / 3600,
                     gpu_seconds / 3600 / total_gpus, total / reference_flops_capacity)


# ---- one micro-step's memory ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MicroStep:
    """One rank's micro-step of ``per_device`` typical samples, packed, and its peak memory."""

    per_device: int
    sample_tokens: int
    sample_tiles: int
    shape: StepShape
    memory: StepMemory
    fits: bool
    max_per_device: int  # the most typical samples per micro-step that fit (0: not even one)
    checkpointing: bool = True


def packed_shape(samples: int, sample_tokens: int, sample_tiles: int, max_length: int) -> StepShape:
    """``samples`` equal samples packed into rows of at most ``max_length`` tokens (the widest row sets the
    tensors' width)."""
    if sample_tokens > max_length:
        raise ValueError(f"a sample of {sample_tokens:,} tokens exceeds the stage's rows of {max_length:,}")
    per_row = max_length // sample_tokens
    rows = -(-samples // per_row)
    return StepShape(rows=rows, row_length=min(samples, per_row) * sample_tokens, tiles=samples * sample_tiles)


def micro_step(stage: StageConfig, profile: Profile, hardware: Hardware, counts: ModelCounts, total_gpus: int,
               sample_tokens: int, sample_tiles: int, trainable: int | None = None) -> MicroStep:
    def memory(samples: int) -> StepMemory:
        shape = packed_shape(samples, sample_tokens, sample_tiles, stage.max_length)
        return step_memory(profile, stage, shape, num_gpus=total_gpus, on_gpu=True, counts=counts,
                           gradient_checkpointing=stage.gradient_checkpointing, trainable=trainable)

    capacity = hardware.memory_gib * GIB
    largest = 0  # the search stops at MAX_SEARCH_FACTOR x the stage's batch ("at least" then)
    while largest < MAX_SEARCH_FACTOR * stage.per_device_batch_size and memory(largest + 1).total_bytes <= capacity:
        largest += 1
    chosen = memory(stage.per_device_batch_size)
    return MicroStep(stage.per_device_batch_size, sample_tokens, sample_tiles,
                     packed_shape(stage.per_device_batch_size, sample_tokens, sample_tiles, stage.max_length),
                     chosen, chosen.total_bytes <= capacity, largest, stage.gradient_checkpointing)


# ---- checkpoints ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointPlan:
    policy: CheckpointPolicy
    weights_bytes: int  # the gathered bf16 model (stage3_gather_16bit_weights_on_model_save)
    optimizer_bytes: int  # ZeRO shards: fp32 master weights and Adam m, v of the trainable parameters
    saves: int  # during the stage, at the reference-scaled wall time
    disk_gbps: float

    @property
    def size_bytes(self) -> int:
        return self.weights_bytes + (0 if self.policy.model_only else self.optimizer_bytes)

    @property
    def disk_bytes(self) -> int:
        """Kept checkpoints plus the stage's final model."""
        return self.policy.keep * self.size_bytes + self.weights_bytes

    @property
    def write_seconds(self) -> float:
        return self.size_bytes / (self.disk_gbps * 1e9)


def checkpoint_plan(stage: StageConfig, counts: ModelCounts, trainable: int, wall_hours: float,
                    disk_gbps: float) -> CheckpointPlan:
    policy = stage.checkpoint
    # steps are not known without the data's size here; the wall-clock interval is what the paper default uses
    saves = policy.saves_during(0, wall_hours)
    return CheckpointPlan(policy, WEIGHT_BYTES * counts.total, 12 * trainable, saves, disk_gbps)


# ---- the plan ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComputePlan:
    stage: str
    trainable: Trainable
    hardware: Hardware
    num_gpus_per_node: int
    num_nodes: int
    counts: ModelCounts
    trainable_params: int
    deepspeed_memory: list[MemoryEstimate]  # DeepSpeed's estimator, all parameters trainable
    frozen_aware_memory: list[MemoryEstimate]
    reference_time: ReferenceTime
    flops_time: FlopsTime | None
    reference_label: str  # e.g. "8 x b200"
    stage_examples: int | None  # Table 1 examples in the stage's mixture
    micro_step: MicroStep
    checkpoints: CheckpointPlan

    stage_max_length: int = 32768

    @property
    def total_gpus(self) -> int:
        return self.num_gpus_per_node * self.num_nodes


def compute_plan(stage: StageConfig, hardware: Hardware, *, num_gpus: int, num_nodes: int = 1,
                 tokens: float | None = None, mfu: float = DEFAULT_MFU,
                 profile: str | Profile = "paper", hardware_path: str | Path = HARDWARE_PATH,
                 sample_tokens: int = DEFAULT_SAMPLE_TOKENS, sample_tiles: int = DEFAULT_SAMPLE_TILES,
                 disk_gbps: float = DEFAULT_DISK_GBPS) -> ComputePlan:
    """Plan ``stage`` on ``num_gpus`` GPUs per node x ``num_nodes`` nodes of ``hardware``; a micro-step
    holds ``stage.per_device_batch_size`` samples of ``sample_tokens`` tokens and ``sample_tiles`` tiles."""
    _check_args(hardware, num_gpus, num_nodes, tokens, mfu)
    if isinstance(profile, str):
        profile = load_profile(profile)
    counts = model_counts(profile)
    total_gpus = num_gpus * num_nodes
    trainable_params = counts.trainable(stage.trainable)
    reference = load_reference(hardware_path)
    reference_hardware = load_hardware(reference.hardware, hardware_path)
    reference_time = _reference_time(stage.name, hardware, total_gpus, reference, reference_hardware)
    flops_time = None
    if tokens is not None:
        flops_time = _flops_time(counts, stage.trainable, tokens, mfu, hardware, total_gpus, reference_time,
                                 reference_hardware)
    return ComputePlan(
        stage=stage.name,
        trainable=stage.trainable,
        hardware=hardware,
        num_gpus_per_node=num_gpus,
        num_nodes=num_nodes,
        counts=counts,
        trainable_params=trainable_params,
        deepspeed_memory=deepspeed_estimates(counts.total, counts.largest_layer, num_gpus, num_nodes),
        frozen_aware_memory=frozen_aware_estimates(counts.total, trainable_params, counts.largest_layer,
                                                   num_gpus, num_nodes),
        reference_time=reference_time,
        flops_time=flops_time,
        reference_label=f"{reference.num_gpus} x {reference.hardware}",
        stage_examples=_stage_examples(stage.mixture),
        micro_step=micro_step(stage, profile, hardware, counts, total_gpus, sample_tokens, sample_tiles),
        checkpoints=checkpoint_plan(stage, counts, trainable_params, reference_time.wall_hours, disk_gbps),
        stage_max_length=stage.max_length,
    )


def _check_args(hardware: Hardware, num_gpus: int, num_nodes: int, tokens: float | None, mfu: float) -> None:
    if num_gpus <= 0 or num_nodes <= 0:
        raise ValueError(f"num_gpus and num_nodes must be positive, got {num_gpus} and {num_nodes}")
    if num_gpus > hardware.gpus_per_node:
        raise ValueError(f"num_gpus is per node: {hardware.name} has {hardware.gpus_per_node} GPUs per node, "
                         f"got {num_gpus}; use num_nodes for more")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if tokens is not None and tokens <= 0:
        raise ValueError(f"tokens must be positive, got {tokens}")


def _stage_examples(mixture: str) -> int | None:
    from medkit.data.registry import stage_total

    try:
        return stage_total(mixture)
    except ConfigError:
        return None


# ---- text ----------------------------------------------------------------------------------------------

def format_plan(plan: ComputePlan) -> str:
    hw = plan.hardware
    c = plan.counts
    flags = ", ".join(f"{part}={'train' if getattr(plan.trainable, part) else 'frozen'}" for part in FORWARD_ORDER)
    lines = [
        f"Compute plan: stage {plan.stage} on {plan.num_nodes} node(s) x {plan.num_gpus_per_node} {hw.name} "
        f"= {plan.total_gpus} GPUs ({hw.description}; {hw.memory_gib:g} GiB, "
        f"{hw.bf16_dense_tflops:g} dense BF16 TFLOPS each)",
        f"  parts: {flags}",
        f"  parameters: total {_b(c.total)}, trainable {_b(plan.trainable_params)}, largest layer "
        f"{_b(c.largest_layer)}; LM active per token {_b(c.llm_active)} ({c.experts_per_token} of "
        f"{c.num_experts} experts; {_b(c.llm_active_matmul)} without the input embedding)",
        "",
        *_micro_step_lines(plan.micro_step, hw, plan.stage_max_length),
        "",
        *_checkpoint_lines(plan.checkpoints),
        "",
        "Model states alone per GPU (GiB; no activations), by DeepSpeed's ZeRO-3 estimator and frozen-aware:",
        f"  {'per GPU':>8} {'per CPU':>9}  {'fits':<5} options",
        "  DeepSpeed estimate_zero3_model_states_mem_needs (assumes ALL parameters trainable):",
    ]
    lines += [_memory_row(row, hw) for row in plan.deepspeed_memory]
    lines.append(f"  frozen-aware (bf16 weights for all {_b(c.total)}, grads + fp32 master + Adam m,v only "
                 f"for the {_b(plan.trainable_params)} trainable; zero_init=1):")
    lines += [_memory_row(row, hw) for row in plan.frozen_aware_memory]
    lines.append("  per CPU is per node; 'fits' here compares model states alone with GPU memory: the verdict "
                 "that counts is the micro-step's above.")

    ref = plan.reference_time
    lines += [
        "",
        "Time",
        f"  (a) reference scaling: paper {_hm(ref.reference_wall_hours)} on {plan.reference_label} = "
        f"{ref.reference_gpu_hours:,.1f} GPU-h, x peak ratio {ref.peak_ratio:.3f}",
        f"      -> {ref.gpu_hours:,.1f} GPU-h, {ref.wall_hours:,.2f} h wall ({_hm(ref.wall_hours)}) on "
        f"{plan.total_gpus} GPUs",
        "      assumes the same MFU as the paper's run and linear scaling with GPU count.",
    ]
    if plan.stage_examples:
        lines.append(f"      Table 1 mixture: {plan.stage_examples:,} examples "
                     f"({plan.stage_examples / (ref.reference_gpu_hours * 3600):.2f} examples/s per reference GPU).")
    lines += _flops_lines(plan.flops_time)
    return "\n".join(lines)


def _micro_step_lines(step: MicroStep, hardware: Hardware, max_length: int) -> list[str]:
    shape = step.shape
    verdict = "fits" if step.fits else "DOES NOT FIT"
    lines = [
        f"Memory per GPU of one micro-step (GiB): {step.per_device} samples per GPU, each assumed "
        f"{step.sample_tokens:,} tokens with {step.sample_tiles} image tiles (--sample-tokens, --sample-tiles), "
        f"packed into {shape.rows} row(s) of {shape.row_length:,} tokens (rows <= {max_length:,}), "
        f"{shape.tiles} tiles; {'gradient checkpointing' if step.checkpointing else 'NO gradient checkpointing'}, ZeRO-3:",
    ]
    lines += [f"  {name:<18} {value / GIB:8.2f}" for name, value in step.memory.breakdown.items()]
    lines.append(f"  {'total':<18} {step.memory.total_bytes / GIB:8.2f}  of {hardware.memory_gib:g} GiB: {verdict}")
    capped = step.max_per_device == MAX_SEARCH_FACTOR * step.per_device
    largest = (f"{'at least ' if capped else ''}{step.max_per_device} such samples per GPU per micro-step"
               if step.max_per_device else "not even one such sample")
    lines.append(f"  largest micro-batch that fits: {largest} (checked against benchmarks/paper_slice_memory.py)")
    return lines


def _checkpoint_lines(ck: CheckpointPlan) -> list[str]:
    return [
        f"Checkpoints: {ck.policy.describe()}",
        f"  one save {ck.size_bytes / 1e9:,.0f} GB (gathered bf16 weights {ck.weights_bytes / 1e9:,.0f} GB"
        + ("" if ck.policy.model_only else f" + ZeRO optimizer state {ck.optimizer_bytes / 1e9:,.0f} GB") + ")"
        f", ~{ck.write_seconds / 60:.1f} min to write at {ck.disk_gbps:g} GB/s (an assumption, --disk-gbps)",
        f"  disk: {ck.disk_bytes / 1e9:,.0f} GB ({ck.policy.keep} kept + the final model); about {ck.saves} "
        f"save(s) over the stage's reference-scaled wall time",
    ]


def _flops_lines(ft: FlopsTime | None) -> list[str]:
    if ft is None:
        return ["  (b) FLOPs estimate: pass a token count (tokens=...) to get one."]
    mult = ", ".join(f"{part} {m}N" for part, m in ft.multipliers.items())
    return [
        f"  (b) FLOPs estimate for {ft.tokens:.3g} tokens: {ft.flops_per_token:.3g} FLOPs/token ({mult}; "
        f"6N trained, 4N frozen but backpropagated through, 2N forward only; active MoE params; "
        f"no recompute for gradient checkpointing, no attention FLOPs) = {ft.total_flops:.3g} FLOPs",
        f"      at MFU {ft.mfu:.1%} (an assumption; measured on an H100 slice: 23.3% with flex attention) "
        f"-> {ft.gpu_hours:,.1f} GPU-h, {ft.wall_hours:,.2f} h wall",
        f"      these FLOPs in the paper's measured time imply a reference MFU of {ft.implied_reference_mfu:.1%}.",
    ]


def _memory_row(row: MemoryEstimate, hardware: Hardware) -> str:
    gpu = row.per_gpu_bytes / GIB
    fits = "yes" if gpu <= hardware.memory_gib else "NO"
    return f"  {gpu:8.2f} {row.per_cpu_bytes / GIB:9.2f}  {fits:<5} {row.options}"


def _b(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _hm(hours: float) -> str:
    whole = int(hours)
    minutes = round((hours - whole) * 60)
    if minutes == 60:
        whole, minutes = whole + 1, 0
    return f"{whole} h {minutes:02d} m"


# ---- the LoRA encoder ablation (Figure 1) ----------------------------------------------------------------

def ablation_plan(hardware: Hardware, *, num_gpus: int, num_nodes: int = 1, profile: str = "paper",
                  sample_tokens: int = DEFAULT_SAMPLE_TOKENS,
                  sample_tiles: int = DEFAULT_SAMPLE_TILES) -> list[tuple[str, int, MicroStep]]:
    """(phase, trainable parameters, micro-step memory) of each ablation phase for the profile's encoder.

    The ablation runs padded batches (one row per sample) with transformers' default (eager) attention
    and gradient checkpointing under ZeRO-3; phase 1 trains the projector, phase 2 the LoRA adapters and
    the projector, with gradients flowing back through the frozen LLM in both."""
    from dataclasses import replace

    from medkit.training.ablation import ablation_trainable_parameters, load_ablation_config, phase_batch
    from medkit.training.stages import load_stage

    _check_args(hardware, num_gpus, num_nodes, None, DEFAULT_MFU)
    model_profile = load_profile(profile)
    model_profile.model.attn_implementation = "eager"
    config = load_ablation_config(profile)
    trainable = ablation_trainable_parameters(config, model_profile)
    counts = model_counts(model_profile)
    world = num_gpus * num_nodes
    rows = []
    for name in ("projector_pretraining", "lora_finetuning"):
        batch = phase_batch(getattr(config, name), world, name)
        # one sample per padded row; the packed-row helper with max_length = one sample gives that shape
        stage = replace(load_stage("pretrain"), per_device_batch_size=batch.per_device, max_length=sample_tokens,
                        gradient_checkpointing=config.gradient_checkpointing)
        rows.append((name, trainable[name], micro_step(stage, model_profile, hardware, counts, world, sample_tokens,
                                                        sample_tiles, trainable=trainable[name])))
    return rows


def format_ablation_plan(rows: list[tuple[str, int, MicroStep]], hardware: Hardware, gpus: int) -> str:
    lines = [f"Compute plan: LoRA encoder ablation (Figure 1) on {gpus} x {hardware.name}, per phase"]
    for name, trainable, step in rows:
        lines += ["", f"phase {name}: {_b(trainable)} trainable parameters",
                  *_micro_step_lines(step, hardware, step.sample_tokens)]
    lines += ["", "Time: not computed (the paper reports no ablation run time; needs a measured step time)."]
    return "\n".join(lines)
