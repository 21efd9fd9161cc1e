"""One curriculum stage on one rank: what every process started by ``medkit train`` runs.

The model is built (first stage) or loaded (later stages, from the previous stage's output) while the
Trainer's HfDeepSpeedConfig is alive, so ZeRO-3 partitions it at construction and initialises every
weight, GptOss experts included. Stage flags decide what trains; the Trainer resumes from the stage's
last checkpoint when one exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.optim import AdamW
from transformers import TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from medkit.chat import load_tokenizer
from medkit.data.mixture import stage_dataset
from medkit.model.attention import use_attention
from medkit.model.build import image_token_id, model_config
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import Profile, load_profile
from medkit.training.collator import PadCollator
from medkit.training.packing import PackingCollator
from medkit.training.deepspeed_setup import init_distributed, mark_moe_leaf_modules, zero3_config
from medkit.training.run import LossRecorder, TrainResult
from medkit.training.stages import LearningRates, StageConfig, apply_trainable, load_stage, optimizer_groups


def stage_training_args(stage: StageConfig, profile: Profile, out_dir: Path, world_size: int, *,
                        max_steps: int | None, per_device_batch_size: int | None,
                        global_batch_size: int | None, save_steps: int = 50) -> TrainingArguments:
    per_device = per_device_batch_size or profile.training.per_device_batch_size or stage.per_device_batch_size
    global_batch = global_batch_size or profile.training.global_batch_size or stage.global_batch_size
    max_steps = max_steps or profile.training.max_steps
    if global_batch % (per_device * world_size):
        raise ValueError(f"global batch {global_batch} is not a multiple of {per_device} x {world_size} ranks")
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(out_dir),
        deepspeed=zero3_config(stage),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=global_batch // (per_device * world_size),
        num_train_epochs=stage.epochs,
        max_steps=max_steps or -1,
        learning_rate=stage.learning_rate.llm,  # per-part rates are set in the optimizer groups
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=stage.weight_decay,
        bf16=stage.bf16 and on_gpu and profile.model.dtype == "bfloat16",
        gradient_checkpointing=stage.gradient_checkpointing and not profile.is_tiny,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,  # the newest may be cut short by a kill; resuming then falls back to the one before
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


def stage_for_profile(stage: StageConfig, profile: Profile) -> StageConfig:
    """The stage with the profile's learning-rate stand-in applied to every part, if it has one."""
    rate = profile.training.learning_rate.get(stage.name)
    if rate is None:
        return stage
    return replace(stage, learning_rate=LearningRates(vision=rate, projector=rate, llm=rate))


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


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint a killed stage can resume from; newer ones cut short by the kill are passed
    over (the Trainer writes them again when it reaches their step)."""
    if not out_dir.is_dir():
        return None
    found = sorted((p for p in out_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and checkpoint_step(p) is not None),
                   key=checkpoint_step, reverse=True)
    for checkpoint in found:
        if checkpoint_is_complete(checkpoint):
            return checkpoint
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
              **batch_overrides) -> TrainResult:
    """Train one stage on the synthetic ``corpus`` (tiny) or the Table 1 mixture under ``data_root``."""
    from transformers import Trainer  # imported late: after the environment of the rank is set

    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher before any process group exists
    args = stage_training_args(stage, profile, out_dir, world_size, **batch_overrides)
    init_distributed(args)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = build_stage_model(stage, profile, tokenizer, previous)
    use_attention(model, profile.model.attn_implementation)  # the masks packed rows get follow it
    mark_moe_leaf_modules(model)
    apply_trainable(model, stage.trainable)
    optimizer = AdamW(optimizer_groups(model, stage), betas=(stage.adam_beta1, stage.adam_beta2),
                      eps=stage.adam_epsilon)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    dataset, data_report = stage_dataset(stage, processor, corpus=corpus, data_root=data_root,
                                         leakage_report=leakage_report, skip_missing=skip_missing)
    result = TrainResult()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=stage_collator(stage, model, tokenizer),
                      optimizers=(optimizer, None), callbacks=[LossRecorder(result)])
    resume = last_complete_checkpoint(out_dir)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(out_dir / "model"))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir / "model"))
        (out_dir / "data_report.json").write_text(json.dumps(data_report.to_dict(), indent=2))
        (out_dir / "losses.json").write_text(json.dumps(result.losses))
        metrics = {**output.metrics, "resumed_from": str(resume) if resume else None, "world_size": world_size,
                   "tokens_seen": trainer.state.num_input_tokens_seen, "global_step": trainer.state.global_step}
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
    parser.add_argument("--per-device-batch-size", type=int, default=None)
    parser.add_argument("--global-batch-size", type=int, default=None)
    parser.add_argument("--save-steps", type=int, default=50, help="checkpoint interval (a killed run resumes)")
    parser.add_argument("--batching", choices=["packed", "padded"], default=None, help="override the stage config")
    a = parser.parse_args(argv)
    profile = load_profile(a.profile)
    stage = load_stage(a.stage, a.vision_schedule)
    if a.batching:
        stage = replace(stage, batching=a.batching)
    run_stage(stage_for_profile(stage, profile), profile, a.corpus, a.out, a.previous, data_root=a.data_root,
              leakage_report=a.leakage_report, skip_missing=a.skip_missing, max_steps=a.max_steps, per_device_batch_size=a.per_device_batch_size,
              global_batch_size=a.global_batch_size, save_steps=a.save_steps)
    wait_for_every_rank()
    return 0


def wait_for_every_rank() -> None:
    """Return once every rank has finished its stage, so none exits while another still saves."""
    import torch.distributed as dist

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
