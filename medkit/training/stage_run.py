"""One curriculum stage on one rank: what every process started by ``medkit train`` runs.

The model is built (first stage) or loaded (later stages, from the previous stage's output) while the
Trainer's HfDeepSpeedConfig is alive, so ZeRO-3 partitions it at construction and initialises every
weight, GptOss experts included. Stage flags decide what trains; while the LLM trains, GPT-oss's router
load-balancing loss is added (``StageTrainer``). Checkpoints follow the stage's ``CheckpointPolicy`` (steps
through the Trainer's own interval, wall-clock minutes through ``SaveEveryMinutes``); the Trainer
resumes from the stage's newest complete checkpoint when one exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.optim import AdamW
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssTopKRouter
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from medkit.chat.tokenizer import profile_tokenizer
from medkit.data.mixture import LENGTHS_DIR, stage_dataset
from medkit.model.attention import use_attention
from medkit.model.build import image_token_id, model_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import Profile, load_profile
from medkit.training.collator import PadCollator
from medkit.training.packing import PackingCollator
from medkit.training.deepspeed_setup import init_distributed, language_width, mark_moe_leaf_modules, zero3_config
from medkit.training.run import LossRecorder, TrainResult
from medkit.training.stages import (BatchPlan, CheckpointPolicy, StageConfig, apply_trainable, checkpoint_policy,
                                    check_row_length, load_stage, optimizer_groups, stage_for_profile,
                                    with_batch_sizes)

def stage_training_args(stage: StageConfig, profile: Profile, out_dir: Path, plan: BatchPlan,
                        policy: CheckpointPolicy, *, max_steps: int | None = None) -> TrainingArguments:
    max_steps = max_steps or profile.training.steps(stage.name)
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(out_dir),
        deepspeed=zero3_config(language_width(profile)),
        per_device_train_batch_size=plan.per_device,  # samples; the collator packs them into rows
        gradient_accumulation_steps=plan.accumulation,
        num_train_epochs=stage.epochs,
        max_steps=max_steps or -1,
        learning_rate=stage.learning_rate.llm,  # per-part rates are set in the optimizer groups
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=stage.weight_decay,
        bf16=stage.bf16 and on_gpu and profile.model.dtype == "bfloat16",
        gradient_checkpointing=stage.gradient_checkpointing and not profile.is_tiny,
        logging_steps=1,
        **save_arguments(policy),
        # tokens/s for the throughput benchmark; packed batches carry no attention_mask to count from,
        # and their only padding is the tail of the shortest rows, so every token is counted there
        include_num_input_tokens_seen="non_padding" if stage.batching == "padded" else "all",
        report_to=[],
        seed=profile.seed,
        data_seed=profile.seed,
        use_cpu=not on_gpu,
        remove_unused_columns=False,
        disable_tqdm=True,
    )


def save_arguments(policy: CheckpointPolicy) -> dict:
    """The Trainer's save settings for a policy. A step interval is the Trainer's own ``save_steps``; a
    clock interval alone leaves its strategy at "no" and ``SaveEveryMinutes`` asks for each save."""
    interval = {"save_strategy": "steps", "save_steps": policy.every_steps} if policy.every_steps else \
        {"save_strategy": "no"}
    return {**interval, "save_only_model": policy.model_only, "save_total_limit": policy.keep}


def rank_zero_decides(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (a collective: every rank must call it at the same point)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    decision = torch.tensor([int(flag)], device=device)
    dist.broadcast(decision, src=0)
    return bool(decision.item())


class SaveEveryMinutes(TrainerCallback):
    """Asks for a checkpoint once ``minutes`` of training have passed since the last save (any save,
    step-interval ones included) or the start of this run, through ``control.should_save``: the flag the
    Trainer's own step interval sets, so the save, its rotation and the resume are the Trainer's. A
    ZeRO-3 save is collective and ranks' clocks drift apart, so rank 0's clock decides for every rank."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s = minutes * 60
        self.clock = clock
        self.last_save = clock()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = self.clock()  # loading the model and the data is not training time

    def on_step_end(self, args, state, control, **kwargs):
        if rank_zero_decides(self.clock() - self.last_save >= self.interval_s, args.device):
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last_save = self.clock()


