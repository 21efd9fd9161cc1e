"""Training-notebook calls: launch one stage of the curriculum for this notebook run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from medkit.config import ConfigError
from medkit.notebook.params import NotebookParameters
from medkit.training.launch import Launch, launch_stage


def train_stage(stage: str, P: NotebookParameters) -> list[float]:
    """Run ``stage`` on ``P.nproc`` ranks into ``<run>/train/<stage>/`` and return its per-step losses.

    Data: the Table 1 mixture under ``P.train_data_root`` minus the training ids notebook 01's leakage
    audit flagged (``<run>/leakage/leakage.json``), else the run's synthetic corpus as generated. The
    corpus's train and evaluation items are disjoint by construction, and its procedural images of one
    modality sit within the audit's pHash distance of each other (about half the items get flagged), so
    its audit is reported but not applied: excluding would leave mid-training almost nothing.
    """
    if P.train_data_root:
        data = dict(data_root=P.train_data_root, skip_missing=P.skip_missing,
                    leakage_report=audit_of(P.train_data_root, P.run / "leakage" / "leakage.json"))
    else:
        data = dict(corpus=P.synthetic_corpus())
    return launch_stage(stage, profile=P.profile, out=P.run / "train", launch=Launch(nproc=P.nproc),
                        max_steps=P.max_steps, **data)


def audit_of(train_data_root: str, report: Path) -> Path | None:
    """Notebook 01's leakage report, if it audited this very data root; a report of other training data
    (the synthetic corpus, another root) is an error rather than a silently wrong exclusion list."""
    if not report.is_file():
        warnings.warn(f"no leakage report at {report}: run notebook 01 with train_data_root to exclude "
                      "training items that overlap the benchmarks; training on all of them", stacklevel=3)
        return None
    audited = json.loads(report.read_text()).get("train_source")
    if audited != str(Path(train_data_root).resolve()):
        raise ConfigError(f"{report} audited {audited or 'the synthetic corpus'}, not {train_data_root}: "
                          "rerun notebook 01 with this train_data_root")
    return report


def data_weights(stage) -> str:
    """The synthetic tasks a tiny stage draws from, with the profile's task weights (draws per record)."""
    return ", ".join(f"{task} x {stage.synthetic_weights[task]:g}" if task in stage.synthetic_weights else task
                     for task in stage.synthetic_tasks)


def trained_settings(stage_name: str, P: NotebookParameters):
    """What this run's stage trains with, beside the paper's stage config (Table 2): the profile's
    stand-ins (the tiny profile's rates, batches and steps) and this notebook's parameters applied, as
    ``medkit train`` resolves them for the ranks (``stage_plan``)."""
    import pandas as pd

    from medkit.profiles import load_profile
    from medkit.training.launch import stage_plan
    from medkit.training.stages import load_stage

    profile = load_profile(P.profile)
    paper = load_stage(stage_name)
    run, plan, _ = stage_plan(stage_name, profile, Launch(nproc=P.nproc))
    steps = P.max_steps or profile.training.steps(stage_name)

    def column(stage, batch, world, max_steps):
        trains = [part for part in ("vision", "projector", "llm") if getattr(stage.trainable, part)]
        return {"trains": ", ".join(trains),
                "learning rate (vision / projector / LLM)": " / ".join(
                    f"{getattr(stage.learning_rate, part):g}" for part in ("vision", "projector", "llm")),
                "samples per rank per micro-step": stage.per_device_batch_size,
                "samples per optimizer step": stage.global_batch_size,
                "ranks": world, "gradient accumulation": batch,
                "optimizer steps": max_steps or f"{stage.epochs:g} epoch(s)",
                "max tokens per row": f"{stage.max_length:,}",
                "schedule": f"{stage.lr_scheduler}, warmup {stage.warmup_ratio:g}",
                "data": (f"Table 1 {stage.mixture} mixture, each record once" if stage is paper or P.train_data_root
                         else f"synthetic tasks: {data_weights(stage)}")}

    paper_world = 8  # Table 2's setting: one node of 8 GPUs
    frame = pd.DataFrame({
        "Table 2 (paper, 8 GPUs)": column(paper, paper.global_batch_size // (paper.per_device_batch_size * paper_world),
                                         paper_world, None),
        f"this run ({profile.name}, {P.nproc} rank(s))": column(run, plan.accumulation, P.nproc, steps)})
    frame.index.name = stage_name
    return frame
