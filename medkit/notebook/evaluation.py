"""Evaluation-notebook calls: run one table's benchmarks on this run's model and show the results."""

from __future__ import annotations

import json
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
        corpus = params.synthetic_corpus()
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
                    "unparsed": metrics["unparsed_rate"], "lenient": metrics["lenient_accuracy"],
                    "medevalkit": metrics.get("medevalkit_accuracy"),
                    "medevalkit guessed": metrics.get("medevalkit_fallback_rate")}
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
    from medkit.reporting.tables import lexical_frame, results_frame

    eval_out = params.run / "eval"
    return figure2(params.run / "figures", fresh=results_frame(eval_out, "figure2"),
                   stamp=run_stamp(params.profile, params.seed), lexical=lexical_frame(eval_out))


EXCERPT = 160  # characters of a prompt, output or reference shown per prediction


def excerpt(text: str, width: int = EXCERPT, tail: bool = False) -> str:
    """``text`` on one line, cut to ``width`` characters (its end for a prompt, where the question is)."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):] if tail else text[: width - 1] + "…"


def prompt_text(sample) -> str:
    """The user turn as a reader sees it: text parts, each image as ``[image]``."""
    from medkit.data.schema import content_parts

    user = [m for m in sample.messages if m["role"] == "user"][-1]
    return " ".join("[image]" if p["type"] == "image" else p["text"] for p in content_parts(user))


def sample_predictions(params: NotebookParameters, table: str, per_benchmark: int = 2) -> pd.DataFrame:
    """A few of this run's predictions per benchmark of ``table``, from the result files and the store:
    the end of the prompt, the raw output, the parsed answer, the gold answer and whether it counted."""
    from medkit.eval.benchmarks import load_benchmark
    from medkit.eval.scoring import chance_rate
    from medkit.eval.store import read_lines

    request = eval_request(params, table)
    folder = request.out_dir / "results" / MODEL_NAME
    rows = []
    for name in request.benchmarks:
        result_path = folder / f"{name}.json"
        if not result_path.is_file():
            continue
        result = json.loads(result_path.read_text(encoding="utf-8"))
        scored = json.loads((folder / f"{name}.items.json").read_text(encoding="utf-8"))
        outputs = {p.id: p for _, p in read_lines(Path(result["store"]))}
        loaded = load_benchmark(name, data_root=request.data_root, corpus_dir=request.corpus_dir,
                                limit=request.limit, options=result.get("options") or None)
        items = {s.id: s for s in loaded.items}
        for row in scored[:per_benchmark]:
            sample, output = items[row["id"]], outputs[row["id"]]
            gold = sample.meta["answer"]
            if "options" in sample.meta:
                gold = f"{gold}. {sample.meta['options'][gold]}"
            rows.append({"benchmark": name, "id": row["id"], "prompt (end)": excerpt(prompt_text(sample), tail=True),
                         "raw output": excerpt(output.raw), "parsed": row.get("parsed", "–"),
                         "medevalkit reads": row.get("medevalkit", "–"),
                         "gold": excerpt(gold, 80), "correct": row.get("correct", "–")})
    return pd.DataFrame(rows)


def what_this_run_shows(params: NotebookParameters, table: str) -> "Markdown":
    """One paragraph, computed from this run's result files, on what the table's numbers mean: for
    multiple choice, strict accuracy against the chance rate of the same items (how many benchmarks have
    their whole 95% CI above it) and the unparsed rate; for generation, which metrics are above zero."""
    from IPython.display import Markdown

    from medkit.eval.benchmarks import load_benchmark

    folder = params.run / "eval" / "results" / MODEL_NAME  # result files only: no model, no data needed
    mc, generation = [], []
    for name in benchmark_names(table=table):
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        metrics = result["metrics"]
        if "accuracy" in metrics:
            chance = metrics.get("chance_rate")
            if chance is None:  # a result file from before results recorded it: from the items, if at hand
                corpus = params.corpus if (params.corpus / "manifest.json").is_file() else None
                if corpus is None and params.data_root is None:
                    continue
                loaded = load_benchmark(name, data_root=from_root(params.data_root) if params.data_root else None,
                                        corpus_dir=corpus, limit=params.limit, options=result.get("options") or None)
                chance = chance_rate([s.meta["options"] for s in loaded.items])
            mc.append((name, metrics, chance))
        else:
            generation.append((name, {k: m.get("value") for k, m in metrics.items() if isinstance(m, dict)}))
    if not mc and not generation:
        return Markdown("No result files for this table yet: run the evaluation cell above.")
    where = ("this **tiny** run (a toy model trained for minutes on the seeded synthetic corpus; each "
             "benchmark here is a synthetic counterpart of "
             f"{max((m['n'] for _, m, _ in mc), default=0) or 'a few'} held-out items)" if params.data_root is None
             else "this run on the native releases")
    parts = []
    if mc:
        above = [name for name, m, chance in mc if m["ci_low"] > chance]
        mean_acc = sum(m["accuracy"] for _, m, _ in mc) / len(mc)
        mean_chance = sum(c for _, _, c in mc) / len(mc)
        unparsed = sum(m["unparsed_rate"] for _, m, _ in mc) / len(mc)
        parts.append(
            f"On {where}, strict accuracy averages **{mean_acc:.2f}** over {len(mc)} multiple-choice "
            f"benchmark(s), against **{mean_chance:.2f}** for guessing on the same items; "
            f"**{len(above)} of {len(mc)}** have their whole 95% CI above their chance rate"
            + (f" ({', '.join(above)})" if 0 < len(above) < len(mc) else "")
            + f", and {unparsed:.0%} of outputs are unparsed on average.")
    if generation:
        # judged at the 3 decimals the tables print: a BLEU of 4e-5 reads 0.000 there, so it is not "above zero"
        shown = [(k, round(v, 3)) for _, values in generation for k, v in values.items() if isinstance(v, (int, float))]
        lit = sorted({k for k, v in shown if v > 0})
        dark = sorted({k for k, v in shown if v <= 0} - set(lit))
        text = (f"The generated texts score above zero on {', '.join(lit)}" if lit
                else "No computed text metric is above zero")
        if dark:
            text += f"; {', '.join(dark)} {'stays' if len(dark) == 1 else 'stay'} at 0.000"
        parts.append(text + " (metrics that need weights this machine lacks are not computed, never guessed).")
    if params.data_root is None:
        parts.append("These numbers show that the pipeline trains, decodes and scores end to end and what the toy "
                     "model picked up from the corpus; they say nothing about how MedGPT-OSS performs, which "
                     "takes the `paper` profile.")
    return Markdown(" ".join(parts))

