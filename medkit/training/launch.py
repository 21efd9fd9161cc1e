"""Launching one curriculum stage on N ranks (the `medkit train` command and the training notebooks).

Every rank runs :mod:`medkit.training.stage_run`, started by torch's elastic launcher (``torchrun``, the
default; ``nnodes``/``node_rank``/``master_addr`` for several nodes, run once per node) or by DeepSpeed's
own launcher (``deepspeed``: one call starts every node of a ``hostfile`` over pdsh). Before any rank
starts, the stage's data is checked and, for the first stage of a released-weights profile, the initial
checkpoint (released encoder + GPT-oss + fresh projector) is composed once into ``OUT/init/model``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medkit.data.mixture import check_stage_sources
from medkit.profiles import Profile, load_profile
from medkit.training.deepspeed_setup import cpu_environment
from medkit.training.stages import load_stage

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

    def prefix(self) -> list[str]:
        if self.launcher == "deepspeed":
            cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(self.nproc),
                   "--num_nodes", str(self.nnodes), "--no_local_rank"]
            cmd += ["--hostfile", self.hostfile] if self.hostfile else []
            cmd += ["--master_addr", self.master_addr] if self.master_addr else []
            cmd += ["--master_port", str(self.master_port)] if self.master_port else []
            return cmd + ["--module", "medkit.training.stage_run"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.nproc)]
        if self.nnodes > 1:
            cmd += ["--nnodes", str(self.nnodes), "--node_rank", str(self.node_rank), "--master_addr", self.master_addr]
        cmd += ["--master_port", str(self.master_port)] if self.master_port else []
        return cmd + ["-m", "medkit.training.stage_run"]


def stage_command(stage_name: str, *, profile: str, out: str | Path, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False, launch: Launch = Launch(), vision_schedule: str = "table2",
                  max_steps: int | None = None, save_steps: int | None = None) -> list[str]:
    """The launcher command for ``stage_name``. A later stage starts from ``out/<previous stage>/model``;
    the first stage of a released-weights profile from ``out/init/model`` (see ``initial_checkpoint``)."""
    stage = load_stage(stage_name, vision_schedule)  # unknown stage: a clear error before anything runs
    out = Path(out)
    cmd = launch.prefix() + ["--stage", stage.name, "--profile", str(profile), "--vision-schedule", vision_schedule,
                             "--out", str(out / stage.name)]
    cmd += ["--corpus", str(corpus)] if data_root is None else ["--data-root", str(data_root)]
    cmd += ["--leakage-report", str(leakage_report)] if leakage_report else []
    cmd += ["--skip-missing"] if skip_missing else []
    if stage.init_from:
        cmd += ["--previous", str(out / stage.init_from / "model")]
    elif not load_profile(profile).is_tiny:
        cmd += ["--previous", str(out / INIT_DIR / "model")]
    cmd += ["--max-steps", str(max_steps)] if max_steps else []
    cmd += ["--save-steps", str(save_steps)] if save_steps else []
    return cmd


def initial_checkpoint(profile: Profile, out: str | Path) -> Path:
    """``out/init/model``: the released encoder and GPT-oss with a fresh projector, composed and saved
    once (safetensors) so every rank of the first stage loads it under ZeRO-3. Reused when present;
    written to a temporary folder first, so a killed compose leaves nothing that looks complete."""
    from medkit.chat import load_tokenizer
    from medkit.model.build import compose_pretrained

    target = Path(out) / INIT_DIR / "model"
    if (target / "config.json").is_file():
        return target
    partial = target.with_name("model.partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    compose_pretrained(profile, tokenizer).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def prepare_stage(stage_name: str, *, profile: str, out: str | Path, corpus: str | Path | None = None,
                  data_root: str | Path | None = None, leakage_report: str | Path | None = None,
                  skip_missing: bool = False, vision_schedule: str = "table2", compose: bool = True) -> None:
    """What must hold before ranks start: the stage's data is there, the initial checkpoint exists
    (composed here unless ``compose`` is off: on nodes other than node 0 of a multi-node run)."""
    stage = load_stage(stage_name, vision_schedule)
    check_stage_sources(stage, corpus=corpus, data_root=data_root, leakage_report=leakage_report,
                        skip_missing=skip_missing)
    if stage.init_from is None and not load_profile(profile).is_tiny:
        if compose:
            compose_in_subprocess(profile, out)
        elif not (Path(out) / INIT_DIR / "model" / "config.json").is_file():
            raise FileNotFoundError(f"{Path(out) / INIT_DIR / 'model'} not found: run `medkit compose --profile "
                                    f"{profile} --out {out}` once (or start node 0 first) before the other nodes")


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
    prepare_stage(stage_name, profile=profile, out=out, vision_schedule=kwargs.get("vision_schedule", "table2"), **data)
    steps = max_steps or load_profile(profile).training.max_steps  # None: one epoch of unknown length
    code, tail = run_with_progress(cmd, desc=stage_name, total=steps)
    if code:
        raise RuntimeError(f"stage {stage_name} failed (exit {code}):\n" + "".join(tail))
    return json.loads((Path(out) / stage_name / "losses.json").read_text())


def run_with_progress(cmd: list[str], *, desc: str, total: int | None) -> tuple[int, list[str]]:
    """Run the launcher, advancing a bar on each step the Trainer logs (``{'loss': ...}`` lines, rank 0);
    returns the exit code and the last lines of output."""
    from tqdm.auto import tqdm

    tail: deque[str] = deque(maxlen=60)
    with tqdm(total=total, desc=desc, unit="step") as bar, subprocess.Popen(
            cmd, env=cpu_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        try:
            for line in proc.stdout:
                tail.append(line)
                logged = TRAINER_LOSS_LINE.match(line)
                if logged:
                    bar.update(1)
                    bar.set_postfix(loss=logged.group(1))
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
