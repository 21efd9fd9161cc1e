"""The LoRA vision-encoder ablation behind Figure 1 (paper section 3.1).

For each encoder the paper trains the LLaVA way: phase 1 trains only the projector, phase 2 trains the
projector plus LoRA adapters on the LLM. Every encoder gets the same data, seed and step counts; then
each is scored on the same held-out multiple-choice items (strict extraction, bootstrap CI) and by its
held-out loss. The results file is what Figure 1 is drawn from.

Where the phases train. Each phase of each encoder is one job (``medkit.training.ablation_run``) that
starts from the encoder's composed checkpoint (``OUT/<encoder>/init/model``: its released vision tower,
GPT-oss-20B and a fresh projector; on tiny the toy LLM trained once on the corpus texts). On the paper
profile the job runs on N ranks through the same DeepSpeed ZeRO-3 launcher as the curriculum stages
(torchrun or the deepspeed launcher) with gradient checkpointing: phase 2 trains ~1.48 B parameters, whose
weights, gradients, fp32 master copy and Adam moments (~27 GB at ZeRO's 18 bytes each) on top of the 42 GB
of bf16 GPT-oss leave one 80 GB GPU no room for a batch's activations. On the tiny profile the default is
the same jobs without DeepSpeed (starting ZeRO-3 ranks takes longer than a toy phase), each encoder's two
in a worker process of one thread, one worker per core (``LocalWorkers``; ``InProcess`` runs them here);
``launch=Launch(nproc=2)`` (``medkit ablation --nproc 2``) runs them on 2 CPU ranks under ZeRO-3.
Evaluation runs here once the ranks have finished, on this process's GPUs (or the CPU); a tiny worker
evaluates its own encoder on its one thread once both phases are done, so evaluation too runs side by side
and an encoder's numbers stay those of its worker alone.

LoRA through peft. The adapters cover the attention projections (``target_modules``, peft ``lora.Linear``)
and the 3-D MoE expert weights (``target_parameters``, peft ``lora.ParamWrapper``). ParamWrapper folds
the update into the expert weight (W + B A) instead of running its own layer on the input, so there is no
input of its own to drop: peft refuses any ``lora_dropout`` but 0 there, and a LoraConfig holds a single
dropout for all its targets (per-target settings exist only for rank and alpha). The run therefore has two
adapters, active and trained together: ``default`` on the attention modules with the config's dropout
(and the projector as a trained copy, peft's ``modules_to_save``) and ``experts`` on the expert weights
with dropout 0.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from medkit.config import ConfigError, load_yaml
from medkit.data.schema import Sample, read_jsonl
from medkit.eval.generation import DecodeSettings, generate
from medkit.eval.likelihood import per_item_loss
from medkit.eval.scoring import bootstrap_ci, chance_rate, score_mc, summarise_scores
from medkit.model.build import compose_pretrained
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import CONFIG_DIR, Profile, get_encoder, load_profile
from medkit.training.deepspeed_setup import language_width, name_cpu_accelerator, zero3_config
from medkit.training.launch import Launch
from medkit.training.standins import compose_tiny
from medkit.training.stages import Trainable, apply_trainable

RESULTS_NAME = "results.json"
CONFIG_NAME = "ablation_config.yaml"  # the run's resolved config, read by every rank
ATTENTION_ADAPTER = "default"  # peft writes its "default" adapter at the top of the adapter folder
EXPERT_ADAPTER = "experts"  # ... and every other one in a sub-folder of that name
PROJECTOR = "multi_modal_projector"
RANK_ENTRY = "medkit.training.ablation_run"  # what the ablation's ranks run instead
PHASES = ("projector_pretraining", "lora_finetuning")
PROJECTOR_FILE = "projector.safetensors"  # phase 1's projector, where phase 2 starts from
PHASE_FILE = "phase.json"  # losses, runtime and parameter counts of a finished phase
ADAPTER_DIR = "adapter"  # phase 2's LoRA adapters + projector (peft's save_pretrained layout)


@dataclass
class Phase:
    data: list[str]  # synthetic-corpus task names, or JSONL paths relative to the data root
    learning_rate: float
    batch_size: int  # samples per optimizer step, over every rank
    steps: int | None = None  # None: train for `epochs`
    epochs: float = 1.0
    per_device_batch_size: int | None = None  # None: batch_size / ranks (no gradient accumulation)


@dataclass
class LoraSettings:
    r: int
    alpha: int
    dropout: float  # on the target_modules adapter only; the expert-weight adapter has none (see module doc)
    target_modules: str
    target_parameters: list[str] = field(default_factory=list)

    def adapters(self) -> dict[str, LoraConfig]:
        """The peft adapters, by name: attention modules (with dropout, and the projector as a trained
        copy) and, when target_parameters are given, the expert weights (dropout 0, all peft accepts)."""
        adapters = {ATTENTION_ADAPTER: LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                                                  target_modules=self.target_modules, modules_to_save=[PROJECTOR])}
        if self.target_parameters:
            # target_modules=[]: no module here; None would let peft fill in its default modules for the model type
            adapters[EXPERT_ADAPTER] = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=0.0, target_modules=[],
                                                  target_parameters=self.target_parameters)
        return adapters


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
    projector_pretraining: Phase
    lora_finetuning: Phase
    lora: LoraSettings
    evaluation: Evaluation
    gradient_checkpointing: bool = True  # recompute activations in the backward pass (both phases)


@dataclass(frozen=True)
class PhaseBatch:
    """A phase's optimizer step (``global_batch`` samples) split over the ranks."""

    per_device: int
    accumulation: int
    global_batch: int
    world_size: int


