"""One phase of one encoder of the LoRA ablation (Figure 1): what every rank started by ``medkit ablation`` runs.

The model is loaded from the encoder's composed start (``OUT/<encoder>/init/model``) while the Trainer's
HfDeepSpeedConfig is alive, so ZeRO-3 partitions GPT-oss as it loads, MoE experts included; then:

- ``projector_pretraining`` trains the projector alone and writes it to ``projector.safetensors``;
- ``lora_finetuning`` loads that projector, adds the LoRA adapters (``LoraSettings.adapters``; peft creates
  them whole on every rank, DeepSpeed partitions them when the engine starts) and trains adapters + projector,
  with gradient checkpointing where the config asks for it; peft writes them to ``OUT/<encoder>/adapter``.

Trained tensors are gathered from their ZeRO-3 partitions only to be written (rank 0 writes). Without
DeepSpeed (``zero3=False``) the same function is the tiny profile's in-process run.

Each phase is a process of its own because DeepSpeed 0.19.8 does not let a trained ZeRO-3 model go:
after ``engine.destroy()`` the model stays referenced (by ``parameter_offload.FWD_MODULE_STACK`` and by
hook closures that Python's gc cannot reach), so a second phase in the same process would keep the first
one's partitions on the GPU, and a model taken through a second engine fails in its backward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PrinterCallback, Trainer, TrainingArguments

from medkit.chat import load_tokenizer
from medkit.data.dataset import ConversationDataset
from medkit.model.modeling import MedGPTOssForConditionalGeneration
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import Profile, load_profile
from medkit.training.ablation import (ADAPTER_DIR, PHASE_FILE, PHASES, PROJECTOR_FILE, AblationConfig, Phase, PhaseBatch,
                                      PhaseJob, add_lora, encoder_dir, load_ablation_config, load_items,
                                      parameter_counts, phase_batch, phase_deepspeed_config, phase_dir,
                                      start_checkpoint)
from medkit.training.collator import PadCollator
from medkit.training.deepspeed_setup import init_distributed, mark_moe_leaf_modules, name_cpu_accelerator
from medkit.training.run import LossRecorder, TrainResult, single_process_args
from medkit.training.stage_run import exit_without_teardown, wait_for_every_rank
from medkit.training.deepspeed_setup import language_width
from medkit.training.stages import Trainable, apply_trainable

def phase_training_args(phase: Phase, profile: Profile, out_dir: Path, batch: PhaseBatch, *, zero3: bool,
                        gradient_checkpointing: bool) -> TrainingArguments:
    """The ablation's optimizer and schedule (``single_process_args``: AdamW, Table 2's weight decay and
    cosine warmup) with the phase's batch split over the ranks and, under ZeRO-3, the DeepSpeed config
    that ``medkit ablation --dry-run`` prints."""
    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and profile.model.dtype == "bfloat16"
    args = single_process_args(out_dir, seed=profile.seed, learning_rate=phase.learning_rate, steps=phase.steps,
                               epochs=phase.epochs, batch_size=batch.per_device, bf16=bf16)
    return replace(args, gradient_accumulation_steps=batch.accumulation,
                   activation_checkpointing=gradient_checkpointing,
                   deepspeed=phase_deepspeed_config(batch, bf16, language_width(profile)) if zero3 else None,
                   # bit-identical reruns on CPU; not on GPUs, where it serialises every kernel launch
                   # (CUDA_LAUNCH_BLOCKING=1) - the curriculum stages train without it too
                   full_determinism=not on_gpu)


def gathered(params, modifier_rank: int | None = None):
    """Whole tensors of ZeRO-3 partitioned parameters for the duration of the block (a no-op without
    ZeRO-3); with ``modifier_rank``, that rank's changes are what every rank keeps."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=modifier_rank)


def load_projector(model: MedGPTOssForConditionalGeneration, path: Path) -> None:
    projector = model.model.multi_modal_projector
    with gathered(projector.parameters(), modifier_rank=0):
        projector.load_state_dict(load_file(path))


