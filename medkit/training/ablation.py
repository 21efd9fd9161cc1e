"""The LoRA vision-encoder ablation behind Figure 1 (paper section 3.1).

For each encoder the paper trains the LLaVA way: phase 1 trains only the projector, phase 2 trains the
projector plus LoRA adapters on the LLM. Every encoder gets the same data, seed and step counts; then
each is scored on the same held-out multiple-choice items (strict extraction, bootstrap CI) and by its
held-out loss. The results file is what Figure 1 is drawn from.

The run is one process through transformers' Trainer and peft; on the ``paper`` profile the same code
composes each released encoder with GPT-oss-20B and trains on JSONL files in medkit's schema.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from medkit.config import ConfigError, load_yaml
from medkit.data.dataset import ConversationDataset
from medkit.data.schema import Sample, read_jsonl
from medkit.eval.generation import DecodeSettings, generate
from medkit.eval.likelihood import per_item_loss
from medkit.eval.scoring import accuracy_summary, bootstrap_ci, score_mc
from medkit.model.build import build_tiny_model, compose_pretrained
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import CONFIG_DIR, Profile, get_encoder, load_profile
from medkit.training.collator import PadCollator
from medkit.training.run import single_process_args, train
from medkit.training.stages import Trainable, apply_trainable

RESULTS_NAME = "results.json"


@dataclass
class Phase:
    data: list[str]  # synthetic-corpus task names, or JSONL paths relative to the data root
    learning_rate: float
    batch_size: int
    steps: int | None = None  # None: train for `epochs`
    epochs: float = 1.0


@dataclass
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: str
    target_parameters: list[str] = field(default_factory=list)

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            target_parameters=self.target_parameters or None,
            modules_to_save=["multi_modal_projector"],  # the projector keeps training in phase 2
        )


@dataclass
class Evaluation:
    mc_data: list[str]
    loss_data: list[str]
    limit_per_file: int | None = None
    max_new_tokens: int = 16
    n_boot: int = 1000


@dataclass
class AblationConfig:
    encoders: list[str]
    base_lm: Phase | None  # tiny only: text training that stands in for the released GPT-oss
    projector_pretraining: Phase
    lora_finetuning: Phase
    lora: LoraSettings
    evaluation: Evaluation


def load_ablation_config(name_or_path: str | Path) -> AblationConfig:
    """``tiny`` / ``paper`` (the shipped configs) or a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / "ablation" / f"{name_or_path}.yaml"
    config = load_yaml(AblationConfig, path)
    for name in config.encoders:
        get_encoder(name)  # unknown encoder: error listing the registered ones
    return config


def data_files(entries: list[str], data_root: Path) -> list[tuple[Path, bool]]:
    """(file, is corpus task) per entry; a task name means ``<task>.jsonl`` of the synthetic corpus."""
    files = []
    for entry in entries:
        is_task = not entry.endswith(".jsonl")
        path = data_root / (f"{entry}.jsonl" if is_task else entry)
        if not path.is_file():
            raise FileNotFoundError(f"ablation data {entry!r}: {path} does not exist")
        files.append((path, is_task))
    return files


def load_items(entries: list[str], data_root: Path, split: str, limit: int | None = None) -> list[tuple[Sample, Path]]:
    """(sample, image root) pairs; corpus tasks are filtered to ``split``, explicit files taken whole."""
    items = []
    for path, is_task in data_files(entries, data_root):
        samples = [s for s in read_jsonl(path) if not is_task or s.meta.get("split") == split]
        items.extend((s, path.parent) for s in samples[:limit])
    return items


def initial_model(profile: Profile, tokenizer, base_lm: Path | None = None) -> PreTrainedModel:
    """Encoder + fresh projector + LLM; on tiny the LLM weights come from the shared ``base_lm`` file."""
    torch.manual_seed(profile.seed)
    if not profile.is_tiny:
        return compose_pretrained(profile, tokenizer)
    model = build_tiny_model(profile, tokenizer)
    if base_lm is not None:
        model.model.language_model.load_state_dict(load_file(base_lm / "language_model.safetensors"))
        model.lm_head.load_state_dict(load_file(base_lm / "lm_head.safetensors"))
    return model


def text_only(sample: Sample) -> Sample:
    """The sample with its images removed (image parts dropped from every message)."""
    messages = [
        {**m, "content": [p for p in m["content"] if p.get("type") != "image"]} if isinstance(m["content"], list) else m
        for m in sample.messages
    ]
    return replace(sample, messages=messages, images=[])


