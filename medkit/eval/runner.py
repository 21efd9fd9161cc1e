"""Run benchmarks against a model: generate what the store lacks, then score everything in the store.

Per benchmark: load the items (native release or synthetic counterpart), skip the ids the prediction
store already has, decode the rest batch by batch (each batch appended to the store as it finishes),
then score from the store alone and write ``results/<benchmark>.json``. Each stored line also keeps the
parsed answer and correctness as scored when it was generated. A killed run rerun with ``resume``
continues where it stopped; rescoring (``generate=False``) never touches the model and recomputes every
score from the stored outputs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from medkit.data.schema import Sample
from medkit.eval.adapters import ModelAdapter, prompt_hash
from medkit.eval.benchmarks import Benchmark, get_benchmark, load_benchmark
from medkit.eval.generation import DecodeSettings
from medkit.eval.store import Prediction, PredictionStore, StoreError, check_prompt, prediction_from

ROOT = Path("/")  # benchmark items carry absolute image paths


@dataclass
class EvalRequest:
    benchmarks: list[str]
    out_dir: Path
    data_root: Path | None = None  # native releases (paper); None: synthetic counterparts from corpus_dir
    corpus_dir: Path | None = None
    limit: int | None = None
    settings: DecodeSettings = DecodeSettings()
    resume: bool = False
    n_boot: int = 1000
    seed: int = 0
    profile: str | None = None  # recorded in the result files, so reviewer mode stamps tables with it


def store_key(adapter: ModelAdapter, benchmark: Benchmark, request: EvalRequest) -> dict[str, Any]:
    return {"model": adapter.fingerprint(), "benchmark": benchmark.name, "decode": request.settings.key(),
            "source": "native" if request.data_root is not None else "synthetic"}


def pending_items(items: Sequence[Sample], done: dict[str, Prediction], store: PredictionStore) -> list[Sample]:
    """Items without a stored prediction; a stored one whose prompt changed is an error."""
    todo = []
    for sample in items:
        stored = done.get(sample.id)
        if stored is None:
            todo.append(sample)
        else:
            check_prompt(stored, prompt_hash(sample, ROOT), str(store.path))
    return todo


def scored_at_generation(benchmark: Benchmark, sample: Sample, final: str) -> tuple[str | None, bool | None]:
    """(parsed answer, correct) to store with a new prediction: the strict letter and whether it matches
    for multiple choice; (None, None) for free text, whose metrics are corpus-level."""
    if benchmark.scorer != "strict_mc":
        return None, None
    from medkit.eval.scoring import score_mc

    result = score_mc(final, sample.meta["options"], sample.meta["answer"])
    return result.parsed, result.correct


def generate_missing(adapter: ModelAdapter, benchmark: Benchmark, todo: list[Sample], store: PredictionStore,
                     settings: DecodeSettings, progress: bool) -> None:
    bar = tqdm(total=len(todo), desc=benchmark.name, unit="item", disable=not progress)
    for start in range(0, len(todo), settings.batch_size):
        batch = todo[start : start + settings.batch_size]
        completions = adapter.generate([(s, ROOT) for s in batch], settings)
        store.append(prediction_from(c, prompt_hash(s, ROOT), *scored_at_generation(benchmark, s, c.final))
                     for c, s in zip(completions, batch))
        bar.update(len(batch))
    bar.close()


def score(benchmark: Benchmark, items: Sequence[Sample], predictions: dict[str, Prediction],
          n_boot: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Benchmark metrics and per-item rows, from stored predictions only."""
    from medkit.eval.scoring import accuracy_summary, score_mc

    missing = [s.id for s in items if s.id not in predictions]
    if missing:
        raise StoreError(f"{benchmark.name}: {len(missing)} item(s) have no prediction (first: {missing[:3]})")
    if benchmark.scorer == "strict_mc":
        rows = []
        for sample in items:
            result = score_mc(predictions[sample.id].final, sample.meta["options"], sample.meta["answer"])
            rows.append({"id": sample.id, "answer": sample.meta["answer"], "parsed": result.parsed,
                         "status": result.status, "correct": result.correct, "lenient": result.lenient,
                         "lenient_correct": result.lenient_correct})
        summary = accuracy_summary([r["correct"] for r in rows], [r["status"] == "unparsed" for r in rows],
                                   [r["lenient_correct"] for r in rows], n_boot=n_boot, seed=seed)
        return summary, rows
    return score_generation(benchmark, items, predictions, n_boot, seed)


