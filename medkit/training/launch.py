"""Launching one curriculum stage on N ranks (the `medkit train` command and the training notebooks).

Every rank runs :mod:`medkit.training.stage_run`, started by torch's elastic launcher (``torchrun``, the
default; ``nnodes``/``node_rank``/``master_addr`` for several nodes, run once per node) or by DeepSpeed's
own launcher (``deepspeed``: one call starts every node of a ``hostfile`` over pdsh). Before any rank
starts, the batch sizes are checked against the world size (``nproc x nnodes``), the stage's data is
checked, for the first stage of a released-weights profile the initial checkpoint (released encoder +
GPT-oss + fresh projector) is composed once into ``OUT/init/model``, and every record's length is
measured (on every core, cached in ``OUT/<stage>/lengths/``) so over-long samples are dropped or refused
here rather than mid-stage. ``stage_dry_run`` reports all of it without starting anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medkit.data.mixture import (LENGTHS_DIR, DataReport, MixtureError, absence, check_stage_sources, excluded_ids,
                                 left_out_message, stage_dataset, stage_record_counts)
from medkit.data.schema import SchemaError
from medkit.profiles import Profile, load_profile
from medkit.training.deepspeed_setup import cpu_environment, language_width, zero3_config
from medkit.training.stages import (BatchPlan, CheckpointPolicy, StageConfig, check_row_length, checkpoint_policy,
                                    load_stage, stage_for_profile, with_batch_sizes)

INIT_DIR = "init"  # OUT/init/model: the composed starting checkpoint of a released-weights profile
TRAINER_LOSS_LINE = re.compile(r"^\{'loss': '?([0-9.eE+-]+|nan)")  # transformers' per-step log line


@dataclass(frozen=True)
class Launch:
    """Where the ranks run: ``nproc`` per node, on ``nnodes`` nodes."""

    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0  # torchrun: this node's index (the deepspeed launcher reads the hostfile instead)
    master_addr: str | None = None
    master_port: int | None = None
    hostfile: str | None = None  # deepspeed launcher only

    def __post_init__(self) -> None:
        if self.launcher not in ("torchrun", "deepspeed"):
            raise ValueError(f"launcher must be 'torchrun' or 'deepspeed', got {self.launcher!r}")
        if self.nproc < 1 or self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"bad launch sizes: nproc {self.nproc}, nnodes {self.nnodes}, node_rank {self.node_rank}")
        if self.hostfile and self.launcher != "deepspeed":
            raise ValueError("--hostfile is read by the deepspeed launcher; use --launcher deepspeed")
        if self.nnodes > 1 and self.launcher == "deepspeed" and not self.hostfile:
            raise ValueError("several nodes under the deepspeed launcher need --hostfile (the nodes and their slots)")
        if self.nnodes > 1 and self.launcher == "torchrun" and not self.master_addr:
            raise ValueError("several nodes under torchrun need --master-addr (the address of node 0)")

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def describe(self) -> str:
        where = f" (this is node {self.node_rank}, master {self.master_addr})" if self.nnodes > 1 and \
            self.launcher == "torchrun" else (f" (hostfile {self.hostfile})" if self.hostfile else "")
        return (f"{self.launcher}: {self.nproc} rank(s) per node x {self.nnodes} node(s) = world size "
                f"{self.world_size}{where}")

    def prefix(self, module: str = "medkit.training.stage_run") -> list[str]:
        """The launcher command that starts ``module`` on every rank."""
        if self.launcher == "deepspeed":
            cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(self.nproc),
                   "--num_nodes", str(self.nnodes), "--no_local_rank"]
            cmd += ["--hostfile", self.hostfile] if self.hostfile else []
            cmd += ["--master_addr", self.master_addr] if self.master_addr else []
            cmd += ["--master_port", str(self.master_port)] if self.master_port else []
            return cmd + ["--module", module]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.nproc)]
        if self.nnodes > 1:
            cmd += ["--nnodes", str(self.nnodes), "--node_rank", str(self.node_rank), "--master_addr", self.master_addr]
        cmd += ["--master_port", str(self.master_port)] if self.master_port else []
        return cmd + ["-m", module]


@dataclass(frozen=True)
class StageOverrides:
    """What one ``medkit train`` call changes in a stage's config (None: the profile's stand-in, else the
    stage YAML's): batch sizes (samples, see ``BatchPlan``) and the checkpoint policy."""

    per_device_batch_size: int | None = None
    global_batch_size: int | None = None
    save_steps: int | None = None
    save_minutes: float | None = None
    save_model_only: bool | None = None

    def stage(self, stage: StageConfig, profile: Profile) -> StageConfig:
        return with_batch_sizes(stage_for_profile(stage, profile), self.per_device_batch_size,
                                self.global_batch_size)

    def policy(self, stage: StageConfig) -> CheckpointPolicy:
        return checkpoint_policy(stage, save_steps=self.save_steps, save_minutes=self.save_minutes,
                                 model_only=self.save_model_only)

    def flags(self) -> list[str]:
        """The same overrides as ``medkit.training.stage_run`` options."""
        values = [("--per-device-batch-size", self.per_device_batch_size),
                  ("--global-batch-size", self.global_batch_size), ("--save-steps", self.save_steps),
                  ("--save-minutes", self.save_minutes)]
        flags = [item for flag, value in values if value is not None for item in (flag, str(value))]
        return flags + (["--save-model-only"] if self.save_model_only else [])


