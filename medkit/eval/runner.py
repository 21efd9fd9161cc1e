"""Run benchmarks against a model: generate what the store lacks, then score everything in the store.

Every benchmark of the selection is loaded (and its native data checked) before any model time is
spent. Per benchmark: skip the ids the prediction store already has, order the rest by prompt length and
cut them into batches (so left padding wastes little), decode batch by batch (each batch appended to the
store as it finishes), then score from the store alone and write ``results/<benchmark>.json``. Each
stored line also keeps the parsed answer and correctness as scored when it was generated. A killed run
rerun with ``resume`` continues where it stopped; rescoring (``generate=False``) never touches the model
and recomputes every score from the stored outputs.

With ``nproc`` > 1 the batches are dealt round-robin to data-parallel ranks (:mod:`medkit.eval.parallel`),
each appending to its own store shard; the batches are the same as one process would decode, so the
merged predictions are too.

Generation budget: each benchmark's own (``Benchmark.max_new_tokens``: room for GPT-oss's analysis
channel before the answer; decoding stops at ``<|return|>``), unless ``max_new_tokens`` overrides it.
The value used is part of the store key and recorded in the result file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from medkit.data.schema import Sample
from medkit.eval.adapters import ModelAdapter, prompt_hash
from medkit.eval.benchmarks import Benchmark, LoadedBenchmark, get_benchmark, load_benchmark
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
    batch_size: int = 8
    max_new_tokens: int | None = None  # None: each benchmark's generation budget
    resume: bool = False
    n_boot: int = 1000
    seed: int = 0
    profile: str | None = None  # recorded in the result files, so reviewer mode stamps tables with it
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # benchmark -> native-loader options
    nproc: int = 1  # data-parallel ranks
    profile_max_new_tokens: int | None = None  # the evaluated profile's eval.max_new_tokens (see budget)

    def __post_init__(self) -> None:
        for name in ("batch_size", "nproc"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")

    def budget(self, benchmark: Benchmark) -> tuple[int, str]:
        """(new tokens, where the number comes from): the request's override, else the profile's
        ``eval.max_new_tokens`` if the adapter has a profile that sets one, else the benchmark's own."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens, "override"
        if self.profile_max_new_tokens is not None:
            return self.profile_max_new_tokens, "profile"
        return benchmark.max_new_tokens, "benchmark"

    def settings(self, benchmark: Benchmark) -> DecodeSettings:
        return DecodeSettings(max_new_tokens=self.budget(benchmark)[0], batch_size=self.batch_size)


def store_key(adapter: ModelAdapter, loaded: LoadedBenchmark, request: EvalRequest) -> dict[str, Any]:
    benchmark = loaded.benchmark
    key = {"model": adapter.fingerprint(), "benchmark": benchmark.name, "decode": request.settings(benchmark).key(),
           "source": "native" if request.data_root is not None else "synthetic"}
    if loaded.options:  # e.g. SLAKE's languages: other options, other items
        key["options"] = loaded.options
    return key


def open_store(adapter: ModelAdapter, loaded: LoadedBenchmark, request: EvalRequest) -> PredictionStore:
    return PredictionStore(request.out_dir / "predictions" / adapter.name, loaded.benchmark.name,
                           store_key(adapter, loaded, request))


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


def prompt_length(adapter: ModelAdapter, sample: Sample) -> int:
    """The adapter's token count of the prompt where it has one; else characters plus a per-image
    allowance (a baseline's processor decides its own image tokens)."""
    if hasattr(adapter, "prompt_length"):
        return adapter.prompt_length(sample, ROOT)
    return len(json.dumps(sample.messages, ensure_ascii=False)) + 1000 * len(sample.images)


def length_batches(adapter: ModelAdapter, todo: Sequence[Sample], batch_size: int) -> list[list[Sample]]:
    """The pending items ordered by prompt length (ties keep benchmark order), cut into batches."""
    order = sorted(range(len(todo)), key=lambda i: prompt_length(adapter, todo[i]))
    ordered = [todo[i] for i in order]
    return [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]


def scored_at_generation(benchmark: Benchmark, sample: Sample, final: str) -> tuple[str | None, bool | None]:
    """(parsed answer, correct) to store with a new prediction: the strict letter and whether it matches
    for multiple choice; (None, None) for free text, whose metrics are corpus-level."""
    if benchmark.scorer != "strict_mc":
        return None, None
    from medkit.eval.scoring import score_mc

    result = score_mc(final, sample.meta["options"], sample.meta["answer"])
    return result.parsed, result.correct


def decode_batches(adapter: ModelAdapter, benchmark: Benchmark, batches: Sequence[Sequence[Sample]],
                   store: PredictionStore, settings: DecodeSettings, bar: Any = None) -> None:
    """Decode each batch and append it to ``store`` as soon as it finishes (a kill loses one batch)."""
    for batch in batches:
        completions = adapter.generate([(s, ROOT) for s in batch], settings)
        store.append(prediction_from(c, prompt_hash(s, ROOT), *scored_at_generation(benchmark, s, c.final))
                     for c, s in zip(completions, batch))
        if bar is not None:
            bar.update(len(batch))


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


@dataclass
class PreparedBenchmark:
    """A loaded benchmark, its open store and the batches still to decode."""

    loaded: LoadedBenchmark
    store: PredictionStore
    settings: DecodeSettings
    batches: list[list[Sample]]

    @property
    def name(self) -> str:
        return self.loaded.benchmark.name

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self.batches)


