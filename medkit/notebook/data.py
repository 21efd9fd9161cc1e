"""Data-notebook calls: benchmark item counts against Table 3, and the train/eval leakage audit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medkit.data.leakage import LeakageReport, audit_leakage
from medkit.data.mixture import mixture_samples
from medkit.data.schema import Sample, read_jsonl
from medkit.data.synthetic import TASKS
from medkit.eval.benchmarks import all_benchmarks, load_benchmark


def benchmark_counts(*, data_root: str | Path | None = None, corpus_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per benchmark: Table 3's count, the count loaded here and the loader's note."""
    rows = []
    for bench in all_benchmarks():
        loaded = load_benchmark(bench.name, data_root=data_root, corpus_dir=corpus_dir)
        rows.append({"benchmark": bench.name, "title": bench.title, "table": bench.table,
                     "expected (Table 3)": bench.expected_count, "loaded": len(loaded.items),
                     "note": loaded.count_note})
    return pd.DataFrame(rows)


def corpus_training_items(corpus_dir: Path) -> list[Sample]:
    return [s for task in TASKS for s in read_jsonl(corpus_dir / f"{task}.jsonl") if s.meta.get("split") == "train"]


def leakage_audit(corpus_dir: str | Path, *, data_root: str | Path | None = None,
                  train_data_root: str | Path | None = None, limit: int | None = None) -> tuple[list[Sample], LeakageReport]:
    """Training items against every benchmark's items (native under ``data_root``, else synthetic).

    Training items: the Table 1 datasets present under ``train_data_root``, else the corpus's training split.
    The report's excluded ids are what the training notebooks leave out."""
    corpus_dir = Path(corpus_dir)
    evaluation = [s for b in all_benchmarks()
                  for s in load_benchmark(b.name, data_root=data_root,
                                          corpus_dir=None if data_root else corpus_dir, limit=limit).items]
    # benchmark items carry absolute image paths, so their root is irrelevant
    if train_data_root:  # every training record: ``limit`` only shortens the benchmarks
        train, images_of = mixture_samples(train_data_root)
        clean, report = audit_leakage(train, Path("/"), evaluation, Path("/"), train_images=images_of)
        report.train_source = str(Path(train_data_root).resolve())
        return clean, report
    return audit_leakage(corpus_training_items(corpus_dir), corpus_dir, evaluation, Path("/"))


def corpus_summary(corpus_dir: str | Path) -> pd.DataFrame:
    """The corpus's manifest as a table: items per task and split, and the images written."""
    import json

    manifest = json.loads((Path(corpus_dir) / "manifest.json").read_text(encoding="utf-8"))
    images = sum(name.startswith("images/") for name in manifest.get("files", {}))
    frame = pd.DataFrame(manifest["counts"]).T[["train", "eval"]]
    frame.loc["total"] = frame.sum()
    frame.index.name = f"task ({images:,} images)"
    return frame


def leakage_summary(report: LeakageReport, *, applied: bool) -> pd.DataFrame:
    """The audit's counts, saying whether its flagged training items are left out of training
    (``applied``: the Table 1 datasets) or only reported (the synthetic corpus)."""
    counts = report.counts()
    left_out = len(report.excluded_ids) if applied else 0
    rows = {"training samples": report.n_train, "evaluation samples": report.n_eval,
            f"image pairs (pHash distance <= {report.max_phash_distance})": counts["image_phash"],
            f"text pairs (MinHash Jaccard >= {report.text_jaccard_threshold})": counts["text_minhash"],
            "training samples flagged": len(report.excluded_ids),
            "left out of training": left_out if applied else "0 (reported, not applied: synthetic corpus)"}
    return pd.DataFrame({"value": rows}).rename_axis("leakage audit")


def leakage_pairs(report: LeakageReport, n: int = 10) -> pd.DataFrame:
    """The first ``n`` matched pairs (all of them are in ``<run>/leakage/leakage.md``)."""
    rows = [{"train id": p.train_id, "eval id": p.eval_id, "signal": p.signal, "score": p.score}
            for p in report.pairs[:n]]
    return pd.DataFrame(rows, columns=["train id", "eval id", "signal", "score"])