def score_generation(benchmark: Benchmark, items, predictions, n_boot: int, seed: int):
    """Report / impression metrics from stored outputs; CIs by bootstrap over reports where computed."""
    from medkit.eval.report_metrics import score_reports

    hypotheses = [predictions[s.id].final for s in items]
    references = [s.meta["answer"] for s in items]
    results = score_reports(hypotheses, references, metrics=REPORT_METRICS[benchmark.scorer])
    metrics: dict[str, Any] = {"n": len(items)}
    for name, result in results.items():
        metrics[name] = {"value": result.value, "status": result.status, **metric_ci(result, n_boot, seed),
                         "metadata": dict(result.metadata)}
    rows = [{"id": s.id, "output": h} for s, h in zip(items, hypotheses)]
    return metrics, rows


def metric_ci(result, n_boot: int, seed: int) -> dict[str, float | None]:
    """95% bootstrap CI of a report metric; 1/RadCliQ-v1 resamples reports and takes 1/mean each time."""
    import numpy as np

    if not result.computed or not result.per_report:
        return {"ci_low": None, "ci_high": None}
    values = np.asarray(result.per_report, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    if result.name == "radcliq_v1_inv":  # per_report holds RadCliQ-v1 itself
        means = 1.0 / means[means > 0]
    low, high = np.percentile(means, [2.5, 97.5])
    return {"ci_low": float(low), "ci_high": float(high)}


REPORT_METRICS = {
    "report_metrics": ("bleu2", "bleu4", "rougeL", "radgraph_partial", "ratescore", "radcliq_v1_inv"),
    "ratescore": ("ratescore", "bleu2", "rougeL"),
}


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def run_benchmark(adapter: ModelAdapter, name: str, request: EvalRequest, *, generate: bool = True,
                  progress: bool = True) -> dict[str, Any]:
    benchmark = get_benchmark(name)
    loaded = load_benchmark(name, data_root=request.data_root,
                            corpus_dir=None if request.data_root is not None else request.corpus_dir,
                            limit=request.limit)
    if not loaded.items:
        raise ValueError(f"benchmark {name!r} has no items ({loaded.count_note})")
    store = PredictionStore(request.out_dir / "predictions" / adapter.name, name,
                            store_key(adapter, benchmark, request))
    start = time.perf_counter()
    if generate:
        done = store.open(resume=request.resume)
        todo = pending_items(loaded.items, done, store)
        generate_missing(adapter, benchmark, todo, store, request.settings, progress)
    else:
        todo = []
    metrics, rows = score(benchmark, loaded.items, store.read(), request.n_boot, request.seed)
    result = {"benchmark": name, "title": benchmark.title, "table": benchmark.table, "model": adapter.name,
              "profile": request.profile, "seed": request.seed,
              "source": "native" if request.data_root is not None else "synthetic",
              "n": len(loaded.items), "count_note": loaded.count_note, "metrics": metrics,
              "store": str(store.path), "generated_now": len(todo), "seconds": round(time.perf_counter() - start, 2)}
    write_json(request.out_dir / "results" / adapter.name / f"{name}.json", result)
    write_json(request.out_dir / "results" / adapter.name / f"{name}.items.json", rows)
    return result


def run_eval(adapter: ModelAdapter, request: EvalRequest, *, generate: bool = True,
             progress: bool = True) -> list[dict[str, Any]]:
    for name in request.benchmarks:
        get_benchmark(name)  # every name checked before any model time is spent
    return [run_benchmark(adapter, name, request, generate=generate, progress=progress) for name in request.benchmarks]
