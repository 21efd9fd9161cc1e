"""Stage configs are data defaulting to Table 2; freezing flags and optimizer groups follow them."""

import pytest
import torch

from medkit.config import ConfigError, load_yaml
from medkit.model.build import model_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.profiles import load_profile
from medkit.training.stages import (
    CheckpointPolicy,
    StageConfig,
    apply_trainable,
    checkpoint_policy,
    load_curriculum,
    load_stage,
    optimizer_groups,
    stage_for_profile,
    table2_rows,
    with_batch_sizes,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MedGPTOssForConditionalGeneration(model_config(load_profile("tiny"), vocab_size=300, img_token=7))


def test_defaults_are_table2():
    pre, mid, it = load_curriculum()
    assert (pre.learning_rate.projector, mid.learning_rate.llm, it.learning_rate.llm) == (1e-3, 2e-5, 8e-5)
    for s in (pre, mid, it):
        assert (s.adam_beta1, s.adam_beta2, s.adam_epsilon, s.weight_decay) == (0.9, 0.999, 1e-8, 0.05)
        assert (s.max_length, s.per_device_batch_size, s.global_batch_size) == (32768, 16, 128)
        assert s.bf16 and s.gradient_checkpointing and s.lr_scheduler == "cosine" and s.epochs == 1.0
        assert 0.01 <= s.warmup_ratio <= 0.03
    assert [s.trainable.llm for s in (pre, mid, it)] == [False, True, True]
    assert [s.mixture for s in (pre, mid, it)] == ["PT", "MT", "IT"]
    assert [s.init_from for s in (pre, mid, it)] == [None, "pretrain", "midtrain"]


def test_vision_schedule_flag_flips_the_paper_contradiction():
    assert [s.trainable.vision for s in load_curriculum("table2")] == [False, False, True]
    assert [s.trainable.vision for s in load_curriculum("text")] == [True, True, True]
    with pytest.raises(ConfigError, match="vision_schedule"):
        load_stage("pretrain", vision_schedule="both")


def test_unknown_stage_and_unknown_key_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown stage 'finetune'"):
        load_stage("finetune")
    bad = tmp_path / "stage.yaml"
    bad.write_text("name: x\nindex: 0\nmixture: PT\ninit_from: null\nlearnig_rate: 1\n"
                   "trainable: {vision: false, projector: true, llm: false}\n")
    with pytest.raises(ConfigError, match=r"stage\.yaml: unknown key\(s\) \['learnig_rate'\]"):
        load_yaml(StageConfig, bad)


def test_batches_count_samples_and_derive_accumulation():
    stage = load_stage("instruct")
    paper = stage.batch_plan(8)  # Table 2: 16 per device x 8 GPUs = 128, accumulation 1
    assert (paper.per_device, paper.global_batch, paper.accumulation) == (16, 128, 1)
    assert (paper.max_rows_per_micro_step, paper.max_tokens_per_micro_step) == (16, 16 * 32768)
    assert stage.batch_plan(2).accumulation == 4
    assert with_batch_sizes(stage, per_device=4).batch_plan(32).accumulation == 1  # the README's 4 x 8 GPUs
    assert with_batch_sizes(stage, per_device=1).batch_plan(32).accumulation == 4


def test_a_bad_batch_split_names_the_splits_that_work():
    with pytest.raises(ConfigError) as bad:
        load_stage("midtrain").batch_plan(32)
    assert str(bad.value) == ("stage midtrain: global batch 128 on 32 ranks needs per-device x 32 to divide 128: "
                              "--per-device-batch-size 1, 2 or 4 (accumulation 4, 2, 1), or --global-batch-size "
                              "512 for per-device 16")
    with pytest.raises(ConfigError, match=r"no per-device size does \(128 is not a multiple of 3\): "
                                          r"--global-batch-size 144 for per-device 16"):
        load_stage("instruct").batch_plan(3)
    with pytest.raises(ConfigError, match="batch sizes must be positive"):
        with_batch_sizes(load_stage("instruct"), per_device=-1)


def test_profile_batch_stand_ins_apply_before_overrides():
    tiny = stage_for_profile(load_stage("pretrain"), load_profile("tiny"))
    assert (tiny.per_device_batch_size, tiny.global_batch_size, tiny.learning_rate.projector) == (8, 16, 3e-3)
    assert with_batch_sizes(tiny, global_batch=32).batch_plan(2).accumulation == 2
    paper = stage_for_profile(load_stage("pretrain"), load_profile("paper"))
    assert (paper.per_device_batch_size, paper.global_batch_size) == (16, 128)


def test_checkpoint_policy_is_data_with_command_line_overrides():
    for stage in load_curriculum():
        assert stage.checkpoint == CheckpointPolicy(every_steps=None, every_minutes=360.0, model_only=False, keep=2)
        assert stage.overlong == "drop"
    mid = load_stage("midtrain")
    assert checkpoint_policy(mid, save_steps=3) == CheckpointPolicy(every_steps=3, every_minutes=None)
    assert checkpoint_policy(mid, save_minutes=30, model_only=True).model_only
    both = checkpoint_policy(mid, save_steps=1000, save_minutes=60)
    # what a plan reads: 240 h 24 m of mid-training writes 40 six-hourly saves; keep says how many stay
    assert mid.checkpoint.saves_during(151_112, 240.4) == 40 and both.saves_during(151_112, 240.4) == 151 + 240
    assert "cannot resume" in checkpoint_policy(mid, model_only=True).describe()


@pytest.mark.parametrize("section, message", [
    ("{every_minutes: null}", "set every_steps or every_minutes"),
    ("{every_steps: 0, every_minutes: null}", "every_steps must be a positive integer"),
    ("{every_minutes: -5}", "every_minutes must be positive"),
    ("{keep: 0}", "keep must be at least 1"),
    ("{every_hours: 6}", r"unknown key\(s\) \['every_hours'\]"),
])
def test_bad_checkpoint_policy_names_the_stage_file(tmp_path, monkeypatch, section, message):
    from medkit.profiles import CONFIG_DIR
    from medkit.training import stages

    (tmp_path / "stages").mkdir()
    yaml_text = (CONFIG_DIR / "stages" / "pretrain.yaml").read_text().replace(
        "checkpoint: {every_minutes: 360, model_only: false, keep: 2}", f"checkpoint: {section}")
    (tmp_path / "stages" / "pretrain.yaml").write_text(yaml_text)
    monkeypatch.setattr(stages, "CONFIG_DIR", tmp_path)
    with pytest.raises(ConfigError, match=rf"stages/pretrain\.yaml.*{message}"):
        load_stage("pretrain")


def test_pretrain_trains_only_the_projector(model):
    counts = apply_trainable(model, load_stage("pretrain").trainable)
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert counts == {"vision": 0, "projector": projector, "llm": 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.multi_modal_projector.") for n in trainable)


def test_optimizer_groups_decay_only_matrices(model):
    stage = load_stage("instruct")
    apply_trainable(model, stage.trainable)
    groups = optimizer_groups(model, stage)
    assert {g["name"] for g in groups} == {f"{p}.{d}" for p in ("vision", "projector", "llm") for d in ("decay", "no_decay")}
    for g in groups:
        assert g["lr"] == 8e-5
        if g["name"].endswith(".no_decay"):
            assert g["weight_decay"] == 0.0 and all(p.dim() < 2 for p in g["params"])
        else:
            assert g["weight_decay"] == 0.05 and all(p.dim() >= 2 for p in g["params"])
    grouped = sum(p.numel() for g in groups for p in g["params"])
    assert grouped == sum(p.numel() for p in model.parameters())  # every parameter in exactly one group
    sinks = model.model.language_model.layers[0].self_attn.sinks
    assert any(p is sinks for g in groups if g["name"] == "llm.no_decay" for p in g["params"])


def test_table2_rendered_from_configs():
    rows = dict(table2_rows(load_curriculum()))
    assert rows["Projector LR (stage 0)"] == "1e-3 (LLM frozen)"
    assert rows["LLM LR (mid-training)"] == "2e-5"
    assert rows["LLM LR (instruction tuning)"] == "8e-5"
    assert rows["Vision encoder"] == "Frozen in stage 0–1; jointly trained in stage 2"
    assert rows["Max sequence length"] == "32,768"
    assert rows["Per-device batch size"] == "16 (global batch size: 128)"
    assert dict(table2_rows(load_curriculum("text")))["Vision encoder"] == "jointly trained in stage 0, 1, 2"


def test_paper_first_stage_refuses_random_weights():
    from medkit.chat import load_tokenizer
    from medkit.training.stage_run import build_stage_model

    with pytest.raises(ValueError, match=r"stage 'pretrain' needs --previous pointing at a composed checkpoint"):
        build_stage_model(load_stage("pretrain"), load_profile("paper", tokenizer="tiny"), load_tokenizer("tiny"), None)


def test_zero3_buckets_keep_transformers_auto_values_at_gpt_oss_width_and_a_floor_at_toy_width():
    from medkit.profiles import load_profile
    from medkit.training.deepspeed_setup import MIN_BUCKET_ELEMENTS, language_width, zero3_config

    paper = zero3_config(language_width(load_profile("paper")))["zero_optimization"]
    assert (paper["reduce_bucket_size"], paper["stage3_prefetch_bucket_size"]) == (2880**2, int(0.9 * 2880**2))
    tiny = zero3_config(language_width(load_profile("tiny")))["zero_optimization"]
    assert tiny["reduce_bucket_size"] == tiny["stage3_prefetch_bucket_size"] == MIN_BUCKET_ELEMENTS > 64**2
    assert zero3_config()["zero_optimization"]["reduce_bucket_size"] == "auto"  # width unknown: the Trainer's


def test_cpu_ranks_tell_deepspeed_how_many_share_the_node(monkeypatch):
    """Otherwise DeepSpeed's CPU accelerator runs `numactl --hardware` on every gradient reduce."""
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    from medkit.training.deepspeed_setup import tell_deepspeed_the_local_ranks

    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    tell_deepspeed_the_local_ranks()
    assert CPU_Accelerator().device_count() == 2
    monkeypatch.setattr("deepspeed.utils.numa.get_numa_cores", lambda: pytest.fail("numactl was run"))
    assert CPU_Accelerator().device_count() == 2


def test_a_profile_rate_may_be_set_per_part_and_names_real_stages_and_parts(tmp_path):
    import yaml

    from medkit.config import ConfigError
    from medkit.profiles import CONFIG_DIR
    from medkit.training.stages import load_stage, stage_for_profile

    tiny = yaml.safe_load((CONFIG_DIR / "profiles" / "tiny.yaml").read_text())

    def profile_with(**training):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({**tiny, "training": {**tiny["training"], **training}}))
        return load_profile(path)

    split = profile_with(learning_rate={"instruct": {"llm": 3e-3, "projector": 3e-3, "vision": 1e-4}})
    rates = stage_for_profile(load_stage("instruct"), split).learning_rate
    assert (rates.vision, rates.projector, rates.llm) == (1e-4, 3e-3, 3e-3)
    partial = stage_for_profile(load_stage("instruct"), profile_with(learning_rate={"instruct": {"llm": 1e-3}}))
    assert (partial.learning_rate.llm, partial.learning_rate.vision) == (1e-3, 8e-5)  # vision: the stage's own
    with pytest.raises(ConfigError, match=r"training.learning_rate: unknown stage\(s\) \['instuct'\]"):
        profile_with(learning_rate={"instuct": 1e-3})
    with pytest.raises(ConfigError, match=r"training.stage_steps: unknown stage\(s\) \['sft'\]"):
        profile_with(stage_steps={"sft": 10})
    with pytest.raises(ConfigError, match=r"unknown part\(s\) \['encoder'\]"):
        profile_with(learning_rate={"instruct": {"encoder": 1e-4}})


def test_profile_task_weights_reach_the_stage_and_name_its_tasks(tmp_path):
    import yaml

    from medkit.config import ConfigError
    from medkit.profiles import CONFIG_DIR
    from medkit.training.stages import load_stage, stage_for_profile

    tiny = yaml.safe_load((CONFIG_DIR / "profiles" / "tiny.yaml").read_text())

    def profile_with(weights):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({**tiny, "training": {**tiny["training"], "task_weights": weights}}))
        return load_profile(path)

    stage = stage_for_profile(load_stage("instruct"), profile_with({"instruct": {"trial": 3, "text_mc": 0.5}}))
    assert stage.synthetic_weights == {"trial": 3, "text_mc": 0.5}
    assert stage_for_profile(load_stage("midtrain"), profile_with({"instruct": {"trial": 3}})).synthetic_weights == {}
    with pytest.raises(ConfigError, match=r"task_weights.instruct names task\(s\) \['caption'\] that stage instruct"):
        stage_for_profile(load_stage("instruct"), profile_with({"instruct": {"caption": 2}}))
    with pytest.raises(ConfigError, match=r"task_weights.instruct: weights must be positive numbers, got \{'trial': 0.0\}"):
        profile_with({"instruct": {"trial": 0}})
    with pytest.raises(ConfigError, match=r"training.task_weights: unknown stage\(s\) \['sft'\]"):
        profile_with({"sft": {"trial": 2}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the op is for CPU ranks")
def test_the_cpu_communication_op_builds_ahead_of_the_first_rank():
    """What `make env` runs: DeepSpeed's shared-memory op for CPU ranks compiled (or taken from the build
    cache) and loaded, so no training notebook's first step waits on g++."""
    import subprocess
    import sys

    from deepspeed.ops.op_builder.builder import OpBuilder

    from medkit.training.deepspeed_setup import build_cpu_comm_op

    assert build_cpu_comm_op() is True
    assert "deepspeed_shm_comm" in OpBuilder._loaded_ops
    done = subprocess.run([sys.executable, "-m", "medkit.training.deepspeed_setup", "--build-cpu-ops"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "DeepSpeed CPU communication op: built" in done.stdout, done.stderr[-2000:]