def train_base_lm(config: AblationConfig, profile_name: str, data_root: Path, out_dir: Path) -> Path:
    """Tiny profile: train the toy LLM on the corpus's training texts (images stripped), once, so every
    encoder starts from the same language model that already knows the corpus's language - the role the
    released GPT-oss plays in the paper. Saved as safetensors under ``out_dir``."""
    from medkit.chat import load_tokenizer

    profile = load_profile(profile_name, encoder=config.encoders[0])
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = initial_model(profile, tokenizer)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    apply_trainable(model, Trainable(vision=False, projector=False, llm=True))
    items = [(text_only(s), root) for s, root in load_items(config.base_lm.data, data_root, "train")]
    result = run_phase(model, config.base_lm, items, processor, PadCollator(tokenizer.pad_token_id), profile,
                       out_dir / "trainer")
    save_file(model.model.language_model.state_dict(), out_dir / "language_model.safetensors")
    save_file(model.lm_head.state_dict(), out_dir / "lm_head.safetensors")
    (out_dir / "losses.json").write_text(json.dumps(result.losses))
    return out_dir


def add_lora(model: PreTrainedModel, settings: LoraSettings):
    """Wrap the model with peft LoRA; only adapters and the projector train (the encoder stays frozen)."""
    peft_model = get_peft_model(model, settings.peft_config())
    for name, param in peft_model.named_parameters():
        if "vision_tower" in name:
            param.requires_grad_(False)
    return peft_model


def run_phase(model, phase: Phase, items, processor, collator, profile: Profile, out_dir: Path):
    dataset = ConversationDataset(items, processor)
    args = single_process_args(out_dir, seed=profile.seed, learning_rate=phase.learning_rate, steps=phase.steps,
                               epochs=phase.epochs, batch_size=phase.batch_size,
                               bf16=profile.model.dtype == "bfloat16")
    return train(model, dataset, collator, args)


def mc_scores(model, processor, items, evaluation: Evaluation, seed: int) -> tuple[dict, list[dict]]:
    """Strict multiple-choice accuracy on held-out items (greedy decode, final channel only)."""
    settings = DecodeSettings(max_new_tokens=evaluation.max_new_tokens)
    rows = []
    for (sample, _), completion in zip(items, generate(model, processor, items, settings)):
        score = score_mc(completion.final, sample.meta["options"], sample.meta["answer"])
        rows.append({"id": sample.id, "answer": sample.meta["answer"], "output": completion.final,
                     "parsed": score.parsed, "status": score.status, "correct": score.correct})
    summary = accuracy_summary(
        [r["correct"] for r in rows],
        [r["status"] == "unparsed" for r in rows],
        [score_mc(r["output"], s.meta["options"], s.meta["answer"]).lenient_correct for r, (s, _) in zip(rows, items)],
        n_boot=evaluation.n_boot,
        seed=seed,
    )
    return summary, rows


def held_out_loss(model, processor, items, evaluation: Evaluation, seed: int) -> dict:
    """Mean per-item loss on held-out items' answers, with a bootstrap CI over items."""
    losses = per_item_loss(model, processor, items)
    values = list(losses.values())
    low, high = bootstrap_ci(values, n_boot=evaluation.n_boot, seed=seed)
    return {"n": len(values), "mean": sum(values) / len(values), "ci_low": low, "ci_high": high}


