"""Compute plan: DeepSpeed ZeRO-3 memory, frozen-aware memory, reference-scaled and FLOPs-based GPU-hours."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs, model_to_params

from medkit.config import ConfigError
from medkit.model.summary import meta_model, parameter_table
from medkit.profiles import load_profile
from medkit.training.compute_plan import (
    FlopsTime,
    compute_plan,
    flops_multipliers,
    format_plan,
    hardware_names,
    load_hardware,
    load_reference,
    model_counts,
)
from medkit.training.stages import STAGE_NAMES, apply_trainable, load_stage

PAPER_WALL_HOURS = {"pretrain": 8 + 27 / 60, "midtrain": 240 + 24 / 60, "instruct": 86 + 26 / 60}


@pytest.fixture(scope="module")
def paper_model():
    return meta_model(load_profile("paper"))


@pytest.fixture(scope="module")
def counts():
    return model_counts("paper")


def plan(stage="pretrain", hardware="b200", num_gpus=8, **kwargs):
    return compute_plan(load_stage(stage), load_hardware(hardware), num_gpus=num_gpus, **kwargs)


# ---- parameter counts ----------------------------------------------------------------------------------

def test_counts_match_model_summary_and_deepspeed_largest_layer(paper_model, counts):
    assert counts.total == parameter_table(paper_model)["total"]["total"]
    assert counts.total > 20e9
    # model_to_params's total dedupes by data_ptr() (0 on meta), but its largest-layer count is sound
    assert counts.largest_layer == model_to_params(paper_model)[1]


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_trainable_counts_follow_apply_trainable(stage):
    model = meta_model(load_profile("tiny"))
    flags = load_stage(stage).trainable
    assert model_counts("tiny").trainable(flags) == sum(apply_trainable(model, flags).values())


def test_active_params_of_paper_lm_come_from_the_moe_config(counts):
    assert 3e9 < counts.llm_active < 5e9
    assert counts.llm_active < counts.parts["llm"] / 4
    # gpt-oss-20b's model card quotes 3.6B active parameters, which leaves out the input embedding
    assert counts.llm_active_matmul == pytest.approx(3.6e9, rel=0.02)
    dense = dataclasses.replace(counts, experts_per_token=counts.num_experts)
    assert dense.llm_active == counts.parts["llm"]


# ---- memory --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_gpus,num_nodes", [(8, 1), (4, 2)])
def test_memory_equals_deepspeed_estimator_called_directly(counts, num_gpus, num_nodes):
    rows = plan(num_gpus=num_gpus, num_nodes=num_nodes).deepspeed_memory
    assert len(rows) == 6  # the configurations estimate_zero3_model_states_mem_needs_all_cold prints
    for row in rows:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            counts.total, counts.largest_layer, num_gpus_per_node=num_gpus, num_nodes=num_nodes,
            cpu_offload=row.offload_optimizer, cpu_offload_params=row.offload_param, zero_init=row.zero_init)
        assert (row.per_gpu_bytes, row.per_cpu_bytes) == (gpu, cpu)
    assert not torch.distributed.is_initialized()


def test_frozen_aware_memory_for_pretraining_is_below_all_trainable():
    p = plan("pretrain")
    all_trainable = {r.options: r for r in p.deepspeed_memory}
    no_offload = next(r for r in p.frozen_aware_memory if not r.offload_optimizer)
    assert no_offload.per_gpu_bytes < all_trainable[no_offload.options].per_gpu_bytes / 4
    for row in p.frozen_aware_memory:
        reference = all_trainable[row.options]
        assert row.per_gpu_bytes <= reference.per_gpu_bytes
        assert row.per_cpu_bytes <= reference.per_cpu_bytes


def test_frozen_aware_memory_equals_deepspeed_when_everything_trains():
    p = plan("instruct")
    assert p.trainable_params == p.counts.total
    all_trainable = {r.options: r for r in p.deepspeed_memory}
    for row in p.frozen_aware_memory:
        assert row == all_trainable[row.options]


# ---- time ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_reference_scaling_reproduces_the_paper_on_8_b200(stage):
    t = plan(stage).reference_time
    assert t.wall_hours == pytest.approx(PAPER_WALL_HOURS[stage], abs=1e-12)
    assert t.gpu_hours == pytest.approx(8 * PAPER_WALL_HOURS[stage], abs=1e-9)


def test_reference_pretraining_numbers():
    t = plan("pretrain").reference_time
    assert (round(t.wall_hours, 6), round(t.gpu_hours, 6)) == (8.45, 67.6)


def test_h100_gpu_hours_exceed_b200_by_the_peak_ratio():
    b200, h100 = load_hardware("b200"), load_hardware("h100-sxm")
    for stage in STAGE_NAMES:
        on_b200, on_h100 = plan(stage).reference_time, plan(stage, "h100-sxm").reference_time
        assert on_h100.gpu_hours / on_b200.gpu_hours == pytest.approx(b200.bf16_dense_tflops / h100.bf16_dense_tflops)
        assert on_h100.gpu_hours > on_b200.gpu_hours


def test_more_gpus_shorten_wall_time_not_gpu_hours():
    eight, sixteen = plan(num_gpus=8).reference_time, plan(num_gpus=8, num_nodes=2).reference_time
    assert sixteen.gpu_hours == eight.gpu_hours
    assert sixteen.wall_hours == pytest.approx(eight.wall_hours / 2)


def test_flops_multipliers_follow_the_stage_flags():
    assert flops_multipliers(load_stage("pretrain").trainable) == {"vision": 2, "projector": 6, "llm": 4}
    assert flops_multipliers(load_stage("midtrain").trainable) == {"vision": 2, "projector": 6, "llm": 6}
    assert flops_multipliers(load_stage("instruct").trainable) == {"vision": 6, "projector": 6, "llm": 6}


def test_flops_time(counts):
    hardware = load_hardware("h100-sxm")
    ft = plan("midtrain", "h100-sxm", tokens=1e10, mfu=0.25).flops_time
    assert isinstance(ft, FlopsTime)
    expected_per_token = 2 * counts.parts["vision"] + 6 * counts.parts["projector"] + 6 * counts.llm_active_matmul
    assert ft.flops_per_token == expected_per_token
    assert ft.gpu_hours == pytest.approx(expected_per_token * 1e10 / (hardware.bf16_dense_tflops * 1e12 * 0.25) / 3600)
    assert ft.wall_hours == pytest.approx(ft.gpu_hours / 8)
    faster = plan("midtrain", "h100-sxm", tokens=1e10, mfu=0.5).flops_time
    assert faster.gpu_hours == pytest.approx(ft.gpu_hours / 2)
    assert plan("midtrain").flops_time is None


# ---- text ----------------------------------------------------------------------------------------------

def test_format_plan_labels_both_estimates_and_assumptions():
    text = format_plan(plan("pretrain", tokens=1e9))
    for label in ("DeepSpeed estimate_zero3_model_states_mem_needs", "frozen-aware", "no activations",
                  "Memory per GPU of one micro-step", "--sample-tokens", "largest micro-batch that fits",
                  "Checkpoints: every 360 min", "an assumption, --disk-gbps", "same MFU", "8 h 27 m", "67.6 GPU-h", "MFU 25.0% (an assumption"):
        assert label in text
    assert "pass a token count" in format_plan(plan("pretrain"))


# ---- hardware and arguments ----------------------------------------------------------------------------

def test_hardware_entries_and_reference():
    assert {"b200", "h100-sxm", "h200", "a100-80gb"} <= set(hardware_names())
    reference = load_reference()
    assert (reference.hardware, reference.num_gpus) == ("b200", 8)
    assert {s: w.as_hours for s, w in reference.wall_clock.items()} == pytest.approx(PAPER_WALL_HOURS)
    assert load_hardware("h100-sxm").bf16_dense_tflops == pytest.approx(989.4)


def test_unknown_hardware_lists_the_known_names():
    with pytest.raises(ConfigError, match="h100-sxm") as error:
        load_hardware("h1000")
    assert "h1000" in str(error.value)


@pytest.mark.parametrize("kwargs", [{"num_gpus": 0}, {"num_gpus": -1}, {"num_gpus": 9}, {"num_gpus": 8, "num_nodes": 0},
                                    {"num_gpus": 8, "mfu": 0.0}, {"num_gpus": 8, "tokens": 0}])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        compute_plan(load_stage("pretrain"), load_hardware("b200"), **kwargs)


GOOD_YAML = """
reference:
  hardware: x
  num_gpus_per_node: 8
  num_nodes: 1
  wall_clock: {pretrain: {hours: 1, minutes: 0}}