def stage_plan(stage_name: str, profile: str | Profile, launch: Launch, vision_schedule: str = "table2",
               overrides: StageOverrides = StageOverrides()) -> tuple[StageConfig, BatchPlan, CheckpointPolicy]:
    """The stage as its ranks will run it (profile stand-ins and overrides applied), its batches on the
    launch's world size (a combination that does not divide is an error naming the ones that do) and its
    checkpoint policy."""
    profile = load_profile(profile) if isinstance(profile, (str, Path)) else profile
    stage = overrides.stage(load_stage(stage_name, vision_schedule), profile)
    return stage, stage.batch_plan(launch.world_size), overrides.policy(stage)


def starting_checkpoint(stage: StageConfig, profile: Profile, out: str | Path,
                        data_root: str | Path | None = None) -> Path | None:
    """The model folder the stage's ranks start from: the previous stage's ``model/``, or for the first
    stage the composed ``OUT/init/model`` (the released encoder and GPT-oss, or on tiny their stand-ins
    trained on the synthetic corpus). None for tiny on a Table-1 ``data_root``: no corpus to train
    stand-ins on, so the model is built from the profile's configs (random weights)."""
    if stage.init_from:
        return Path(out) / stage.init_from / "model"
    if profile.is_tiny and data_root is not None:
        return None
    return Path(out) / INIT_DIR / "model"


def stage_command(stage_name: str, *, profile: str, out: str | Path, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False, launch: Launch = Launch(), vision_schedule: str = "table2",
                  max_steps: int | None = None, overrides: StageOverrides = StageOverrides()) -> list[str]:
    """The launcher command for ``stage_name``. A later stage starts from ``out/<previous stage>/model``;
    the first stage of a released-weights profile from ``out/init/model`` (see ``initial_checkpoint``).
    Unknown stages, batch sizes the world size cannot make and rows longer than the starting model's
    positions fail here, before anything runs."""
    stage, _, _ = stage_plan(stage_name, profile, launch, vision_schedule, overrides)
    check_row_length(stage, starting_text_config(stage, load_profile(profile), out, data_root)["max_position_embeddings"])
    out = Path(out)
    cmd = launch.prefix() + ["--stage", stage.name, "--profile", str(profile), "--vision-schedule", vision_schedule,
                             "--out", str(out / stage.name)]
    cmd += ["--corpus", str(corpus)] if data_root is None else ["--data-root", str(data_root)]
    cmd += ["--leakage-report", str(leakage_report)] if leakage_report else []
    cmd += ["--skip-missing"] if skip_missing else []
    start = starting_checkpoint(stage, load_profile(profile), out, data_root)
    cmd += ["--previous", str(start)] if start else []
    cmd += ["--max-steps", str(max_steps)] if max_steps else []
    return cmd + overrides.flags()