def check_selection(request: EvalRequest) -> None:
    """Every name and every option checked before any data is read or model time spent."""
    for name in request.benchmarks:
        get_benchmark(name)
    repeated = sorted({n for n in request.benchmarks if request.benchmarks.count(n) > 1})
    if repeated:  # both would decode into one store, which then holds every id twice
        raise ValueError(f"benchmark(s) {repeated} selected more than once")
    for name, options in request.options.items():
        if name not in request.benchmarks:
            raise ValueError(f"options given for {name!r}, which is not among the selected benchmarks")
        get_benchmark(name).resolve_options(options)


def load_selection(request: EvalRequest) -> list[LoadedBenchmark]:
    """Every selected benchmark loaded, so a missing or malformed release fails before any decoding."""
    loaded = []
    for name in request.benchmarks:
        benchmark = load_benchmark(name, data_root=request.data_root,
                                   corpus_dir=None if request.data_root is not None else request.corpus_dir,
                                   limit=request.limit, options=request.options.get(name))
        if not benchmark.items:
            raise ValueError(f"benchmark {name!r} has no items ({benchmark.count_note})")
        loaded.append(benchmark)
    return loaded


def prepare(adapter: ModelAdapter, loaded: LoadedBenchmark, request: EvalRequest, generate: bool) -> PreparedBenchmark:
    store = open_store(adapter, loaded, request)
    settings = request.settings(loaded.benchmark)
    batches: list[list[Sample]] = []
    if generate:
        done = store.open(resume=request.resume)
        batches = length_batches(adapter, pending_items(loaded.items, done, store), request.batch_size)
    return PreparedBenchmark(loaded, store, settings, batches)


def decode_here(adapter: ModelAdapter, prepared: Sequence[PreparedBenchmark], progress: bool) -> dict[str, float]:
    """One process decodes every pending batch; returns the decode seconds per benchmark."""
    seconds = {}
    for job in prepared:
        start = time.perf_counter()
        bar = tqdm(total=job.pending, desc=job.name, unit="item", disable=not progress)
        decode_batches(adapter, job.loaded.benchmark, job.batches, job.store, job.settings, bar)
        bar.close()
        seconds[job.name] = round(time.perf_counter() - start, 2)
    return seconds


def finish(adapter: ModelAdapter, job: PreparedBenchmark, request: EvalRequest,
           decode_seconds: float | None, parallel_seconds: float | None = None) -> dict[str, Any]:
    """Score one benchmark from its store alone and write its result and per-item files.

    ``decode_seconds``: this benchmark's decoding in one process; ``parallel_seconds``: the ranks' whole
    decode phase (every benchmark of the run together), when ranks decoded it."""
    job.store.merge_shards()
    benchmark, items = job.loaded.benchmark, job.loaded.items
    metrics, rows = score(benchmark, items, job.store.read(), request.n_boot, request.seed)
    result = {"benchmark": benchmark.name, "title": benchmark.title, "table": benchmark.table, "model": adapter.name,
              "profile": request.profile, "seed": request.seed,
              "source": "native" if request.data_root is not None else "synthetic",
              "n": len(items), "count_note": job.loaded.count_note, "options": job.loaded.options,
              "max_new_tokens": job.settings.max_new_tokens,
              "max_new_tokens_from": request.budget(benchmark)[1],
              "metrics": metrics, "store": str(job.store.path), "generated_now": job.pending,
              "nproc": request.nproc, "decode_seconds": decode_seconds, "parallel_decode_seconds": parallel_seconds}
    write_json(request.out_dir / "results" / adapter.name / f"{benchmark.name}.json", result)
    write_json(request.out_dir / "results" / adapter.name / f"{benchmark.name}.items.json", rows)
    return result


def plan_eval(adapter: ModelAdapter, request: EvalRequest) -> list[dict[str, Any]]:
    """What ``run_eval`` would decode, per benchmark, without writing anything or loading the model:
    items, those already stored, those pending, their batches per rank and the generation budget."""
    request = with_adapter_profile(adapter, request)
    check_selection(request)
    rows = []
    for loaded in load_selection(request):
        store = open_store(adapter, loaded, request)
        stored = store.stored_ids()
        pending = [s for s in loaded.items if s.id not in stored]
        batches = -(-len(pending) // request.batch_size)
        budget, origin = request.budget(loaded.benchmark)
        rows.append({"benchmark": loaded.benchmark.name, "table": loaded.benchmark.table, "n": len(loaded.items),
                     "stored": len(loaded.items) - len(pending), "pending": len(pending), "batches": batches,
                     "batches_per_rank": -(-batches // request.nproc), "max_new_tokens": budget,
                     "budget_from": origin, "max_new_tokens_total": budget * len(pending),
                     "count_note": loaded.count_note})
    return rows


def with_adapter_profile(adapter: ModelAdapter, request: EvalRequest) -> EvalRequest:
    """A medkit model's profile fills in what the request leaves open: the profile recorded in the result
    files and the profile's generation budget."""
    profile = getattr(adapter, "profile", None)
    if profile is None:
        return request
    return replace(request, profile=request.profile or profile.name,
                   profile_max_new_tokens=request.profile_max_new_tokens or profile.eval.max_new_tokens)


def run_eval(adapter: ModelAdapter, request: EvalRequest, *, generate: bool = True,
             progress: bool = True) -> list[dict[str, Any]]:
    """Generate what the stores lack for every selected benchmark (on ``request.nproc`` ranks), then score."""
    request = with_adapter_profile(adapter, request)
    check_selection(request)
    prepared = [prepare(adapter, loaded, request, generate) for loaded in load_selection(request)]
    seconds: dict[str, float] = {}
    parallel_seconds = None
    if any(job.batches for job in prepared):
        if request.nproc == 1:
            seconds = decode_here(adapter, prepared, progress)
        else:
            from medkit.eval.parallel import decode_in_parallel

            parallel_seconds = decode_in_parallel(adapter, prepared, request, progress)
    return [finish(adapter, job, request, seconds.get(job.name), parallel_seconds) for job in prepared]
