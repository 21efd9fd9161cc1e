"""The paper's evaluation benchmarks as conversation-schema prompts, from native releases or the synthetic corpus.

Importing this package registers every benchmark (each family module calls ``register`` at import)::

    from medkit.eval.benchmarks import load_benchmark, benchmark_names
    loaded = load_benchmark("slake", data_root="/data/benchmarks")      # native release
    loaded = load_benchmark("slake", corpus_dir="/runs/tiny/corpus")     # synthetic counterpart
    loaded.items, loaded.count_note

Native layouts are documented in each family module (``vqa``, ``text_qa``, ``reports``, ``in_context``)
and in :data:`NATIVE_LAYOUT` (benchmark -> folder under ``data_root`` and the files expected there).
"""

from medkit.eval.benchmarks.base import (
    GENERATION_BUDGET,
    Benchmark,
    BenchmarkDataError,
    DuplicateBenchmarkError,
    LoadedBenchmark,
    MissingBenchmarkFile,
    UnknownBenchmarkError,
    all_benchmarks,
    benchmark_names,
    get_benchmark,
    load_benchmark,
    register,
    stable_int,
)
from medkit.eval.benchmarks import vqa, text_qa, reports, in_context  # noqa: E402,F401  (registration)

NATIVE_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    b.name: (b.data_dir, b.native_files) for b in all_benchmarks()
}

__all__ = [
    "GENERATION_BUDGET", "Benchmark", "BenchmarkDataError", "DuplicateBenchmarkError", "LoadedBenchmark", "MissingBenchmarkFile",
    "NATIVE_LAYOUT", "UnknownBenchmarkError", "all_benchmarks", "benchmark_names", "get_benchmark",
    "load_benchmark", "register", "stable_int",
]
