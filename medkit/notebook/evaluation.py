"""Evaluation-notebook calls: run one table's benchmarks on this run's model and show the results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medkit.eval.benchmarks import benchmark_names
from medkit.eval.runner import EvalRequest, run_eval
from medkit.notebook.params import NotebookParameters, from_root

INSTRUCT_MODEL = Path("train") / "instruct" / "model"
MODEL_NAME = "medkit"  # result folder name; the tables show it as the paper's MedGPT-OSS column


def model_path(params: NotebookParameters) -> Path:
    """``model_path``, else the instruction-tuned model of this run (notebook 05)."""
    path = from_root(params.model_path) if params.model_path else params.run / INSTRUCT_MODEL
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model at {path}: run notebook 05 first or set the model_path parameter")
    return path


def eval_request(params: NotebookParameters, table: str) -> EvalRequest:
    corpus = None
    if params.data_root is None:
        from medkit.data.synthetic import ensure_corpus

        corpus = ensure_corpus(params.corpus, seed=params.seed)
    return EvalRequest(benchmarks=benchmark_names(table=table), out_dir=params.run / "eval",
                       data_root=from_root(params.data_root) if params.data_root else None, corpus_dir=corpus,
                       limit=params.limit, resume=True,  # a rerun continues the store, never duplicates it
                       replace=True,  # results/medkit/ is this run's model: a retrained one replaces it whole
                       max_new_tokens=params.max_new_tokens, batch_size=params.batch_size, nproc=params.nproc,
                       seed=params.seed, profile=params.profile)


def evaluate_table(params: NotebookParameters, table: str) -> pd.DataFrame:
    """Generate what the store lacks for the table's benchmarks (on ``nproc`` data-parallel ranks),
    score, and return one row per benchmark."""
    from medkit.eval.parallel import AdapterSource, open_adapter

    adapter = open_adapter(AdapterSource(str(model_path(params)), profile=params.profile, name=MODEL_NAME,
                                         reasoning_effort=params.reasoning_effort))
    return results_table(run_eval(adapter, eval_request(params, table)))


def results_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        row = {"benchmark": r["benchmark"], "n": r["n"]}
        metrics = r["metrics"]
        if "accuracy" in metrics:
            row |= {"accuracy": metrics["accuracy"], "ci_low": metrics["ci_low"], "ci_high": metrics["ci_high"],
                    "unparsed": metrics["unparsed_rate"], "lenient": metrics["lenient_accuracy"]}
        else:
            row |= {name: m["value"] if m.get("value") is not None else m.get("status")
                    for name, m in metrics.items() if isinstance(m, dict)}
        rows.append(row)
    return pd.DataFrame(rows)


def compare_with_paper(params: NotebookParameters, table: str) -> pd.DataFrame:
    """This run's cells beside the paper's printed values: fresh, published, delta, fresh 95% CI."""
    from medkit.reporting.published import published_table
    from medkit.reporting.tables import compare_with_published, results_ci_frame, results_frame

    eval_out = params.run / "eval"
    return compare_with_published(results_frame(eval_out, table), published_table(table),
                                  results_ci_frame(eval_out, table))


def figure2_of_run(params: NotebookParameters) -> dict[str, Path]:
    """Figure 2 with this run's report metrics beside the paper's printed bars (under the run folder)."""
    from medkit.reporting.assemble import run_stamp
    from medkit.reporting.figures import figure2
    from medkit.reporting.tables import results_frame

    return figure2(params.run / "figures", fresh=results_frame(params.run / "eval", "figure2"),
                   stamp=run_stamp(params.profile, params.seed))
