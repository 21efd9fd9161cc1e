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

Reliability: the whole selection (settings, names, options, every native file) is checked before any
model loads or any store is touched (:func:`preflight`); each store is held under an exclusive lock for
the run; every read of a store (resume and rescore) checks each item's prompt hash against the data as it
is now; and the result files of a run are written into a staging folder and moved into
``results/<name>/`` only when every benchmark scored, so a failure leaves the earlier results as they
were. ``<name>`` is the user's (``--name``) or, for a medkit checkpoint, one derived from its path and
weights hash; a name already holding results of another model is refused unless ``replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence


from medkit.data.schema import Sample
from medkit.eval.adapters import ModelAdapter, prompt_hash
from medkit.eval.benchmarks import Benchmark, LoadedBenchmark, get_benchmark, load_benchmark
from medkit.eval.generation import DecodeSettings
from medkit.progress import progress_bar, progress_note
from medkit.eval.store import (Prediction, PredictionStore, StoreError, canonical_hash, check_prompts,
                               prediction_from)

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
    replace: bool = False  # results/<name>/ may hold another model's results: remove them (else an error)

    def __post_init__(self) -> None:
        for name in ("batch_size", "nproc", "max_new_tokens", "limit", "n_boot"):
            value = getattr(self, name)
            optional = name in ("max_new_tokens", "limit")
            if not (optional and value is None) and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

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


def prompt_hashes(items: Sequence[Sample]) -> dict[str, str]:
    """Each item's prompt hash (messages and image bytes), computed once per run: checking the store before
    decoding, the lines appended and the store again before scoring all use these."""
    return {s.id: prompt_hash(s, ROOT) for s in items}


def pending_items(items: Sequence[Sample], done: dict[str, Prediction], store: PredictionStore,
                  prompts: dict[str, str]) -> list[Sample]:
    """Items without a stored prediction; a stored one whose prompt changed is an error naming the items."""
    check_stored_prompts(prompts, done, store)
    return [sample for sample in items if sample.id not in done]


def check_stored_prompts(prompts: dict[str, str], done: dict[str, Prediction], store: PredictionStore) -> None:
    """Each stored prediction must come from the item's prompt as it is now (resume and rescore alike)."""
    check_prompts({i: h for i, h in prompts.items() if i in done}, done, str(store.path))


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
                   store: PredictionStore, settings: DecodeSettings, bar: Any = None,
                   prompts: dict[str, str] | None = None) -> None:
    """Decode each batch and append it to ``store`` as soon as it finishes (a kill loses one batch).
    ``prompts``: the items' prompt hashes if already computed (else hashed here, as a rank does)."""
    for batch in batches:
        completions = adapter.generate([(s, ROOT) for s in batch], settings)
        hashes = prompts if prompts is not None else prompt_hashes(batch)
        store.append(prediction_from(c, hashes[s.id], *scored_at_generation(benchmark, s, c.final))
                     for c, s in zip(completions, batch))
        if bar is not None:
            bar.update(len(batch))


def score(benchmark: Benchmark, items: Sequence[Sample], predictions: dict[str, Prediction],
          n_boot: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Benchmark metrics and per-item rows, from stored predictions only."""
    from medkit.eval.scoring import chance_rate, score_mc, summarise_scores

    missing = [s.id for s in items if s.id not in predictions]
    if missing:
        raise StoreError(f"{benchmark.name}: {len(missing)} item(s) have no prediction (first: {missing[:3]})")
    if benchmark.scorer == "strict_mc":
        scores = [score_mc(predictions[s.id].final, s.meta["options"], s.meta["answer"], benchmark=benchmark.name,
                           item_id=s.id) for s in items]
        rows = [{"id": s.id, "answer": s.meta["answer"], "parsed": r.parsed, "status": r.status,
                 "correct": r.correct, "lenient": r.lenient, "lenient_correct": r.lenient_correct,
                 "medevalkit": r.medevalkit, "medevalkit_correct": r.medevalkit_correct,
                 "medevalkit_fallback": r.medevalkit_fallback} for s, r in zip(items, scores)]
        summary = summarise_scores(scores, n_boot=n_boot, seed=seed)
        # what guessing one option per item scores on these items, so a reader can tell signal from luck
        summary["chance_rate"] = chance_rate([s.meta["options"] for s in items])
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


def model_identity(adapter: ModelAdapter) -> dict[str, Any]:
    """What a result folder is keyed by: the hash of the adapter's fingerprint (weights and the settings
    that change outputs) and, for a checkpoint, its weights' sha256 and path."""
    fingerprint = adapter.fingerprint()
    checkpoint = getattr(adapter, "checkpoint", None)
    return {"model_fingerprint": canonical_hash(fingerprint), "weights_sha256": fingerprint.get("weights_sha256"),
            "model_path": str(Path(checkpoint).resolve()) if checkpoint is not None else None}


