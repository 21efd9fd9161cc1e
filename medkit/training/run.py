"""Run transformers' Trainer on a MedGPT-OSS model; keep the per-step loss curve and held-out loss.

Later stages pass DeepSpeed and stage settings through the same ``TrainingArguments``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from medkit.training.deepspeed_setup import name_cpu_accelerator


def single_process_args(
    out_dir: str | Path,
    *,
    seed: int,
    learning_rate: float,
    steps: int | None = None,
    epochs: float = 1.0,
    batch_size: int = 8,
    bf16: bool = False,
) -> TrainingArguments:
    """Trainer settings for a one-process run (smoke training, the encoder ablation): AdamW
    (0.9, 0.999, 1e-8), weight decay 0.05 and cosine with 3% warmup as in Table 2, no checkpoints,
    deterministic kernels so the same seed gives bit-identical weights on CPU."""
    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps or -1,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # a float in [0, 1) is a ratio of total steps
        weight_decay=0.05,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        full_determinism=True,  # without it, vision-tower weights differed by ~1e-8 between identical runs
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # one per logged optimizer step
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    runtime_s: float = 0.0


class LossRecorder(TrainerCallback):
    def __init__(self, result: TrainResult):
        self.result = result

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.result.losses.append(float(logs["loss"]))


def evaluate(model: PreTrainedModel, dataset: Dataset, collator, args: TrainingArguments) -> float:
    """Mean loss on ``dataset`` (no training)."""
    name_cpu_accelerator()  # the Trainer imports deepspeed: no accelerator auto-detection warning on CPU
    trainer = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=collator)
    return trainer.evaluate()["eval_loss"]


def train(
    model: PreTrainedModel,
    dataset: Dataset,
    collator,
    args: TrainingArguments,
    eval_dataset: Dataset | None = None,
) -> TrainResult:
    """Train; with ``eval_dataset``, measure its loss before and after training."""
    result = TrainResult()
    name_cpu_accelerator()  # the Trainer imports deepspeed: no accelerator auto-detection warning on CPU
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        callbacks=[LossRecorder(result)],
    )
    trainer.remove_callback(PrinterCallback)  # the loss curve is kept in the result, not printed per step
    if eval_dataset is not None:
        result.eval_loss_before = trainer.evaluate()["eval_loss"]
    start = time.perf_counter()
    trainer.train()
    result.runtime_s = time.perf_counter() - start
    if eval_dataset is not None:
        result.eval_loss_after = trainer.evaluate()["eval_loss"]
    return result
