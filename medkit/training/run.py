"""Run transformers' Trainer on a MedGPT-OSS model; keep the per-step loss curve and held-out loss.

Later stages pass DeepSpeed and stage settings through the same ``TrainingArguments``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from torch.utils.data import Dataset
from transformers import PreTrainedModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments


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