def phase_model(job: PhaseJob, config: AblationConfig, profile: Profile):
    """The model the phase trains, with only what it trains left trainable."""
    model = MedGPTOssForConditionalGeneration.from_pretrained(start_checkpoint(job.out, job.encoder))
    if config.gradient_checkpointing:
        # training needs no KV cache, and with checkpointing on transformers would switch it off itself on the
        # first step, logging "`use_cache=True` is incompatible with gradient checkpointing" (the checkpoint
        # on disk is not changed: evaluation loads it with its cache)
        model.config.text_config.use_cache = False
    mark_moe_leaf_modules(model)
    if job.phase == "projector_pretraining":
        apply_trainable(model, Trainable(vision=False, projector=True, llm=False))
        return model
    load_projector(model, phase_dir(job.out, job.encoder, "projector_pretraining") / PROJECTOR_FILE)
    apply_trainable(model, Trainable(vision=False, projector=False, llm=False))
    torch.manual_seed(profile.seed)  # the adapters' initial values depend on the seed alone, not on what ran before
    return add_lora(model, config.lora)


def save_phase(trainer: Trainer, model, job: PhaseJob) -> None:
    """Phase 1: the projector's tensors, gathered from their partitions (the Trainer would gather and write
    the whole model). Phase 2: the adapters and projector, through the Trainer, which for a peft model
    under ZeRO-3 gathers the trainable tensors only and has peft write them. Every rank takes part,
    rank 0 writes."""
    if job.phase == "lora_finetuning":
        trainer.save_model(str(encoder_dir(job.out, job.encoder) / ADAPTER_DIR))
        return
    projector = model.model.multi_modal_projector
    with gathered(projector.parameters()):
        if trainer.is_world_process_zero():
            save_file({k: v.detach().clone() for k, v in projector.state_dict().items()},
                      phase_dir(job.out, job.encoder, job.phase) / PROJECTOR_FILE)


def zero_stage(trainer: Trainer) -> int:
    """The ZeRO stage the DeepSpeed engine trained under (0: no DeepSpeed)."""
    return trainer.model_wrapped.zero_optimization_stage() if trainer.is_deepspeed_enabled else 0


def train_phase(job: PhaseJob, *, zero3: bool) -> None:
    """Train the phase; rank 0 writes its outputs and ``phase.json`` (losses, runtime, parameter counts)."""
    name_cpu_accelerator()  # in this process too (the ranks get it from the launcher's environment)
    config = load_ablation_config(job.config)
    profile = load_profile(job.profile, encoder=job.encoder)
    phase = getattr(config, job.phase)
    # on ranks, set by the launcher before any process group exists
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if zero3 else 1
    batch = phase_batch(phase, world_size, job.phase)
    out = phase_dir(job.out, job.encoder, job.phase)
    out.mkdir(parents=True, exist_ok=True)
    args = phase_training_args(phase, profile, out, batch, zero3=zero3,
                               gradient_checkpointing=config.gradient_checkpointing)
    if zero3:
        init_distributed(args)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = phase_model(job, config, profile)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    dataset = ConversationDataset(load_items(phase.data, job.data_root, "train"), processor)
    result = TrainResult()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=PadCollator(tokenizer.pad_token_id),
                      callbacks=[LossRecorder(result)])
    if not zero3:
        trainer.remove_callback(PrinterCallback)  # in-process: no step lines (ranks print them for the progress bar)
    output = trainer.train()
    save_phase(trainer, model, job)
    trainable, total = parameter_counts(model)
    record = {"losses": result.losses, "train_runtime_s": output.metrics["train_runtime"], "world_size": world_size,
              "zero_stage": zero_stage(trainer), "trainable_parameters": trainable, "total_parameters": total}
    if trainer.is_world_process_zero():
        (out / PHASE_FILE).write_text(json.dumps(record, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one phase of the LoRA encoder ablation on this rank "
                                                 "(started by medkit ablation)")
    parser.add_argument("--phase", choices=PHASES, help="the phase this rank trains (required without --worker)")
    parser.add_argument("--worker", action="store_true", help="compose the encoder's start, train both phases and "
                        "evaluate, in this process on one thread, without DeepSpeed (the tiny profile's workers)")
    parser.add_argument("--corpus-dir", type=Path, default=None, help="with --worker: the stand-ins' corpus (tiny)")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args(argv)
    if a.worker:
        from medkit.training.ablation import train_encoder_in_worker

        train_encoder_in_worker(a.profile, a.encoder, a.config, a.data_root, a.out, a.corpus_dir)
        return 0
    if a.phase is None:
        parser.error("--phase is required (or --worker)")
    train_phase(PhaseJob(a.phase, a.profile, a.encoder, a.config, a.data_root, a.out), zero3=True)
    wait_for_every_rank()
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:  # no DeepSpeed engine in a worker: an ordinary exit
        sys.exit(main())
    exit_without_teardown(main())
