"""Training-notebook calls: launch one stage of the curriculum for this notebook run."""

from __future__ import annotations

from medkit.data.synthetic import ensure_corpus
from medkit.notebook.params import NotebookParameters
from medkit.training.launch import Launch, launch_stage


def train_stage(stage: str, P: NotebookParameters) -> list[float]:
    """Run ``stage`` on ``P.nproc`` ranks into ``<run>/train/<stage>/`` and return its per-step losses.

    Data: the Table 1 mixture under ``P.train_data_root`` (paper), else the run's synthetic corpus; the
    training ids that notebook 01's leakage audit flagged (``<run>/leakage/leakage.json``) are left out.
    """
    if P.train_data_root:
        data = dict(data_root=P.train_data_root, skip_missing=P.skip_missing)
    else:
        data = dict(corpus=ensure_corpus(P.corpus, seed=P.seed))
    leakage = P.run / "leakage" / "leakage.json"
    return launch_stage(stage, profile=P.profile, out=P.run / "train", launch=Launch(nproc=P.nproc),
                        max_steps=P.max_steps, leakage_report=leakage if leakage.is_file() else None, **data)
