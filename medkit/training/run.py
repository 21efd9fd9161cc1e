"""Run transformers' Trainer on a MedGPT-OSS model and keep the per-step loss curve.

Later stages pass DeepSpeed and stage settings through the same ``TrainingArguments``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from torch.utils.data import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # one per logged optimizer step
    runtime_s: float = 0.0


class LossRecorder(TrainerCallback):
    def __init__(self, result: TrainResult):
        self.result = result

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.result.losses.append(float(logs["loss"]))


def train(model: PreTrainedModel, dataset: Dataset, collator, args: TrainingArguments) -> TrainResult:
    result = TrainResult()
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[LossRecorder(result)]
    )
    start = time.perf_counter()
    trainer.train()
    result.runtime_s = time.perf_counter() - start
    return result
