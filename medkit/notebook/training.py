"""Training-notebook calls: launch one stage of the curriculum for this notebook run."""

from __future__ import annotations

from medkit.data.synthetic import ensure_corpus
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
        leakage = P.run / "leakage" / "leakage.json"
        data = dict(data_root=P.train_data_root, skip_missing=P.skip_missing,
                    leakage_report=leakage if leakage.is_file() else None)
    else:
        data = dict(corpus=ensure_corpus(P.corpus, seed=P.seed))
    return launch_stage(stage, profile=P.profile, out=P.run / "train", launch=Launch(nproc=P.nproc),
                        max_steps=P.max_steps, **data)