@dataclass(frozen=True)
class InProcess:
    """Every phase in this process: one rank, no DeepSpeed."""

    world_size: int = 1

    def describe(self) -> str:
        return "in this process (1 rank, no DeepSpeed)"


@dataclass(frozen=True)
class LocalWorkers:
    """Each encoder's two phases in a worker process of its own on this machine, ``workers`` encoders at a
    time, no DeepSpeed. Every worker computes on one thread, so an encoder's numbers do not depend on how
    many run beside it, on the number of cores, or on whether it runs alone (``--encoders``)."""

    workers: int = 1
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"ablation workers must be >= 1, got {self.workers}")

    def describe(self) -> str:
        at_once = "1 encoder" if self.workers == 1 else f"{self.workers} encoders"
        return f"{at_once} at a time, each in a worker process of 1 thread (no DeepSpeed)"


WORKER_LOG = "worker.log"  # an encoder's worker output, in its folder
WORKER_ROW = "result.json"  # an encoder's results row, written by its worker once it has evaluated


@dataclass(frozen=True)
class PhaseJob:
    """One phase of one encoder, as the launcher hands it to the ranks (or runs it in-process)."""

    phase: str
    profile: str  # a profile name or YAML path
    encoder: str
    config: Path  # the run's resolved ablation config (steps capped, as results.json records it)
    data_root: Path
    out: Path  # the run folder; this encoder's files go to out/<encoder>/

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown ablation phase {self.phase!r}; phases: {list(PHASES)}")

    def arguments(self) -> list[str]:
        """The job as the command-line options of ``medkit.training.ablation_run``."""
        return ["--phase", self.phase, "--profile", self.profile, "--encoder", self.encoder,
                "--config", str(self.config), "--data-root", str(self.data_root), "--out", str(self.out)]


def encoder_dir(out: Path, encoder: str) -> Path:
    return Path(out) / encoder


def start_checkpoint(out: Path, encoder: str) -> Path:
    """The encoder's composed start: its vision tower, the language model and a fresh projector."""
    return encoder_dir(out, encoder) / "init" / "model"


def phase_dir(out: Path, encoder: str, phase: str) -> Path:
    return encoder_dir(out, encoder) / phase