def results_folder(request: EvalRequest, adapter: ModelAdapter) -> Path:
    return request.out_dir / "results" / adapter.name


def check_results_owner(folder: Path, identity: dict[str, Any], replace_other: bool) -> bool:
    """Whether ``folder`` holds another model's results (to be replaced); without ``replace_other`` that
    is an error, so evaluating a second checkpoint under one name never silently overwrites the first."""
    others = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.endswith(".items.json"):
            continue
        try:
            recorded = json.loads(path.read_text(encoding="utf-8")).get("model_fingerprint")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            recorded = "unreadable"
        if recorded != identity["model_fingerprint"]:
            others.append((path, recorded))
    if others and not replace_other:
        path, recorded = others[0]
        raise StoreError(f"{folder} holds results of other weights or model settings ({path.name}: fingerprint "
                         f"{recorded}; this model: {identity['model_fingerprint']}, weights "
                         f"{identity['weights_sha256']}); evaluate under another --name, or pass --replace to "
                         "remove those results")
    return bool(others)


def write_result_set(folder: Path, files: dict[str, Any], replace_folder: bool) -> None:
    """Write a run's result files as a set: into a staging folder beside ``folder``, then moved in only when
    every file is written, so a full disk or a failure leaves the earlier results untouched and no stray
    file. ``replace_folder``: the earlier folder (another model's results) is swapped out whole."""
    staging = folder.parent / f".{folder.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        for name, value in files.items():
            (staging / name).write_text(json.dumps(value, indent=2, sort_keys=True, default=str), encoding="utf-8")
        if replace_folder and folder.exists():
            retired = folder.parent / f".{folder.name}.replaced-{uuid.uuid4().hex[:8]}"
            folder.rename(retired)
            staging.rename(folder)
            shutil.rmtree(retired)
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name in sorted(files, key=lambda n: not n.endswith(".items.json")):  # per-item rows first
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class PreparedBenchmark:
    """A loaded benchmark, its open store and the batches still to decode."""

    loaded: LoadedBenchmark
    store: PredictionStore
    settings: DecodeSettings
    batches: list[list[Sample]]
    prompts: dict[str, str]  # item id -> prompt hash, computed once (prompt_hashes)

    @property
    def name(self) -> str:
        return self.loaded.benchmark.name

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self.batches)


def check_selection(request: EvalRequest) -> None:
    """Every name, every option and the output folder checked before any data is read or model time spent."""
    if request.out_dir.exists() and not request.out_dir.is_dir():
        raise NotADirectoryError(f"output folder {request.out_dir} is a file, not a folder")
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


def preflight(request: EvalRequest) -> list[LoadedBenchmark]:
    """The whole selection checked and loaded (names, options, output folder, every native file and
    record) before any model loads, any store is opened or any rank starts."""
    check_selection(request)
    return load_selection(request)


def prepare(adapter: ModelAdapter, loaded: LoadedBenchmark, request: EvalRequest, generate: bool) -> PreparedBenchmark:
    """Open the store (the caller holds its lock), check every stored prompt against the data as it is now
    and cut what is missing into batches (rescoring: nothing to decode)."""
    store = open_store(adapter, loaded, request)
    settings = request.settings(loaded.benchmark)
    prompts = prompt_hashes(loaded.items)
    batches: list[list[Sample]] = []
    if generate:
        done = store.open(resume=request.resume)
        batches = length_batches(adapter, pending_items(loaded.items, done, store, prompts), request.batch_size)
    else:
        store.merge_shards()  # a killed --nproc run's shards count as stored
        check_stored_prompts(prompts, store.read(), store)
    return PreparedBenchmark(loaded, store, settings, batches, prompts)


def decode_here(adapter: ModelAdapter, prepared: Sequence[PreparedBenchmark], progress: bool) -> dict[str, float]:
    """One process decodes every pending batch; returns the decode seconds per benchmark."""
    seconds = {}
    for job in prepared:
        if not job.batches:
            continue  # served from the store (run_eval says so)
        start = time.perf_counter()
        bar = progress_bar(total=job.pending, desc=job.name, unit="item", disable=not progress)
        decode_batches(adapter, job.loaded.benchmark, job.batches, job.store, job.settings, bar, job.prompts)
        bar.close()
        seconds[job.name] = round(time.perf_counter() - start, 2)
    return seconds