def run_encoder(encoder: str, config: AblationConfig, profile_name: str, data_root: Path, out_dir: Path,
                base_lm: Path | None = None) -> dict:
    """Both phases and the evaluation for one encoder; returns its results row."""
    from medkit.chat import load_tokenizer

    profile = load_profile(profile_name, encoder=encoder)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = initial_model(profile, tokenizer, base_lm)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    collator = PadCollator(tokenizer.pad_token_id)
    ev = config.evaluation
    mc_items = load_items(ev.mc_data, data_root, "eval", ev.limit_per_file)
    loss_items = load_items(ev.loss_data, data_root, "eval", ev.limit_per_file)
    start = time.perf_counter()

    apply_trainable(model, Trainable(vision=False, projector=True, llm=False))
    phase1 = run_phase(model, config.projector_pretraining,
                       load_items(config.projector_pretraining.data, data_root, "train"),
                       processor, collator, profile, out_dir / "projector")
    model = add_lora(model, config.lora)
    trainable, total = model.get_nb_trainable_parameters()
    phase2 = run_phase(model, config.lora_finetuning, load_items(config.lora_finetuning.data, data_root, "train"),
                       processor, collator, profile, out_dir / "lora")
    train_s = time.perf_counter() - start

    accuracy, predictions = mc_scores(model, processor, mc_items, ev, profile.seed)
    loss = held_out_loss(model, processor, loss_items, ev, profile.seed)
    write_jsonl(out_dir / "predictions.jsonl", predictions)
    model.save_pretrained(out_dir / "adapter")  # LoRA adapter + projector, safetensors
    spec = get_encoder(encoder)
    return {
        "encoder": encoder,
        "checkpoint": spec.hub_id,
        "tokens_per_tile": model.base_model.model.config.tokens_per_tile,
        "trainable_parameters_phase2": trainable,
        "total_parameters": total,
        "phase1_loss": {"first": phase1.losses[0], "last": phase1.losses[-1], "steps": len(phase1.losses)},
        "phase2_loss": {"first": phase2.losses[0], "last": phase2.losses[-1], "steps": len(phase2.losses)},
        "heldout_loss": loss,
        "mc_accuracy": accuracy,
        "train_runtime_s": round(train_s, 1),
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    tmp.replace(path)


def capped(config: AblationConfig, max_steps: int | None, eval_limit: int | None) -> AblationConfig:
    """The config with every phase limited to ``max_steps`` and evaluation to ``eval_limit`` items per file
    (quick checks of the pipeline; the results then measure that shortened run)."""
    def cap(phase: Phase | None) -> Phase | None:
        if phase is None or max_steps is None:
            return phase
        return replace(phase, steps=min(phase.steps or max_steps, max_steps))

    evaluation = config.evaluation if eval_limit is None else replace(config.evaluation, limit_per_file=eval_limit)
    return replace(config, base_lm=cap(config.base_lm), projector_pretraining=cap(config.projector_pretraining),
                   lora_finetuning=cap(config.lora_finetuning), evaluation=evaluation)


def run_ablation(
    profile_name: str = "tiny",
    out_dir: str | Path = "runs/ablation",
    *,
    data_root: str | Path | None = None,
    config: AblationConfig | str | Path | None = None,
    encoders: list[str] | None = None,
    max_steps: int | None = None,
    eval_limit: int | None = None,
) -> dict:
    """Run every encoder and write ``<out_dir>/results.json`` (atomically, once all encoders finished).

    On ``tiny`` the data root defaults to a synthetic corpus generated under ``out_dir/corpus``.
    """
    from tqdm.auto import tqdm

    from medkit.data.synthetic import generate_corpus

    profile = load_profile(profile_name)
    if not isinstance(config, AblationConfig):
        config = load_ablation_config(config or profile.name)
    config = capped(config, max_steps, eval_limit)
    names = encoders or config.encoders
    unknown = sorted(set(names) - set(config.encoders))
    if unknown:
        raise ConfigError(f"encoder(s) {unknown} are not in the ablation config ({config.encoders})")
    out_dir = Path(out_dir)
    if data_root is None:
        if not profile.is_tiny:
            raise ConfigError("the paper-profile ablation needs data_root (folder of the JSONL files in its config)")
        data_root = out_dir / "corpus"
        if not (data_root / "manifest.json").is_file():
            generate_corpus(data_root, seed=profile.data.corpus_seed)
    base_lm = None
    if config.base_lm is not None:
        if not profile.is_tiny:
            raise ConfigError("base_lm is the tiny profile's stand-in for GPT-oss; the paper profile uses the release")
        print("[ablation] training the shared toy language model on the corpus texts")
        base_lm = train_base_lm(config, profile_name, Path(data_root), out_dir / "base_lm")
    rows = []
    for name in tqdm(names, desc="encoders", unit="encoder"):
        tqdm.write(f"[ablation] {name}: projector pretraining, then projector + LoRA")
        rows.append(run_encoder(name, config, profile_name, Path(data_root), out_dir / name, base_lm))
        acc, loss = rows[-1]["mc_accuracy"], rows[-1]["heldout_loss"]
        tqdm.write(f"[ablation] {name}: accuracy {acc['accuracy']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}], "
              f"held-out loss {loss['mean']:.3f} [{loss['ci_low']:.3f}, {loss['ci_high']:.3f}]")
    results = {"profile": profile.name, "seed": profile.seed, "config": asdict(config), "encoders": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (RESULTS_NAME + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    tmp.replace(out_dir / RESULTS_NAME)
    return results