def load_ablation_config(name_or_path: str | Path) -> AblationConfig:
    """``tiny`` / ``paper`` (the shipped configs) or a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / "ablation" / f"{name_or_path}.yaml"
    config = load_yaml(AblationConfig, path)
    for name in config.encoders:
        get_encoder(name)  # unknown encoder: error listing the registered ones
    return config


def phase_batch(phase: Phase, world_size: int, name: str) -> PhaseBatch:
    """The phase's batch on ``world_size`` ranks; a split that does not come out whole is an error."""
    if phase.batch_size % world_size:
        raise ConfigError(f"ablation {name}: batch_size {phase.batch_size} (samples per optimizer step) does not "
                          f"split over {world_size} ranks; make it a multiple of {world_size}")
    per_rank = phase.batch_size // world_size
    per_device = phase.per_device_batch_size or per_rank
    if per_rank % per_device:
        raise ConfigError(f"ablation {name}: per_device_batch_size {per_device} does not divide the {per_rank} "
                          f"samples each of the {world_size} ranks gets per optimizer step")
    return PhaseBatch(per_device, per_rank // per_device, phase.batch_size, world_size)


def phase_deepspeed_config(batch: PhaseBatch, bf16: bool, hidden_size: int | None) -> dict:
    """The curriculum stages' ZeRO-3 config with the phase's batch and precision filled in, as the Trainer
    would fill them from its arguments; gradient clipping stays "auto" (the Trainer sets it from
    max_grad_norm), the bucket sizes follow the language model's ``hidden_size``."""
    config = zero3_config(hidden_size)
    config.update(train_micro_batch_size_per_gpu=batch.per_device, gradient_accumulation_steps=batch.accumulation,
                  train_batch_size=batch.global_batch, bf16={"enabled": bf16})
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


def config_data(config: AblationConfig) -> list[str]:
    """Every data entry the run reads: training phases and evaluation."""
    phases = [config.projector_pretraining, config.lora_finetuning]
    return [e for p in phases for e in p.data] + config.evaluation.mc_data + config.evaluation.loss_data


def initial_model(profile: Profile, tokenizer, corpus_dir: Path | None = None) -> PreTrainedModel:
    """Encoder + fresh projector + LLM: the released ones, or on tiny the stand-ins trained on the synthetic
    corpus ``corpus_dir`` (``medkit.training.standins``), the same for every encoder's language model."""
    torch.manual_seed(profile.seed)
    if not profile.is_tiny:
        return compose_pretrained(profile, tokenizer)
    if corpus_dir is None:
        raise ValueError("the tiny profile's starting model needs the synthetic corpus its stand-ins train on")
    return compose_tiny(profile, tokenizer, corpus_dir)


def text_only(sample: Sample) -> Sample:
    """The sample with its images removed (image parts dropped from every message)."""
    messages = [
        {**m, "content": [p for p in m["content"] if p.get("type") != "image"]} if isinstance(m["content"], list) else m
        for m in sample.messages
    ]
    return replace(sample, messages=messages, images=[])


# transformers 5 deprecated PreTrainedModel.is_gradient_checkpointing (now is_activation_checkpointing) and
# warns on every read; peft 0.21.2's PeftModel.__init__ reads the old name (getattr(model,
# "is_gradient_checkpointing", True)) for any model it wraps, and no argument of get_peft_model or
# PeftModel.from_pretrained avoids that read. medkit never reads the alias itself.
PEFT_ALIAS_WARNING = r"`is_gradient_checkpointing` is deprecated"


@contextmanager
def peft_reads_deprecated_alias():
    """Wrap a model in a PeftModel inside this block: the one FutureWarning peft's own read of the deprecated
    alias raises from transformers' modeling_utils is ignored (every other warning is shown as usual)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_ALIAS_WARNING, category=FutureWarning,
                                module=r"transformers\.modeling_utils")
        yield


def add_lora(model: PreTrainedModel, settings: LoraSettings, *, low_cpu_mem_usage: bool = False) -> PeftModel:
    """Wrap the model with every adapter of ``settings``, all active: only they and the projector's
    trained copy are trainable. ``low_cpu_mem_usage``: create the adapters on the meta device (counts)."""
    (first, first_config), *others = settings.adapters().items()
    with peft_reads_deprecated_alias():
        peft_model = get_peft_model(model, first_config, adapter_name=first, low_cpu_mem_usage=low_cpu_mem_usage)
    for name, config in others:
        peft_model.add_adapter(name, config, low_cpu_mem_usage=low_cpu_mem_usage)
    # PeftModel.set_adapter takes one name; its tuner activates several, and trains every active one
    peft_model.base_model.set_adapter(list(settings.adapters()))
    return peft_model


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; a ZeRO-3 partitioned parameter counts its whole size."""
    trainable = total = 0
    for param in model.parameters():
        n = getattr(param, "ds_numel", param.numel())
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


def ablation_trainable_parameters(config: AblationConfig, profile: Profile) -> dict[str, int]:
    """Parameters each phase trains for the profile's encoder (``load_profile(name, encoder=...)``),
    counted on a meta-device model with peft's own adapters - shapes only, no weights or downloads; on the
    paper profile the shapes are gpt-oss-20b's (the profile's text_config). ``projector_pretraining``: the
    projector; ``lora_finetuning``: the LoRA adapters plus the projector's trained copy."""
    from medkit.model.summary import meta_model

    model = meta_model(profile)
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    apply_trainable(model, Trainable(vision=False, projector=False, llm=False))
    lora, _ = parameter_counts(add_lora(model, config.lora, low_cpu_mem_usage=True))
    return {"projector_pretraining": projector, "lora_finetuning": lora}


Where = Launch | InProcess | LocalWorkers


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_launch(profile: Profile) -> Where:
    """Tiny: one single-threaded worker per core (at most 8), each training one encoder at a time (a toy
    phase uses a second thread poorly: on 2 cores the four encoders' phases and evaluation took 141 s in 2
    workers against 161 s one after the other on 2 threads, benchmarks/README.md). Otherwise ZeRO-3 ranks on every visible GPU of this machine."""
    from medkit.eval.placement import visible_gpus

    return LocalWorkers(min(usable_cores(), 8)) if profile.is_tiny else Launch(nproc=max(1, visible_gpus()))


def world_size(where: Where) -> int:
    return where.nproc * where.nnodes if isinstance(where, Launch) else where.world_size


def describe(where: Where) -> str:
    if isinstance(where, (InProcess, LocalWorkers)):
        return where.describe()
    nodes = f" x {where.nnodes} nodes (hostfile {where.hostfile})" if where.nnodes > 1 else ""
    return f"{where.launcher}: {where.nproc} rank(s){nodes} = world size {world_size(where)}, DeepSpeed ZeRO-3"


def check_launch(where: Where) -> None:
    """Refuse a launch this command cannot drive from one node."""
    if isinstance(where, Launch) and where.nnodes > 1 and where.launcher == "torchrun":
        raise ConfigError("the ablation on several nodes runs through --launcher deepspeed with --hostfile: that "
                          "launcher starts every node from this one command, which composes each encoder's start "
                          "before the ranks and evaluates after them (torchrun would need it on every node)")


def ranks_command(launch: Launch, job: PhaseJob) -> list[str]:
    """The launcher command for one phase: the stages' launcher and flags, with the ablation's entry point."""
    return launch.prefix(module=RANK_ENTRY) + job.arguments()


def run_phase_job(where: Launch | InProcess, job: PhaseJob, steps: int | None) -> None:
    """Train one phase where it runs (its outputs and ``phase.json`` land in the encoder's folder); a
    failure on the ranks raises with the tail of their log."""
    from medkit.training.ablation_run import train_phase
    from medkit.training.launch import run_with_progress

    if isinstance(where, InProcess):
        train_phase(job, zero3=False)
        return
    code, tail = run_with_progress(ranks_command(where, job), desc=f"{job.encoder} {job.phase}", total=steps)
    if code:
        raise RuntimeError(f"ablation {job.encoder} {job.phase} failed on the ranks (exit {code}):\n" + "".join(tail))


def worker_command(profile_name: str, encoder: str, config_path: Path, data_root: Path, out_dir: Path,
                   corpus_dir: Path | None) -> list[str]:
    """The command of one encoder's worker: compose its start, train both phases, evaluate (one thread)."""
    cmd = [sys.executable, "-m", RANK_ENTRY, "--worker", "--profile", str(profile_name), "--encoder", encoder,
           "--config", str(config_path), "--data-root", str(data_root), "--out", str(out_dir)]
    return cmd + (["--corpus-dir", str(corpus_dir)] if corpus_dir is not None else [])


def worker_environment() -> dict[str, str]:
    from medkit.training.deepspeed_setup import cpu_environment

    return {**cpu_environment(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_workers(where: LocalWorkers, names: list[str], profile_name: str, config_path: Path, data_root: Path,
                out_dir: Path, corpus_dir: Path | None) -> None:
    """Every encoder's phases in worker processes, ``where.workers`` at a time; a failed worker stops the
    others and raises with the tail of its log (``OUT/<encoder>/worker.log``)."""
    import subprocess
    import time

    from medkit.progress import progress_bar, progress_note
    from medkit.training.launch import stop_launcher

    pending, running = list(names), {}
    with progress_bar(total=len(names), desc="encoders", unit="encoder") as bar:
        try:
            while pending or running:
                while pending and len(running) < where.workers:
                    name = pending.pop(0)
                    progress_note(f"[ablation] {name}: projector pretraining, then projector + LoRA, then its "
                                  f"evaluation ({describe(where)})")
                    encoder_dir(out_dir, name).mkdir(parents=True, exist_ok=True)
                    (encoder_dir(out_dir, name) / WORKER_ROW).unlink(missing_ok=True)  # no earlier run's row
                    log = (encoder_dir(out_dir, name) / WORKER_LOG).open("w", encoding="utf-8")
                    cmd = worker_command(profile_name, name, config_path, data_root, out_dir, corpus_dir)
                    running[name] = (subprocess.Popen(cmd, env=worker_environment(), stdout=log,
                                                      stderr=subprocess.STDOUT), log)
                for name, (proc, log) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    log.close()
                    del running[name]
                    if proc.returncode:
                        tail = (encoder_dir(out_dir, name) / WORKER_LOG).read_text(encoding="utf-8").splitlines()[-40:]
                        raise RuntimeError(f"ablation {name} failed in its worker (exit {proc.returncode}); the end "
                                           f"of {encoder_dir(out_dir, name) / WORKER_LOG}:\n" + "\n".join(tail))
                    bar.update(1)
                time.sleep(0.2)
        finally:  # an error or a notebook interrupt must not leave workers training
            for proc, log in running.values():
                stop_launcher(proc, grace_s=10.0)
                log.close()


def train_encoder_in_worker(profile_name: str, encoder: str, config_path: Path, data_root: Path, out_dir: Path,
                            corpus_dir: Path | None) -> None:
    """What a worker runs, on one thread: the encoder's start, both phases, then its evaluation, whose row
    it writes to ``OUT/<encoder>/result.json``."""
    from medkit.training.ablation_run import train_phase

    torch.set_num_threads(1)
    compose_start(profile_name, encoder, corpus_dir, out_dir)
    for phase in PHASES:
        train_phase(PhaseJob(phase, str(profile_name), encoder, config_path, data_root, out_dir), zero3=False)
    row = evaluate_encoder(encoder, load_ablation_config(config_path), profile_name, data_root, out_dir)
    write_json(encoder_dir(out_dir, encoder) / WORKER_ROW, row)


def worker_row(out_dir: Path, encoder: str) -> dict:
    """The results row a finished worker wrote for its encoder."""
    path = encoder_dir(out_dir, encoder) / WORKER_ROW
    if not path.is_file():
        raise RuntimeError(f"ablation {encoder}: its worker exited without writing {path}")
    return json.loads(path.read_text())


def compose_start(profile_name: str, encoder: str, corpus_dir: Path | None, out_dir: Path) -> Path:
    """``OUT/<encoder>/init/model``: the encoder's starting checkpoint, saved so each phase's ranks load
    it (partitioned as they load, under ZeRO-3). One built from released weights alone is reused when
    present; the tiny one is recomposed from the stand-ins of this run's corpus (cached, so only the save
    is repeated). Written to a temporary folder first, so a killed compose leaves nothing that looks complete."""
    from medkit.chat import load_tokenizer

    target = start_checkpoint(out_dir, encoder)
    profile = load_profile(profile_name, encoder=encoder)
    if not profile.is_tiny and (target / "config.json").is_file():
        return target
    partial = target.with_name("model.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    initial_model(profile, tokenizer, corpus_dir).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def trained_model(profile: Profile, out_dir: Path, settings: LoraSettings) -> PeftModel:
    """The encoder's start with phase 2's adapters and projector, every adapter active, on this process's
    GPU(s) (or the CPU)."""
    from medkit.eval.placement import model_placement
    from medkit.model.build import load_model

    encoder = profile.model.encoder
    base = load_model(start_checkpoint(out_dir, encoder), profile.model.dtype, **model_placement())
    adapters = encoder_dir(out_dir, encoder) / ADAPTER_DIR
    names = list(settings.adapters())
    with peft_reads_deprecated_alias():
        model = PeftModel.from_pretrained(base, adapters, adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters / name, adapter_name=name)
    model.base_model.set_adapter(names)
    return model


def mc_scores(model, processor, items, evaluation: Evaluation, seed: int) -> tuple[dict, list[dict]]:
    """Strict multiple-choice accuracy on held-out items (greedy decode, final channel only)."""
    settings = DecodeSettings(max_new_tokens=evaluation.max_new_tokens)
    rows, scores = [], []
    for (sample, _), completion in zip(items, generate(model, processor, items, settings)):
        score = score_mc(completion.final, sample.meta["options"], sample.meta["answer"], item_id=sample.id)
        scores.append(score)
        rows.append({"id": sample.id, "answer": sample.meta["answer"], "output": completion.final,
                     "parsed": score.parsed, "status": score.status, "correct": score.correct})
    summary = summarise_scores(scores, n_boot=evaluation.n_boot, seed=seed)
    # what guessing scores on these very items: Figure 1 draws it beside the bars
    summary["chance_rate"] = chance_rate([sample.meta["options"] for sample, _ in items])
    return summary, rows


def held_out_loss(model, processor, items, evaluation: Evaluation, seed: int) -> dict:
    """Mean per-item loss on held-out items' answers, with a bootstrap CI over items."""
    losses = per_item_loss(model, processor, items)
    values = list(losses.values())
    low, high = bootstrap_ci(values, n_boot=evaluation.n_boot, seed=seed)
    return {"n": len(values), "mean": sum(values) / len(values), "ci_low": low, "ci_high": high}


def loss_summary(losses: list[float]) -> dict:
    return {"first": losses[0], "last": losses[-1], "steps": len(losses)}


def evaluate_encoder(encoder: str, config: AblationConfig, profile_name: str, data_root: Path, out_dir: Path) -> dict:
    """Score the encoder's trained model on the held-out items; returns its results row."""
    from medkit.chat import load_tokenizer

    profile = load_profile(profile_name, encoder=encoder)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = trained_model(profile, out_dir, config.lora)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    ev = config.evaluation
    accuracy, predictions = mc_scores(model, processor, load_items(ev.mc_data, data_root, "eval", ev.limit_per_file),
                                      ev, profile.seed)
    loss = held_out_loss(model, processor, load_items(ev.loss_data, data_root, "eval", ev.limit_per_file), ev,
                         profile.seed)
    write_jsonl(encoder_dir(out_dir, encoder) / "predictions.jsonl", predictions)
    phase1, phase2 = (json.loads((phase_dir(out_dir, encoder, p) / PHASE_FILE).read_text()) for p in PHASES)
    return {
        "encoder": encoder,
        "checkpoint": get_encoder(encoder).hub_id,
        "tokens_per_tile": model.config.tokens_per_tile,
        "trainable_parameters_phase2": phase2["trainable_parameters"],
        "total_parameters": phase2["total_parameters"],
        "phase1_loss": loss_summary(phase1["losses"]),
        "phase2_loss": loss_summary(phase2["losses"]),
        "heldout_loss": loss,
        "mc_accuracy": accuracy,
        "train_runtime_s": round(phase1["train_runtime_s"] + phase2["train_runtime_s"], 1),
    }


def write_json(path: Path, data: dict) -> None:
    """``data`` as JSON, written beside ``path`` and renamed into place: a killed run leaves no half file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


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
    return replace(config, projector_pretraining=cap(config.projector_pretraining),
                   lora_finetuning=cap(config.lora_finetuning), evaluation=evaluation)


def resolved_config(config: AblationConfig | str | Path | None, profile: Profile, encoders: list[str] | None,
                    max_steps: int | None, eval_limit: int | None) -> tuple[AblationConfig, list[str]]:
    """The config the run uses (the profile's shipped one by default, capped) and the encoders it trains."""
    if not isinstance(config, AblationConfig):
        config = load_ablation_config(config or profile.name)
    names = encoders or config.encoders
    unknown = sorted(set(names) - set(config.encoders))
    if unknown:
        raise ConfigError(f"encoder(s) {unknown} are not in the ablation config ({config.encoders})")
    return capped(config, max_steps, eval_limit), names


def phase_steps(phase: Phase, batch: PhaseBatch, data_root: Path | None) -> str:
    """The phase's length: its fixed steps, or its epochs over the data counted under ``data_root``."""
    if phase.steps:
        return f"{phase.steps} steps"
    if data_root is None:
        return f"{phase.epochs:g} epoch(s) (steps: samples / {batch.global_batch}; pass --data-root to count them)"
    try:
        samples = sum(sum(1 for _ in read_jsonl(path)) if not is_task else
                      sum(1 for s in read_jsonl(path) if s.meta.get("split") == "train")
                      for path, is_task in data_files(phase.data, data_root))
    except FileNotFoundError as e:
        return f"{phase.epochs:g} epoch(s) (steps not counted: {e})"
    steps = -(-int(samples * phase.epochs) // batch.global_batch)
    return f"{phase.epochs:g} epoch(s) of {samples:,} samples = ~{steps:,} steps"


def deepspeed_lines(config: AblationConfig, profile: Profile, where: Where) -> list[str]:
    """The ZeRO-3 config of each phase, once when both phases get the same one."""
    if isinstance(where, InProcess):
        return ["deepspeed    none (in this process)"]
    if isinstance(where, LocalWorkers):
        return ["deepspeed    none (worker processes)"]
    bf16 = profile.model.dtype == "bfloat16"  # on GPU ranks; CPU ranks train in float32
    configs = {name: phase_deepspeed_config(phase_batch(getattr(config, name), world_size(where), name), bf16,
                                         language_width(profile))
               for name in PHASES}
    if len({json.dumps(c, sort_keys=True) for c in configs.values()}) == 1:
        return [f"deepspeed    {json.dumps(next(iter(configs.values())))} (both phases)"]
    return [f"deepspeed    {name}: {json.dumps(c)}" for name, c in configs.items()]


def ablation_dry_run(profile_name: str = "tiny", *, config: AblationConfig | str | Path | None = None,
                     encoders: list[str] | None = None, launch: Where | None = None,
                     data_root: str | Path | None = None, max_steps: int | None = None,
                     out_dir: str | Path = "runs/ablation") -> str:
    """What ``run_ablation`` would run, resolved: encoders, where the phases train, each phase's steps and
    batch split, the DeepSpeed config, the LoRA adapters and the parameters each phase trains per encoder
    (from the configs, on a meta-device model). Starts no rank, composes and loads no model, writes
    nothing; missing data is reported, not raised."""
    profile = load_profile(profile_name)
    config, names = resolved_config(config, profile, encoders, max_steps, None)
    where = launch or default_launch(profile)
    check_launch(where)
    out_dir = Path(out_dir)
    root = Path(data_root) if data_root else (out_dir / "corpus" if profile.is_tiny else None)
    lines = [f"dry run: LoRA encoder ablation (Figure 1), profile {profile.name} (nothing started, no model "
             "composed or loaded)",
             f"encoders     {', '.join(names)}",
             f"runs on      {describe(where)}; gradient checkpointing {'on' if config.gradient_checkpointing else 'off'}",
             f"data         {root}" + ("" if data_root or root is None else " (the synthetic corpus, written if missing)")
             if root else "data         NOT READY: the paper profile needs --data-root (folder of the config's files)"]
    for number, name in enumerate(PHASES, start=1):
        phase = getattr(config, name)
        batch = phase_batch(phase, world_size(where), name)
        lines += [f"phase {number}      {name}: data {', '.join(phase.data)}; lr {phase.learning_rate:g}; "
                  f"{phase_steps(phase, batch, root if data_root else None)}",
                  f"             batch {batch.global_batch} samples per optimizer step = {batch.per_device} per device "
                  f"x {batch.world_size} rank(s) x accumulation {batch.accumulation}"]
    lines += deepspeed_lines(config, profile, where)
    lora = config.lora
    lines.append(f"lora         r {lora.r}, alpha {lora.alpha}; adapter {ATTENTION_ADAPTER!r}: {lora.target_modules} "
                 f"(dropout {lora.dropout:g}) + the projector" + (
                     f"; adapter {EXPERT_ADAPTER!r}: {', '.join(lora.target_parameters)} (dropout 0: peft's "
                     "ParamWrapper takes no other)" if lora.target_parameters else ""))
    lines.append("trainable    parameters per phase (meta-device model, peft's adapters)")
    for name in names:
        counts = ablation_trainable_parameters(config, load_profile(profile_name, encoder=name))
        lines.append(f"  {name:<11} " + "   ".join(f"{phase} {n:>14,}" for phase, n in counts.items()))
    ev = config.evaluation
    where_scored = ("in each encoder's worker, once its phases are done" if isinstance(where, LocalWorkers)
                    else "in this process on its GPU(s)")
    lines.append(f"evaluation   after training, {where_scored}: MC {', '.join(ev.mc_data)}, loss "
                 f"{', '.join(ev.loss_data)}, {ev.limit_per_file or 'all'} item(s) per file, {ev.max_new_tokens} new tokens")
    if isinstance(where, Launch):
        job = PhaseJob(PHASES[0], str(profile_name), names[0], out_dir / CONFIG_NAME, root or Path("DATA_ROOT"), out_dir)
        lines.append(f"command      {' '.join(ranks_command(where, job))}  (one launch per encoder and phase: "
                     f"{len(PHASES) * len(names)})")
    if isinstance(where, LocalWorkers):
        lines.append(f"command      {' '.join(worker_command(profile_name, names[0], out_dir / CONFIG_NAME, root or Path('DATA_ROOT'), out_dir, root if profile.is_tiny else None))}"
                     f"  (one worker per encoder: {len(names)}, log in OUT/<encoder>/{WORKER_LOG})")
    return "\n".join(lines)


def run_data_root(profile: Profile, data_root: str | Path | None, out_dir: Path,
                  corpus_dir: str | Path | None = None, corpus_sizes: dict[str, int] | None = None) -> Path:
    """The folder the run reads: ``data_root``; on tiny by default the synthetic corpus ``corpus_dir``
    (default ``out_dir/corpus``), generated if missing."""
    from medkit.data.synthetic import ensure_corpus

    if data_root is not None:
        return Path(data_root)
    if not profile.is_tiny:
        raise ConfigError("the paper-profile ablation needs data_root (folder of the JSONL files in its config)")
    return ensure_corpus(Path(corpus_dir) if corpus_dir is not None else out_dir / "corpus",
                         seed=profile.data.corpus_seed, sizes=corpus_sizes)


def ensure_standins(profile_name: str, encoders: list[str], corpus_dir: Path) -> None:
    """The shared language-model stand-in and every encoder's, trained here (cached beside the corpus) on
    this process's threads, as every other path that composes a tiny model trains them."""
    from medkit.training.standins import ensure_standin_encoder, ensure_standin_lm, resized

    ensure_standin_lm(load_profile(profile_name), corpus_dir)
    for name in encoders:
        ensure_standin_encoder(load_profile(profile_name, encoder=name), corpus_dir)
    resized.cache_clear()  # the decoded training images, shared by the towers of one size


def run_ablation(
    profile_name: str = "tiny",
    out_dir: str | Path = "runs/ablation",
    *,
    data_root: str | Path | None = None,
    config: AblationConfig | str | Path | None = None,
    encoders: list[str] | None = None,
    max_steps: int | None = None,
    eval_limit: int | None = None,
    launch: Where | None = None,
    corpus_dir: str | Path | None = None,
    corpus_sizes: dict[str, int] | None = None,
) -> dict:
    """Train every encoder's two phases where ``launch`` says (default: ``default_launch``), evaluate
    each here and write ``<out_dir>/results.json`` (atomically, once all encoders finished).

    On ``tiny`` without ``data_root`` the run reads the synthetic corpus ``corpus_dir`` (the notebooks
    pass their run's corpus; default ``out_dir/corpus``), generated with ``corpus_sizes`` if missing.
    """
    from medkit.progress import progress_bar, progress_note

    # before anything imports deepspeed (the Trainer and save_pretrained do, through accelerate, whenever it
    # is installed): on CPU, DeepSpeed is told it runs there instead of warning that it guessed so
    name_cpu_accelerator()
    profile = load_profile(profile_name)
    config, names = resolved_config(config, profile, encoders, max_steps, eval_limit)
    where = launch or default_launch(profile)
    check_launch(where)
    for name in PHASES:
        phase_batch(getattr(config, name), world_size(where), name)  # a batch the ranks cannot split fails now
    out_dir = Path(out_dir)
    data_root = run_data_root(profile, data_root, out_dir, corpus_dir, corpus_sizes)
    data_files(config_data(config), data_root)  # every file present before anything trains
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / CONFIG_NAME
    config_path.write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    corpus_dir = data_root if profile.is_tiny else None  # the stand-ins' corpus (trained once, cached beside it)
    if isinstance(where, LocalWorkers):
        if corpus_dir is not None:  # here, before any worker: each would otherwise train the shared LM stand-in
            ensure_standins(profile_name, names, corpus_dir)
        run_workers(where, names, profile_name, config_path, data_root, out_dir, corpus_dir)
    else:
        for name in progress_bar(names, desc="encoders", unit="encoder"):
            progress_note(f"[ablation] {name}: projector pretraining, then projector + LoRA ({describe(where)})")
            compose_start(profile_name, name, corpus_dir, out_dir)
            for phase in PHASES:
                job = PhaseJob(phase, str(profile_name), name, config_path, data_root, out_dir)
                run_phase_job(where, job, getattr(config, phase).steps)
    rows = []
    for name in names:  # after every rank has finished: evaluation has this machine's GPUs to itself
        if isinstance(where, LocalWorkers):
            rows.append(worker_row(out_dir, name))  # evaluated in its worker
        else:
            rows.append(evaluate_encoder(name, config, profile_name, data_root, out_dir))
        acc, loss = rows[-1]["mc_accuracy"], rows[-1]["heldout_loss"]
        print(f"[ablation] {name}: accuracy {acc['accuracy']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}], "
              f"held-out loss {loss['mean']:.3f} [{loss['ci_low']:.3f}, {loss['ci_high']:.3f}]")
    results = {"profile": profile.name, "seed": profile.seed, "config": asdict(config), "encoders": rows}
    write_json(out_dir / RESULTS_NAME, results)
    return results