gpus:
  x: {description: test, memory_gib: 80, bf16_dense_tflops: 100, gpus_per_node: 8}
"""


@pytest.mark.parametrize("old,new,key", [
    ("bf16_dense_tflops: 100", "bf16_tflops: 100", "bf16_tflops"),
    ("gpus_per_node: 8}", "gpus_per_node: eight}", "gpus_per_node"),
    ("num_nodes: 1", "nodes: 1", "nodes"),
    ("minutes: 0", "mins: 0", "mins"),
    ("hardware: x", "hardware: y", "reference.hardware"),
])
def test_hardware_yaml_is_loaded_strictly(tmp_path, old, new, key):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_YAML)
    assert load_hardware("x", good).bf16_dense_tflops == 100.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_YAML.replace(old, new))
    with pytest.raises(ConfigError, match=key) as error:
        load_hardware("x", bad)
    assert str(bad) in str(error.value)


# ---- the micro-step's memory and the checkpoints ------------------------------------------------------

def test_micro_step_memory_is_model_states_plus_activations_with_a_verdict():
    midtrain = plan("midtrain", hardware="h100-sxm")
    step = midtrain.micro_step
    parts = step.memory.breakdown
    assert step.memory.total_bytes == sum(parts.values())
    assert parts["model states"] == (2 * midtrain.counts.total + 16 * midtrain.trainable_params) // 8
    for activation in ("layer inputs", "layer recompute", "vision tower", "projector", "loss", "gathered params"):
        assert parts[activation] > 0, activation
    assert step.shape.rows == 1 and step.shape.row_length == 32000 and step.shape.tiles == 16 * 13
    assert step.fits == (step.memory.total_bytes <= 80 * 2**30)
    # twice the tokens per sample: more activation memory, and fewer samples fit
    longer = plan("midtrain", hardware="h100-sxm", sample_tokens=4000)
    assert longer.micro_step.memory.total_bytes > step.memory.total_bytes
    assert longer.micro_step.max_per_device < step.max_per_device
    # a B200 holds more than an H100
    assert plan("midtrain").micro_step.max_per_device > step.max_per_device


def test_eager_attention_at_32k_does_not_fit_and_flex_does():
    from medkit.profiles import load_profile
    from medkit.training.memory_plan import StepShape, attention_bytes, dimensions

    profile = load_profile("paper")
    dims = dimensions(profile)
    row = StepShape(rows=1, row_length=32768)
    eager, flex = attention_bytes(dims, row, "eager"), attention_bytes(dims, row, "flex_attention")
    # one 32k row's scores for 64 heads: 32768 x 32769 x 64 x 2 bytes = 128 GiB, several of them alive
    assert eager > 4 * 128 * 2**30 > 100 * flex
    profile.model.attn_implementation = "eager"
    assert not compute_plan(load_stage("midtrain"), load_hardware("b200"), num_gpus=8, profile=profile).micro_step.fits


def test_checkpoint_plan_sizes_the_saves_and_the_disk():
    midtrain = plan("midtrain", hardware="h100-sxm").checkpoints
    assert midtrain.weights_bytes == 2 * plan("midtrain").counts.total  # ~42 GB of gathered bf16 weights
    assert 240e9 < midtrain.optimizer_bytes < 260e9  # fp32 master + Adam m, v of ~21B trained parameters
    assert midtrain.disk_bytes == 2 * midtrain.size_bytes + midtrain.weights_bytes
    assert midtrain.saves >= 40  # every 6 h over a stage of ~10 days
    pretrain = plan("pretrain").checkpoints
    assert pretrain.optimizer_bytes < 1e9  # only the projector trains


def test_the_lora_ablation_is_planned_per_phase():
    from medkit.training.compute_plan import ablation_plan

    (first, n_first, step1), (second, n_second, step2) = ablation_plan(load_hardware("h100-sxm"), num_gpus=8)
    assert (first, second) == ("projector_pretraining", "lora_finetuning")
    assert n_first < 30e6 and 1.45e9 < n_second < 1.55e9  # the projector; then LoRA on attention and experts
    states = step2.memory.breakdown["model states"] - step1.memory.breakdown["model states"]
    assert abs(states - 16 * (n_second - n_first) / 8) <= 2  # their optimizer states, sharded over 8 GPUs
    assert step1.shape.rows == step1.per_device  # padded: one row per sample
    assert step2.fits
