"""The training-data registry: Table 1 of the paper (31 datasets, their stage and size) loaded from YAML.

This module owns the table as data (``configs/datasets/table1.yaml``), the per-stage mixtures and their
totals, and the rendering of the table in the paper's layout. It does not download anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import pandas as pd

from medkit.config import ConfigError, load_yaml
from medkit.profiles import CONFIG_DIR

Modality = Literal["Text-only", "Radiology", "Histopathology", "Mixture"]
Stage = Literal["PT", "MT", "IT"]

TABLE1_PATH = CONFIG_DIR / "datasets" / "table1.yaml"
STAGES: tuple[str, ...] = get_args(Stage)


@dataclass(frozen=True)
class TrainingDataset:
    """One row of Table 1."""

    name: str  # as printed in the paper
    modality: Modality  # the table's group, as printed (see ``note`` for odd placements)
    examples: int  # the printed "No. examples"
    stage: Stage
    reasoning: bool  # the (R) marker: samples carry reasoning traces
    description: str
    source: str | None  # hub id, "credentialed: ..." or None where the release is unknown
    note: str | None = None

    def __post_init__(self) -> None:
        if self.examples <= 0:
            raise ConfigError(f"{self.name}: examples must be positive, got {self.examples}")


@dataclass(frozen=True)
class Table1:
    datasets: list[TrainingDataset]
    paper_stage_totals: dict[str, int]  # the paper's rounded per-stage sizes, for comparison

    def __post_init__(self) -> None:
        names = [d.name for d in self.datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"Table 1: duplicate dataset name(s) {duplicates}")
        if sorted(self.paper_stage_totals) != sorted(STAGES):
            raise ConfigError(f"Table 1: paper_stage_totals needs exactly the stages {list(STAGES)}")


@cache
def _load(path: Path) -> Table1:
    return load_yaml(Table1, path)


def load_table1(path: str | Path = TABLE1_PATH) -> list[TrainingDataset]:
    """All training datasets of Table 1, in the paper's order."""
    return list(_load(Path(path)).datasets)


def paper_stage_totals(path: str | Path = TABLE1_PATH) -> dict[str, int]:
    """The per-stage sizes the paper's text quotes (rounded: ~939K, ~19M, ~7M)."""
    return dict(_load(Path(path)).paper_stage_totals)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}; known: {list(STAGES)}")


def stage_mixture(stage: str, path: str | Path = TABLE1_PATH) -> list[TrainingDataset]:
    """The datasets trained on in ``stage`` (PT, MT or IT), in table order."""
    _check_stage(stage)
    return [d for d in load_table1(path) if d.stage == stage]


def stage_total(stage: str, path: str | Path = TABLE1_PATH) -> int:
    """Number of examples in a stage's mixture: the sum of its datasets' printed counts."""
    return sum(d.examples for d in stage_mixture(stage, path))


def stage_totals(path: str | Path = TABLE1_PATH) -> dict[str, int]:
    return {stage: stage_total(stage, path) for stage in STAGES}


def table1_frame(path: str | Path = TABLE1_PATH) -> pd.DataFrame:
    """Table 1 in the paper's layout: group label on a group's first row only, (R) before reasoning data."""
    rows = []
    previous_group = None
    for d in load_table1(path):
        rows.append({
            "Modality": d.modality if d.modality != previous_group else "",
            "Dataset": d.name,
            "No. examples": d.examples,
            "Training stages": d.stage,
            "Description": f"(R) {d.description}" if d.reasoning else d.description,
        })
        previous_group = d.modality
    return pd.DataFrame(rows, columns=["Modality", "Dataset", "No. examples", "Training stages", "Description"])
