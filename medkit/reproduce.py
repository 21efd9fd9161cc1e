"""The main job behind ``make reproduce``: synthetic corpus -> model -> training -> held-out loss.

Until the notebooks land this is the end-to-end proof that the pieces connect; its outputs go to
``runs/<run id>/`` (summary.json, the trained model, the corpus).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from transformers import TrainingArguments

from medkit.chat.tokenizer import profile_tokenizer
from medkit.data.dataset import ConversationDataset
from medkit.data.synthetic import generate_corpus
from medkit.model.build import build_tiny_model, compose_pretrained
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import Profile, load_profile
from medkit.training.collator import PadCollator
from medkit.training.run import TrainResult, evaluate, single_process_args, train

TRAIN_TASKS = ("caption", "vqa_mc", "text_mc", "reasoning", "report", "trial")
EVAL_LIMIT_PER_TASK = 16
DEFAULT_TINY_STEPS = 120


def smoke_training_args(profile: Profile, out_dir: Path, steps: int) -> TrainingArguments:
    return single_process_args(out_dir, seed=profile.seed, learning_rate=3e-3, steps=steps, batch_size=8,
                               bf16=profile.model.dtype == "bfloat16")


def prepare(profile: Profile, corpus_dir: Path):
    """Tokenizer, model and processor for a profile; the corpus generated if missing."""
    if not (corpus_dir / "manifest.json").is_file():
        generate_corpus(corpus_dir, seed=profile.data.corpus_seed)
    tokenizer = profile_tokenizer(profile)
    model = build_tiny_model(profile, tokenizer) if profile.is_tiny else compose_pretrained(profile, tokenizer)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    return tokenizer, model, processor


def reproduce(profile_name: str = "tiny", run_dir: str | Path | None = None, steps: int | None = None) -> dict:
    """tiny: train the model on the synthetic corpus and report held-out loss before/after.

    paper: compose the released checkpoints into the initial MedGPT-OSS model, save it, and report its
    held-out loss on the synthetic corpus (a wiring check on the GPU box; the staged training runs
    through ``medkit train``).
    """
    profile = load_profile(profile_name)
    run_dir = Path(run_dir or f"runs/{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, model, processor = prepare(profile, run_dir / "corpus")
    files = [run_dir / "corpus" / f"{task}.jsonl" for task in TRAIN_TASKS]
    eval_set = ConversationDataset.from_jsonl(files, processor, split="eval", limit=EVAL_LIMIT_PER_TASK)
    collator = PadCollator(tokenizer.pad_token_id)
    summary = {"profile": profile.name, "encoder": profile.model.encoder, "eval_examples": len(eval_set)}
    if profile.is_tiny:
        train_set = ConversationDataset.from_jsonl(files, processor, split="train")
        steps = steps or DEFAULT_TINY_STEPS
        args = smoke_training_args(profile, run_dir / "trainer", steps)
        result: TrainResult = train(model, train_set, collator, args, eval_dataset=eval_set)
        summary.update(steps=steps, train_examples=len(train_set), **asdict(result))
        print(f"train loss: first {result.losses[0]:.3f} -> last {result.losses[-1]:.3f} over {steps} steps "
              f"({result.runtime_s:.0f} s)")
        print(f"held-out loss ({len(eval_set)} eval items): {result.eval_loss_before:.3f} -> "
              f"{result.eval_loss_after:.3f}")
    else:
        loss = evaluate(model, eval_set, collator, smoke_training_args(profile, run_dir / "trainer", 1))
        summary.update(eval_loss_initial=loss)
        print(f"composed model held-out loss ({len(eval_set)} synthetic eval items): {loss:.3f}")
    model.save_pretrained(run_dir / "model")
    tokenizer.save_pretrained(run_dir / "model")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"run: {run_dir}")
    return summary