def initial_checkpoint(profile: Profile, out: str | Path) -> Path:
    """``out/init/model``: the released encoder and GPT-oss with a fresh projector, composed and saved
    once (safetensors) so every rank of the first stage loads it under ZeRO-3. Reused when present;
    written to a temporary folder first, so a killed compose leaves nothing that looks complete."""
    from medkit.chat.tokenizer import profile_tokenizer
    from medkit.model.build import compose_pretrained

    target = Path(out) / INIT_DIR / "model"
    if (target / "config.json").is_file():
        return target
    partial = target.with_name("model.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = profile_tokenizer(profile)
    compose_pretrained(profile, tokenizer).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def compose_tiny_init(profile: Profile, corpus: str | Path, out: str | Path) -> Path:
    """``out/init/model`` on tiny: the stand-ins of ``corpus`` (trained there once, cached) with a fresh
    projector, saved for the ranks. Recomposed on every first stage (a different corpus has other
    stand-ins; loading cached ones and saving takes a second)."""
    from medkit.chat.tokenizer import profile_tokenizer
    from medkit.training.standins import compose_tiny

    target = Path(out) / INIT_DIR / "model"
    partial = target.with_name("model.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = profile_tokenizer(profile)
    compose_tiny(profile, tokenizer, corpus).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def prepare_stage(stage_name: str, *, profile: str, out: str | Path, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False, vision_schedule: str = "table2", compose: bool = True) -> DataReport:
    """What must hold before ranks start: the stage's data is there, the initial checkpoint exists
    (composed here unless ``compose`` is off: on nodes other than node 0 of a multi-node run), and the
    records' lengths are measured, over-long ones dropped (or refused: policy ``error``). Every record is
    validated on the way (schema, images, length; see ``medkit.data.mixture``), so a bad one stops here,
    named by file and line, not in a rank's traceback. Returns what the stage will read."""
    from medkit.training.deepspeed_setup import name_cpu_accelerator

    name_cpu_accelerator()  # composing saves a model, which imports deepspeed: no auto-detection warning on CPU
    config = load_profile(profile)
    stage = stage_for_profile(load_stage(stage_name, vision_schedule), config)  # the rows the ranks will pack
    check_stage_sources(stage, corpus=corpus, data_root=data_root, leakage_report=leakage_report,
                        skip_missing=skip_missing)
    if stage.init_from is None and config.is_tiny and data_root is None:
        compose_tiny_init(config, corpus, out)
    elif stage.init_from is None and not config.is_tiny:
        if compose:
            compose_in_subprocess(profile, out)
        elif not (Path(out) / INIT_DIR / "model" / "config.json").is_file():
            raise FileNotFoundError(f"{Path(out) / INIT_DIR / 'model'} not found: run `medkit compose --profile "
                                    f"{profile} --out {out}` once (or start node 0 first) before the other nodes")
    start = starting_checkpoint(stage, config, out, data_root)
    if stage.init_from and not (start / "config.json").is_file():
        raise FileNotFoundError(f"stage {stage.name} starts from {start}, which is not there: run stage "
                                f"{stage.init_from} first (`medkit train --stage {stage.init_from} --out {out}`)")
    processor, text_config = stage_processor(stage, config, out, data_root)
    check_row_length(stage, text_config.max_position_embeddings)  # the checkpoint's, once it is composed
    _, report = stage_dataset(stage, processor, corpus=corpus, data_root=data_root, leakage_report=leakage_report,
                              skip_missing=skip_missing, max_position_embeddings=text_config.max_position_embeddings,
                              lengths_dir=Path(out) / stage.name / LENGTHS_DIR, workers=len(os.sched_getaffinity(0)))
    return report


def stage_processor(stage: StageConfig, profile: Profile, out: str | Path, data_root: str | Path | None = None):
    """The processor the stage's ranks will build, and the language model's config, read from the config
    of the checkpoint they start from (or the profile's, for a model built from configs): the records'
    lengths depend on its tiles and tokens per tile, the length limit on its max_position_embeddings."""
    from medkit.chat.tokenizer import profile_tokenizer
    from medkit.model.build import image_token_id, model_config
    from medkit.model.configuration import MedGPTOssConfig
    from medkit.model.processor import MedGPTOssProcessor

    tokenizer = profile_tokenizer(profile)
    start = starting_checkpoint(stage, profile, out, data_root)
    if start is not None and (start / "config.json").is_file():
        config = MedGPTOssConfig.from_pretrained(start)
    else:
        config = model_config(profile, vocab_size=len(tokenizer), img_token=image_token_id(tokenizer))
    return MedGPTOssProcessor.for_model(config, tokenizer, profile), config.text_config


def overlong_summary(report: DataReport) -> str:
    """One line on the length check: the limit, per dataset how many records it left out, and the
    datasets the stage trains nothing from (--skip-missing), with why."""
    dropped = [f"{s.name} {s.overlong:,}" for s in report.sources if s.overlong]
    what = f"dropped {', '.join(dropped)}" if dropped else "none over it"
    missing = [f"{s.name} ({s.missing_reason})" for s in report.sources if s.missing_reason]
    nothing = f"; nothing from {'; '.join(missing)}" if missing else ""
    return (f"[medkit] {report.stage}: {report.records:,} records, at most {report.length_limit:,} tokens each; "
            f"{what}{nothing} (see data_report.json)")


def stage_dry_run(stage_name: str, *, profile: str, out: str | Path, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False, launch: Launch = Launch(), vision_schedule: str = "table2",
                  max_steps: int | None = None, overrides: StageOverrides = StageOverrides()) -> str:
    """What ``medkit train`` would run, resolved: world size, batches, length limit, attention, router loss,
    checkpoint policy, starting weights, the generated DeepSpeed config, the data's records per dataset and
    the launcher command. Starts no rank, composes and loads no model, opens no image, needs no tokenizer;
    data that is missing or unreadable is reported, not raised (a bad batch split still is, and so
    is a max_length beyond the starting model's positions)."""
    config = load_profile(profile)
    stage, plan, policy = stage_plan(stage_name, config, launch, vision_schedule, overrides)
    cmd = stage_command(stage_name, profile=profile, out=out, corpus=corpus, data_root=data_root,
                        leakage_report=leakage_report, skip_missing=skip_missing, launch=launch,
                        vision_schedule=vision_schedule, max_steps=max_steps, overrides=overrides)
    text = starting_text_config(stage, config, out, data_root)
    limit = min(stage.max_length, text["max_position_embeddings"])
    lines = [f"dry run: stage {stage.name}, profile {config.name} (nothing started, no model composed or loaded)",
             f"launch       {launch.describe()}",
             *batch_lines(stage, plan),
             f"steps        {max_steps or config.training.steps(stage.name) or f'{stage.epochs:g} epoch(s) of the data'}",
             f"lengths      a sample may have {limit:,} tokens (stage max_length {stage.max_length:,}, model "
             f"max_position_embeddings {text['max_position_embeddings']:,}); longer ones: {stage.overlong}",
             f"attention    {config.model.attn_implementation}",
             f"trains       {', '.join(p for p in ('vision', 'projector', 'llm') if getattr(stage.trainable, p))}; "
             f"router load-balancing loss " + (f"on (coefficient {text['router_aux_loss_coef']:g})"
                                               if stage.trainable.llm else "off (LLM frozen)"),
             f"checkpoints  {policy.describe()}; {resume_line(Path(out) / stage.name)}",
             f"start        {start_line(stage, config, out, data_root)}",
             "deepspeed    " + indented(json.dumps(resolved_deepspeed_config(stage, config, plan), indent=1), 13),
             *data_lines(stage, plan, corpus=corpus, data_root=data_root, leakage_report=leakage_report,
                         skip_missing=skip_missing),
             f"command      {' '.join(cmd)}"]
    return "\n".join(lines)


def indented(text: str, width: int) -> str:
    """``text`` with every line after the first indented by ``width`` spaces (under a report's label)."""
    return text.replace("\n", "\n" + " " * width)


def batch_lines(stage: StageConfig, plan: BatchPlan) -> list[str]:
    rows = (f"each rank packs its {plan.per_device} sample(s) of a micro-step into 1-{plan.max_rows_per_micro_step} "
            f"row(s) of <= {plan.max_length:,} tokens (<= {plan.max_tokens_per_micro_step:,} tokens)"
            if stage.batching == "packed" else
            f"each rank pads its {plan.per_device} sample(s) of a micro-step to the longest (padded batching)")
    return [f"batches      per device {plan.per_device} samples per micro-step, global {plan.global_batch} samples "
            f"per optimizer step, accumulation {plan.accumulation} (= {plan.global_batch} / ({plan.per_device} x "
            f"{plan.world_size} ranks))",
            f"             {rows}; an optimizer step: {plan.global_batch} samples in at most {plan.global_batch} rows"]


def starting_text_config(stage: StageConfig, profile: Profile, out: str | Path,
                         data_root: str | Path | None = None) -> dict:
    """The language model's config as the ranks will see it: from the starting checkpoint's config.json
    when it exists; before the first stage's checkpoint is composed, from the released language model's
    config.json when it is a local folder (what composing copies); else the profile's (which mirrors the
    released one)."""
    start = starting_checkpoint(stage, profile, out, data_root)
    if start is not None and (start / "config.json").is_file():
        return json.loads((start / "config.json").read_text())["text_config"]
    from transformers import GptOssConfig  # its defaults fill what the profile leaves out

    released = Path(profile.model.language_model) / "config.json"
    if stage.init_from is None and not profile.is_tiny and released.is_file():
        return GptOssConfig.from_dict(json.loads(released.read_text())).to_dict()
    return GptOssConfig(**profile.model.text_config).to_dict()


def start_line(stage: StageConfig, profile: Profile, out: str | Path, data_root: str | Path | None = None) -> str:
    start = starting_checkpoint(stage, profile, out, data_root)
    if start is None:
        return (f"a model built from the {profile.name} profile's configs (seed {profile.seed}; random weights: "
                "the stand-ins train on the synthetic corpus, not on a data root)")
    if profile.is_tiny and not stage.init_from:
        return f"{start} (composed before the ranks start from the stand-ins of the corpus, trained there once)"
    if (start / "config.json").is_file():
        return f"{start} (present)"
    maker = f"stage {stage.init_from} writes it" if stage.init_from else "composed before the ranks start"
    return f"{start} (missing: {maker})"


def resume_line(out_dir: Path) -> str:
    from medkit.training.stage_run import last_complete_checkpoint  # loads the Trainer; only for this report

    resume = last_complete_checkpoint(out_dir)
    return f"a rerun resumes from {resume}" if resume else f"no checkpoint in {out_dir} yet: starts at step 0"


def resolved_deepspeed_config(stage: StageConfig, profile: Profile, plan: BatchPlan) -> dict:
    """The ZeRO-3 config the ranks get, with what the Trainer fills from its arguments filled in here; the
    bucket sizes follow the profile's language width (``deepspeed_setup.bucket_sizes``)."""
    from transformers import TrainingArguments

    config = zero3_config(language_width(profile))
    config["bf16"] = {"enabled": stage.bf16 and profile.model.dtype == "bfloat16"}  # on GPU ranks; CPU: float32
    config["train_micro_batch_size_per_gpu"] = plan.per_device
    config["gradient_accumulation_steps"] = plan.accumulation
    config["train_batch_size"] = plan.global_batch
    config["gradient_clipping"] = TrainingArguments.__dataclass_fields__["max_grad_norm"].default
    return config


def data_lines(stage: StageConfig, plan: BatchPlan, *, corpus, data_root, leakage_report, skip_missing) -> list[str]:
    """Records per dataset as the stage would read them, and what would stop it."""
    problems = []
    try:
        excluded_ids(leakage_report)
    except (MixtureError, SchemaError) as e:
        problems.append(str(e))
        leakage_report = None  # counted without the exclusions
    if data_root is None and not Path(corpus).is_dir():
        return [f"data         synthetic corpus {corpus}: not there yet (`medkit train` writes it, seed 0)", *problems]
    try:
        check_stage_sources(stage, corpus=corpus, data_root=data_root, skip_missing=skip_missing)
    except (MixtureError, ValueError) as e:
        problems.append(str(e))
    try:
        report = stage_record_counts(stage, corpus=corpus, data_root=data_root, leakage_report=leakage_report)
    except (SchemaError, ValueError) as e:
        return [f"data         unreadable: {e}", *problems]
    # what only reading shows (every record excluded, none of the split): refused like an absent dataset
    emptied = [s for s in report.sources if s.missing_reason and not absence(Path(s.path))]
    if emptied and not (skip_missing and data_root):
        problems.append(left_out_message(stage, report, emptied))
    where = f"{stage.mixture} mixture under {data_root}" if data_root else f"synthetic corpus {corpus}"
    epoch = f", one epoch ~{-(-report.samples // plan.global_batch):,} optimizer steps" if report.samples else ""
    drawn = f" drawn as {report.samples:,} samples per epoch (task weights)" if report.samples != report.records else ""
    lines = [f"data         {where}: {report.records:,} records{drawn}{epoch} (leakage exclusions applied; every "
             "record and its image paths validated; image headers and lengths are checked when training starts)"]
    lines += [f"  {s.name:<46} {Path(s.path).name:<40} {s.format:<7} {s.records:>10,}"
              + (f"  x {s.weight:g} = {s.samples:,} per epoch" if s.samples is not None else "")
              + (f"  (Table 1: {s.table1_examples:,})" if s.table1_examples else "")
              + (f"  [{s.missing_reason}]" if s.missing_reason else "") for s in report.sources]
    lines += [f"  NOT READY: {problem}" for problem in problems]
    return lines


def compose_in_subprocess(profile: str, out: str | Path) -> None:
    """``medkit compose`` in its own process: the released model (40+ GB for GPT-oss-20B) is freed when it
    exits instead of staying in the launcher, or the notebook kernel, while the ranks train."""
    cmd = [sys.executable, "-m", "medkit", "compose", "--profile", str(profile), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"composing the starting checkpoint failed (exit {done.returncode}):\n"
                           f"{done.stderr[-4000:]}")


def launch_stage(stage_name: str, *, profile: str, out: str | Path, corpus: str | Path | None = None,
                 data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                 skip_missing: bool = False, launch: Launch = Launch(), max_steps: int | None = None,
                 **kwargs) -> list[float]:
    """Run the stage to completion with a progress bar over its optimizer steps and return its per-step
    losses; a failure raises with the tail of the ranks' log."""
    data = dict(corpus=corpus, data_root=data_root, leakage_report=leakage_report, skip_missing=skip_missing)
    cmd = stage_command(stage_name, profile=profile, out=out, launch=launch, max_steps=max_steps, **data, **kwargs)
    schedule = kwargs.get("vision_schedule", "table2")
    report = prepare_stage(stage_name, profile=profile, out=out, vision_schedule=schedule, **data)
    print(overlong_summary(report), flush=True)
    steps = max_steps or load_profile(profile).training.steps(stage_name)  # None: one epoch of unknown length
    code, tail = run_with_progress(cmd, desc=stage_name, total=steps)
    if code:
        raise RuntimeError(f"stage {stage_name} failed (exit {code}):\n" + "".join(tail))
    return json.loads((Path(out) / stage_name / "losses.json").read_text())


def run_with_progress(cmd: list[str], *, desc: str, total: int | None) -> tuple[int, list[str]]:
    """Run the launcher, advancing a bar on each step the Trainer logs (``{'loss': ...}`` lines, rank 0);
    returns the exit code and the last lines of output."""
    from medkit.progress import progress_bar as tqdm

    tail: deque[str] = deque(maxlen=60)
    with tqdm(total=total, desc=desc, unit="step") as bar, subprocess.Popen(
            cmd, env=cpu_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        try:
            for line in proc.stdout:
                tail.append(line)
                logged = TRAINER_LOSS_LINE.match(line)
                if logged:
                    bar.update(1)
                    bar.set_postfix(loss=logged.group(1), refresh=False)  # drawn at the bar's own interval: a
                    # redraw per step would put every step on its own line in an executed notebook
        except BaseException:  # a notebook interrupt (KeyboardInterrupt) must not leave ranks training
            stop_launcher(proc)
            raise
    return proc.returncode, list(tail)


def stop_launcher(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM the launcher: torchrun and the deepspeed launcher pass it on to their ranks, which run in
    sessions of their own and would outlive a launcher killed outright. SIGKILL only past ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