def finish(adapter: ModelAdapter, job: PreparedBenchmark, request: EvalRequest, decode_seconds: float | None,
           parallel_seconds: float | None = None, identity: dict[str, Any] | None = None) -> tuple[dict, list]:
    """Score one benchmark from its store alone: (result, per-item rows), written by the caller as a set.

    ``decode_seconds``: this benchmark's decoding in one process; ``parallel_seconds``: the ranks' whole
    decode phase (every benchmark of the run together), when ranks decoded it."""
    job.store.merge_shards()
    benchmark, items = job.loaded.benchmark, job.loaded.items
    stored = job.store.read()
    check_stored_prompts(job.prompts, stored, job.store)  # what the ranks appended too
    metrics, rows = score(benchmark, items, stored, request.n_boot, request.seed)
    result = {"benchmark": benchmark.name, "title": benchmark.title, "table": benchmark.table, "model": adapter.name,
              **(identity or model_identity(adapter)), "profile": request.profile, "seed": request.seed,
              "source": "native" if request.data_root is not None else "synthetic",
              "n": len(items), "count_note": job.loaded.count_note, "options": job.loaded.options,
              "max_new_tokens": job.settings.max_new_tokens,
              "max_new_tokens_from": request.budget(benchmark)[1],
              "metrics": metrics, "store": str(job.store.path), "generated_now": job.pending,
              # the exact prompts scored (ids and prompt hashes), so a result can be matched to its data
              "prompts_sha256": canonical_hash(sorted(job.prompts.items()), length=64),
              "nproc": request.nproc, "decode_seconds": decode_seconds, "parallel_decode_seconds": parallel_seconds}
    return result, rows


def plan_eval(adapter: ModelAdapter, request: EvalRequest) -> list[dict[str, Any]]:
    """What ``run_eval`` would decode, per benchmark, without writing anything or loading the model:
    items, those already stored, those pending, their batches per rank and the generation budget."""
    request = with_adapter_profile(adapter, request)
    check_selection(request)
    rows = []
    for loaded in load_selection(request):
        store = open_store(adapter, loaded, request)
        stored = store.peek()
        check_stored_prompts(prompt_hashes(loaded.items), stored, store)  # the run itself would refuse them
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


def run_eval(adapter: ModelAdapter, request: EvalRequest, *, generate: bool = True, progress: bool = True,
             loaded: Sequence[LoadedBenchmark] | None = None) -> list[dict[str, Any]]:
    """Generate what the stores lack for every selected benchmark (on ``request.nproc`` ranks), then score
    and write the results as one set. ``loaded``: the selection as :func:`preflight` returned it (else
    loaded here, before anything else)."""
    request = with_adapter_profile(adapter, request)
    selection = list(loaded) if loaded is not None else preflight(request)
    identity = model_identity(adapter)
    folder = results_folder(request, adapter)
    replace_other = check_results_owner(folder, identity, request.replace)
    with contextlib.ExitStack() as locks:
        for benchmark in selection:  # every store locked before any is touched: a second run writes nothing
            locks.enter_context(open_store(adapter, benchmark, request).lock())
        prepared = [prepare(adapter, benchmark, request, generate) for benchmark in selection]
        if progress:
            for job in prepared:
                if not job.batches:  # a rerun: say where the numbers come from instead of an empty 0/0 bar
                    progress_note(f"{job.name}: all {len(job.loaded.items)} predictions served from the store "
                                  f"{job.store.path} (nothing to decode)")
        seconds: dict[str, float] = {}
        parallel_seconds = None
        if any(job.batches for job in prepared):
            if request.nproc == 1:
                seconds = decode_here(adapter, prepared, progress)
            else:
                from medkit.eval.parallel import decode_in_parallel

                parallel_seconds = decode_in_parallel(adapter, prepared, request, progress)
        scored = [finish(adapter, job, request, seconds.get(job.name), parallel_seconds, identity) for job in prepared]
        files = {}
        for result, rows in scored:
            files[f"{result['benchmark']}.json"] = result
            files[f"{result['benchmark']}.items.json"] = rows
        write_result_set(folder, files, replace_folder=replace_other)
    return [result for result, _ in scored]
