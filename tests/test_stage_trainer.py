"""What a stage's Trainer adds to transformers' own: checkpoints on a wall-clock interval through the
Trainer's save mechanism, model-only checkpoints that are never resumed from, and GPT-oss's router
load-balancing loss while (and only while) the LLM trains."""

import json

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from medkit.chat import load_tokenizer
from medkit.model.build import build_tiny_model
from medkit.model.processor import EncodedSample
from medkit.profiles import load_profile
from medkit.training.packing import PackingCollator
from medkit.training.stage_run import (SaveEveryMinutes, StageTrainer, is_model_only, last_complete_checkpoint,
                                       save_arguments)
from medkit.training.stages import CheckpointPolicy, load_stage


def test_save_arguments_follow_the_policy():
    assert save_arguments(CheckpointPolicy(every_steps=50, every_minutes=None)) == {
        "save_strategy": "steps", "save_steps": 50, "save_only_model": False, "save_total_limit": 2}
    # a clock interval alone: the Trainer's own interval is off and SaveEveryMinutes asks for each save
    assert save_arguments(CheckpointPolicy(every_minutes=360, model_only=True, keep=3)) == {
        "save_strategy": "no", "save_only_model": True, "save_total_limit": 3}


class Clock:
    """A wall clock that a minute passes on at every optimizer step."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class MinutePerStep(TrainerCallback):
    def __init__(self, clock: Clock):
        self.clock = clock

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.now += 60


class RecordSaves(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_save(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, labels):
        return {"loss": ((self.linear(x).squeeze(-1) - labels) ** 2).mean()}


def test_a_minutes_interval_saves_through_the_trainer_and_rotates(tmp_path):
    torch.manual_seed(0)
    data = [{"x": torch.randn(2), "labels": torch.randn(())} for _ in range(12)]
    policy = CheckpointPolicy(every_minutes=2, keep=2)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, disable_tqdm=True, logging_steps=1, **save_arguments(policy))
    clock, saves = Clock(), RecordSaves()
    trainer = Trainer(model=Regression(), args=args, train_dataset=data,
                      callbacks=[MinutePerStep(clock), SaveEveryMinutes(policy.every_minutes, clock=clock), saves])
    trainer.train()
    assert saves.steps == [2, 4, 6]  # every 2 minutes of training, on the step it falls due
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]  # keep 2
    assert json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_the_clock_restarts_at_training_start_and_at_every_save():
    from transformers import TrainerControl, TrainerState

    clock, args, state = Clock(), TrainingArguments(output_dir="unused", use_cpu=True, report_to=[]), TrainerState()
    callback = SaveEveryMinutes(10, clock=clock)
    clock.now = 3600.0  # an hour of loading before training starts
    callback.on_train_begin(args, state, TrainerControl())
    clock.now += 9 * 60
    control = TrainerControl()
    callback.on_step_end(args, state, control)
    assert not control.should_save
    clock.now += 60
    callback.on_step_end(args, state, control)
    assert control.should_save
    callback.on_save(args, state, control)  # a step-interval save restarts the clock too
    control = TrainerControl()
    clock.now += 5 * 60
    callback.on_step_end(args, state, control)
    assert not control.should_save


def test_model_only_checkpoints_are_passed_over_on_resume(tmp_path, capsys):
    weights_only = tmp_path / "checkpoint-8"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes(b"weights")
    (weights_only / "trainer_state.json").write_text(json.dumps({"global_step": 8}))
    assert is_model_only(weights_only)
    assert last_complete_checkpoint(tmp_path) is None
    assert "checkpoint-8 holds weights only (a model-only save)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tiny_model(load_profile("tiny"), load_tokenizer("tiny")).train()


def packed_batch(tokenizer):
    """Two text samples packed into one row, as the stage's collator gives them."""
    torch.manual_seed(1)
    samples = []
    for n in (30, 18):
        ids = torch.randint(5, 1500, (n,))
        labels = ids.clone()
        labels[: n // 2] = -100
        samples.append(EncodedSample(f"s{n}", ids, labels, torch.empty(0, 3, 64, 64), []))
    return PackingCollator(tokenizer.pad_token_id, 64)(samples)


def stage_trainer(model, stage_name, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False)
    return StageTrainer(model=model, args=args, router_balance=load_stage(stage_name).trainable.llm)


def test_router_loss_is_in_the_loss_only_while_the_llm_trains(model, tmp_path):
    inputs = packed_batch(load_tokenizer("tiny"))
    with torch.no_grad():
        plain = model(**inputs).loss
        with_router = model(**inputs, output_router_logits=True).loss  # what the model itself adds
        frozen_llm = stage_trainer(model, "pretrain", tmp_path).compute_loss(model, inputs)
        trainer = stage_trainer(model, "midtrain", tmp_path)
        trained_llm = trainer.compute_loss(model, inputs)
    text = model.config.text_config
    term = with_router - plain
    # perfectly balanced experts give coefficient x top-k (1.8 on tiny); more when they are not
    balanced = text.router_aux_loss_coef * text.num_experts_per_tok
    assert balanced <= term < 2 * balanced
    assert torch.allclose(frozen_llm, plain)
    assert torch.allclose(trained_llm, with_router)  # one rank, no accumulation: exactly the model's own
    trainer.log({"loss": float(trained_llm)})  # the log splits what is optimized into its two parts
    logged = trainer.state.log_history[-1]
    assert logged["router_aux_loss"] == pytest.approx(float(term), rel=1e-5)
    assert logged["loss"] == pytest.approx(float(plain), rel=1e-5)


def test_router_term_is_a_mean_over_micro_steps_and_trains_the_routers(model, tmp_path):
    inputs = packed_batch(load_tokenizer("tiny"))
    trainer = stage_trainer(model, "instruct", tmp_path)
    with torch.no_grad():
        plain = model(**inputs).loss
        term = model(**inputs, output_router_logits=True).loss - plain
        trainer.current_gradient_accumulation_steps = 4
        assert torch.allclose(trainer.compute_loss(model, inputs), plain + term / 4)
    trainer.current_gradient_accumulation_steps = 1
    model.zero_grad()
    trainer.compute_loss(model, inputs).backward()
    with_term = model.model.language_model.layers[0].mlp.router.weight.grad.clone()
    model.zero_grad()
    model(**inputs).loss.backward()
    without = model.model.language_model.layers[0].mlp.router.weight.grad
    assert not torch.allclose(with_term, without)  # the balancing term reaches the routers
    model.zero_grad()


def test_router_term_reaches_the_routers_under_gradient_checkpointing(tmp_path):
    """The paper profile checkpoints every decoder layer: the logits read in the forward still carry the
    balancing gradient, and the recompute in the backward adds no second copy of them."""
    inputs = packed_batch(load_tokenizer("tiny"))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_tiny_model(load_profile("tiny"), load_tokenizer("tiny")).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        trainer = stage_trainer(model, "midtrain", tmp_path)
        trainer.compute_loss(model, inputs).backward()
        grads.append(model.model.language_model.layers[1].mlp.router.weight.grad)
        assert len(trainer.router_terms) == 1
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


PRINT_GROUPS = r"""
import sys
from transformers import TrainerCallback
from medkit.training import stage_run

class PrintGroups(TrainerCallback):
    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's ZeRO-3 optimizer wraps the AdamW
        print("GROUPS", sorted((g.get("name"), g["initial_lr"]) for g in inner.param_groups), flush=True)

init = stage_run.StageTrainer.__init__
def with_printer(self, *args, **kwargs):
    init(self, *args, **{**kwargs, "callbacks": [*kwargs.get("callbacks", []), PrintGroups()]})
stage_run.StageTrainer.__init__ = with_printer
stage_run.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_the_stage_s_per_part_rates_reach_the_optimizer_under_deepspeed(tmp_path):
    """transformers' deepspeed_init drops an optimizer handed to the Trainer and builds AdamW at one rate:
    before StageTrainer.create_optimizer, the tiny vision tower trained at the LLM's 3e-3, not 1e-4."""
    import ast
    import os
    import subprocess
    import sys

    from medkit.data.synthetic import generate_corpus

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=0, sizes={"caption": 5, "report_long": 5, "report": 5, "vqa_mc": 10,
                                           "text_mc": 10, "reasoning": 5, "trial": 5, "impression": 5})
    profile = load_profile("tiny")
    tokenizer = load_tokenizer("tiny")
    previous = tmp_path / "previous"
    build_tiny_model(profile, tokenizer).save_pretrained(previous)
    tokenizer.save_pretrained(previous)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29612"}
    run = subprocess.run([sys.executable, "-c", PRINT_GROUPS, "--stage", "instruct", "--corpus", str(corpus),
                          "--out", str(tmp_path / "instruct"), "--previous", str(previous), "--max-steps", "1"],
                         env=env, capture_output=True, text=True, timeout=600)
    groups = [line for line in run.stdout.splitlines() if line.startswith("GROUPS")]
    assert run.returncode == 0 and groups, run.stdout[-3000:] + run.stderr[-3000:]
    rates = dict(ast.literal_eval(groups[0].removeprefix("GROUPS ")))
    assert rates == {"vision.decay": 1e-4, "vision.no_decay": 1e-4, "projector.decay": 3e-3,
                     "projector.no_decay": 3e-3, "llm.decay": 3e-3, "llm.no_decay": 3e-3}