class StageTrainer(Trainer):
    """transformers' Trainer plus GPT-oss's router load-balancing loss while the LLM trains.

    The model can add that loss itself when asked for router logits (as ``GptOssForCausalLM`` does:
    ``router_aux_loss_coef x load_balancing_loss_func``), but the Trainer then treats it as part of a
    token-sum loss: it multiplies every micro-step's loss by the number of ranks
    (``average_tokens_across_devices``) and sums micro-steps without dividing, which would weight the
    balancing term by ranks x accumulation (x8 on the paper's 8 GPUs). So the routers' logits are read
    here with forward hooks, the model's own ``router_loss`` turns them into ``coef x aux``, and that is
    added after the Trainer's scaling, divided by the micro-steps: each optimizer step carries ``coef x``
    the mean auxiliary loss of its micro-batches on any split of the global batch (on one rank without
    accumulation, exactly what the model adds). With the LLM frozen there is no such term: the routers
    cannot learn, and the loss would only push the projector towards inputs that spread the experts.
    """

    def __init__(self, *args, router_balance: bool, stage: StageConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.router_balance = router_balance
        self.router_logits: list[torch.Tensor] | None = None  # a list only while a training forward runs
        self.router_terms: list[torch.Tensor] = []
        if router_balance:
            for module in self.model.modules():
                if isinstance(module, GptOssTopKRouter):
                    module.register_forward_hook(self._keep_router_logits)

    def create_optimizer(self, model=None):
        """AdamW with one group per trained part and decay class at the stage's own rates (``optimizer_groups``).

        An optimizer handed to the Trainer does not survive DeepSpeed: transformers' ``deepspeed_init``
        sets ``trainer.optimizer = None`` and builds its default AdamW at ``args.learning_rate`` for every
        parameter, so the stage's per-part rates (Table 2: projector 1e-3 in stage 0; the tiny profile's
        vision 1e-4 in instruction tuning) were silently the LLM's. Building the groups here is what
        ``deepspeed_init`` calls, with or without DeepSpeed."""
        if self.stage is None:
            return super().create_optimizer(model)
        if self.optimizer is None:
            stage = self.stage
            self.optimizer = AdamW(optimizer_groups(model or self.model, stage), betas=(stage.adam_beta1, stage.adam_beta2),
                                   eps=stage.adam_epsilon)
        return self.optimizer

    def _keep_router_logits(self, module, args, output) -> None:
        # outside compute_loss's forward (a gradient-checkpointing recompute in the backward) nothing is kept
        if self.router_logits is not None:
            self.router_logits.append(output[0])  # (tokens, experts), as GptOss's OutputRecorder takes it

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.router_balance:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.router_logits = []
        try:  # the model must not add the term too: router logits stay off in its forward
            loss, outputs = super().compute_loss(model, {**inputs, "output_router_logits": False}, True,
                                                 num_items_in_batch)
            router_logits = tuple(self.router_logits)
        finally:
            self.router_logits = None
        term = self.accelerator.unwrap_model(model).router_loss(router_logits, inputs.get("attention_mask"))
        self.router_terms.append(term.detach())
        loss = loss + term.to(loss.device) / getattr(self, "current_gradient_accumulation_steps", 1)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """``loss`` stays the language-modelling loss (comparable across stages and with the frozen-LLM stage
        0), ``router_aux_loss`` the term added to it; their sum is what is optimized (``train_loss``)."""
        if self.router_terms and "loss" in logs:
            term = torch.stack(self.router_terms).mean()
            self.router_terms = []
            if dist.is_available() and dist.is_initialized():  # every rank logs at this step: one collective
                dist.all_reduce(term)  # the logged loss is the mean over ranks, so is the term taken from it
                term = term / dist.get_world_size()
            logs["router_aux_loss"] = term.item()
            logs["loss"] -= logs["router_aux_loss"]
        super().log(logs, start_time)


def build_stage_model(stage: StageConfig, profile: Profile, tokenizer, previous: Path | None):
    if previous is not None:
        return MedGPTOssForConditionalGeneration.from_pretrained(previous)
    if not profile.is_tiny:
        # the paper's first stage starts from the released encoder and GPT-oss, never from random weights
        raise ValueError(
            f"profile {profile.name!r}: stage {stage.name!r} needs --previous pointing at a composed "
            "checkpoint (medkit.model.build.compose_pretrained saved with save_pretrained)"
        )
    config = model_config(profile, vocab_size=len(tokenizer), img_token=image_token_id(tokenizer))
    torch.manual_seed(profile.seed)
    return MedGPTOssForConditionalGeneration._from_config(config)


ZERO_SHARD = re.compile(r"zero_pp_rank_(?P<rank>\d+)_mp_rank_\d+_(?P<kind>model|optim)_states\.pt$")


def checkpoint_step(checkpoint: Path) -> int | None:
    """N of a ``checkpoint-N`` folder; None for other names."""
    suffix = checkpoint.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    return int(suffix) if suffix != checkpoint.name and suffix.isdigit() else None


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """Whether every file a resume reads was written. The Trainer writes trainer_state.json last, after the
    weights, DeepSpeed's per-rank ZeRO shards (named by its ``latest`` tag) and the RNG states; a kill during
    a save leaves a folder without it, with a truncated one, or with a rank's shard missing."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        tag = (checkpoint / "latest").read_text().strip()
    except (OSError, ValueError):
        return False
    if state.get("global_step") != checkpoint_step(checkpoint) or not tag or not (checkpoint / tag).is_dir():
        return False
    shards: dict[str, set[str]] = {"model": set(), "optim": set()}
    for f in (checkpoint / tag).iterdir():
        shard = ZERO_SHARD.search(f.name)
        if shard:
            shards[shard["kind"]].add(shard["rank"])
    return bool(shards["model"]) and shards["model"] == shards["optim"]


def is_model_only(checkpoint: Path) -> bool:
    """A weights-only save (``save_only_model``): trainer state and weights, no DeepSpeed tag or shards."""
    weights = any((checkpoint / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
    return weights and (checkpoint / "trainer_state.json").is_file() and not (checkpoint / "latest").exists()


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint a killed stage can resume from; newer ones cut short by the kill are passed
    over (the Trainer writes them again when it reaches their step), and so are model-only ones, which
    hold no optimizer state to resume from."""
    if not out_dir.is_dir():
        return None
    found = sorted((p for p in out_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and checkpoint_step(p) is not None),
                   key=checkpoint_step, reverse=True)
    for checkpoint in found:
        if checkpoint_is_complete(checkpoint):
            return checkpoint
        if is_model_only(checkpoint):
            print(f"[medkit] {checkpoint} holds weights only (a model-only save): no optimizer state to resume "
                  "exactly from; not resuming from it", flush=True)
        else:
            print(f"[medkit] {checkpoint} is incomplete (the run stopped while saving it); not resuming from it",
                  flush=True)
    return None


def stage_collator(stage: StageConfig, model, tokenizer):
    """Packed rows up to the stage's max length (default), or pad-to-longest."""
    if stage.batching == "padded":
        return PadCollator(tokenizer.pad_token_id)
    return PackingCollator(tokenizer.pad_token_id, stage.max_length)


def run_stage(stage: StageConfig, profile: Profile, corpus: Path | None, out_dir: Path, previous: Path | None, *,
              data_root: Path | None = None, leakage_report: Path | None = None, skip_missing: bool = False,
              policy: CheckpointPolicy | None = None, max_steps: int | None = None) -> TrainResult:
    """Train one stage on the synthetic ``corpus`` (tiny) or the Table 1 mixture under ``data_root``;
    ``stage`` carries the batch sizes (profile stand-ins and overrides applied), ``policy`` the checkpoints
    (default: the stage's)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher before any process group exists
    plan = stage.batch_plan(world_size)
    policy = policy or stage.checkpoint
    args = stage_training_args(stage, profile, out_dir, plan, policy, max_steps=max_steps)
    init_distributed(args)
    tokenizer = profile_tokenizer(profile)
    model = build_stage_model(stage, profile, tokenizer, previous)
    use_attention(model, profile.model.attn_implementation)  # the masks packed rows get follow it
    mark_moe_leaf_modules(model)
    apply_trainable(model, stage.trainable)
    check_row_length(stage, model.config.text_config.max_position_embeddings)  # a rank started by hand too
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    # the launcher measured the records' lengths into out_dir/lengths; a stage started without it measures here
    dataset, data_report = stage_dataset(stage, processor, corpus=corpus, data_root=data_root,
                                         leakage_report=leakage_report, skip_missing=skip_missing,
                                         max_position_embeddings=model.config.text_config.max_position_embeddings,
                                         lengths_dir=out_dir / LENGTHS_DIR)
    result = TrainResult()
    callbacks = [LossRecorder(result)] + ([SaveEveryMinutes(policy.every_minutes)] if policy.every_minutes else [])
    trainer = StageTrainer(model=model, args=args, train_dataset=dataset,
                           data_collator=stage_collator(stage, model, tokenizer), stage=stage,
                           callbacks=callbacks, router_balance=stage.trainable.llm)
    resume = last_complete_checkpoint(out_dir)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(out_dir / "model"))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir / "model"))
        (out_dir / "data_report.json").write_text(json.dumps(data_report.to_dict(), indent=2))
        (out_dir / "losses.json").write_text(json.dumps(result.losses))
        coefficient = model.config.text_config.router_aux_loss_coef if trainer.router_balance else None
        metrics = {**output.metrics, "resumed_from": str(resume) if resume else None, "world_size": world_size,
                   "tokens_seen": trainer.state.num_input_tokens_seen, "global_step": trainer.state.global_step,
                   "batch": {**asdict(plan), "accumulation": plan.accumulation}, "checkpoint": asdict(policy),
                   "router_aux_loss_coef": coefficient}
        (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one curriculum stage on this rank (started by medkit train)")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--vision-schedule", default="table2", choices=["table2", "text"])
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--corpus", type=Path, help="the synthetic corpus (tiny profile)")
    data.add_argument("--data-root", type=Path, help="folder of the Table 1 datasets (see medkit.data.mixture)")
    parser.add_argument("--leakage-report", type=Path, default=None, help="leakage audit JSON: its ids are excluded")
    parser.add_argument("--skip-missing", action="store_true", help="train on the mixture's datasets that exist")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--previous", type=Path, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--per-device-batch-size", type=int, default=None, help="samples per rank per micro-step")
    parser.add_argument("--global-batch-size", type=int, default=None, help="samples per optimizer step")
    parser.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps (replaces the "
                        "stage's intervals; with --save-minutes, whichever comes first)")
    parser.add_argument("--save-minutes", type=float, default=None, help="checkpoint every N minutes of training")
    parser.add_argument("--save-model-only", action="store_true", default=None,
                        help="weights only, no optimizer state: such checkpoints cannot be resumed from")
    parser.add_argument("--batching", choices=["packed", "padded"], default=None, help="override the stage config")
    a = parser.parse_args(argv)
    profile = load_profile(a.profile)
    stage = load_stage(a.stage, a.vision_schedule)
    if a.batching:
        stage = replace(stage, batching=a.batching)
    stage = with_batch_sizes(stage_for_profile(stage, profile), a.per_device_batch_size, a.global_batch_size)
    policy = checkpoint_policy(stage, save_steps=a.save_steps, save_minutes=a.save_minutes,
                               model_only=a.save_model_only)
    run_stage(stage, profile, a.corpus, a.out, a.previous, data_root=a.data_root, leakage_report=a.leakage_report,
              skip_missing=a.skip_missing, policy=policy, max_steps=a.max_steps)
    wait_for_every_rank()
    return 0


def wait_for_every_rank() -> None:
    """Return once every rank has finished its stage, so none exits while another still saves."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def exit_without_teardown(code: int) -> None:
    """Leave at once, once every output is written and every rank is past the final barrier.

    After a successful stage, one rank was seen to abort at exit with "terminate called without an active
    exception" (SIGABRT: the launcher reports exit 250), in gloo/c10d teardown; destroying the process
    group first did not stop it. Skipping interpreter teardown does, and nothing is left that process exit
    does not release: every file is written and closed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
