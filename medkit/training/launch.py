"""Launching one curriculum stage on N ranks (the `medkit train` command and the training notebooks).

torch's elastic launcher starts N processes of :mod:`medkit.training.stage_run`; on a multi-node box the
same module runs under the ``deepspeed`` launcher or torchrun with node flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from medkit.training.deepspeed_setup import cpu_environment
from medkit.training.stages import load_stage


def stage_command(stage_name: str, *, profile: str, corpus: str | Path, out: str | Path, nproc: int = 1,
                  vision_schedule: str = "table2", max_steps: int | None = None,
                  save_steps: int | None = None, master_port: int | None = None) -> list[str]:
    """The launcher command for ``stage_name``; it starts from the previous stage's ``out/<prev>/model``."""
    stage = load_stage(stage_name, vision_schedule)  # unknown stage: a clear error before anything runs
    out = Path(out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if master_port:
        cmd += ["--master_port", str(master_port)]
    cmd += ["-m", "medkit.training.stage_run", "--stage", stage.name, "--profile", profile,
            "--vision-schedule", vision_schedule, "--corpus", str(corpus), "--out", str(out / stage.name)]
    if stage.init_from:
        cmd += ["--previous", str(out / stage.init_from / "model")]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    if save_steps:
        cmd += ["--save-steps", str(save_steps)]
    return cmd


def launch_stage(stage_name: str, *, profile: str, corpus: str | Path, out: str | Path, nproc: int = 1,
                 max_steps: int | None = None, **kwargs) -> list[float]:
    """Run the stage to completion and return its per-step losses; a failure raises with the log tail."""
    cmd = stage_command(stage_name, profile=profile, corpus=corpus, out=out, nproc=nproc, max_steps=max_steps,
                        **kwargs)
    done = subprocess.run(cmd, env=cpu_environment(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"stage {stage_name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads((Path(out) / stage_name / "losses.json").read_text())
