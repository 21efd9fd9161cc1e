"""Stage configs are data defaulting to Table 2; freezing flags and optimizer groups follow them."""

import pytest
import torch

from medkit.config import ConfigError, load_yaml
from medkit.model.build import model_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.profiles import load_profile
from medkit.training.stages import (
    StageConfig,
    apply_trainable,
    load_curriculum,
    load_stage,
    optimizer_groups,
    table2_rows,
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


def test_gradient_accumulation_from_global_batch():
    stage = load_stage("instruct")
    assert stage.gradient_accumulation(8) == 1  # the paper: 8 GPUs x 16 = 128
    assert stage.gradient_accumulation(2) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        stage.gradient_accumulation(3)


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
