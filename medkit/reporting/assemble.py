"""Every paper table and figure from result files alone (reviewer mode: no model, a few seconds).

Reads what the evaluation and ablation runs left behind (``<eval_out>/results/<model>/<benchmark>.json``,
the ablation's ``results.json``) and writes, each with the same provenance stamp:

* ``paper_tables/``: Tables 1-6 (``tableN.md/.tex/.csv``). Tables 4-6 and the Figure 2 values are laid out
  as printed; the fresh run's columns are appended (marked "this run", never ranked against the paper), and
  ``tableN_vs_paper.*`` lists fresh, published, delta and the fresh 95% CI per cell. Table 3 gets the loaded
  item counts beside the printed ones where a run exists.
* ``figures/``: Figure 1 (encoder ablation, when its results exist) and Figure 2 (PNG + PDF).
* ``paper_tables/claims_audit.*``: the paper's comparisons and numeric claims tested at Table 3's item
  counts, from the published numbers alone (:mod:`medkit.reporting.claims`), and ``claims_audit_fresh.*``
  where a run evaluated two or more models on one benchmark, paired on the same items
  (:mod:`medkit.reporting.paired`); ``cross_paper.*``: the
  baselines' numbers beside what other papers print for them (:mod:`medkit.reporting.cross_paper`);
  ``scoring_protocols.*``: each multiple-choice result scored strict, lenient and by MedEvalKit's rule, or
  in reviewer mode the rule per benchmark (:mod:`medkit.reporting.protocols`).

Anything without results is reported as missing in the returned summary, never filled in.

All or nothing: the inputs are read and checked before anything is written (a bad file raises
:class:`~medkit.reporting.inputs.ResultFileError` naming it), and the outputs are rendered into staging
folders and swapped in only when all were written; the previous run's outputs this run does not produce
are removed, other files in the folders are never touched (:mod:`medkit.reporting.outputs`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medkit.profiles import BASELINES_PATH, CONFIG_DIR, PROFILE_NAMES
from medkit.reporting.claims import claims_audit
from medkit.reporting.cross_paper import cross_paper
from medkit.reporting.paired import fresh_claims_audit
from medkit.reporting.protocols import scoring_protocols
from medkit.reporting.outputs import staged_outputs
from medkit.reporting.provenance import Stamp, make_stamp
from medkit.reporting.published import RESULT_TABLES, published_table
from medkit.reporting.tables import (
    ablation_table,
    compare_with_published,
    lexical_frame,
    load_ablation,
    load_results,
    render_table,
    results_ci_frame,
    results_frame,
    table1,
    table2,
)

NOT_RUN_TEXT = "not run"
SOURCE_DATE_ENV = "SOURCE_DATE_EPOCH"  # the reproducible-builds convention for a pinned date


@dataclass
class Assembled:
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)  # name -> format -> path
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # output -> why it was not written

    def frame(self) -> pd.DataFrame:
        """One row per output: kind, name, files written or why not."""
        rows = [{"kind": "table", "name": n, "written": ", ".join(sorted(p.name for p in paths.values()))}
                for n, paths in self.tables.items()]
        rows += [{"kind": "figure", "name": n, "written": ", ".join(sorted(p.name for p in paths.values()))}
                 for n, paths in self.figures.items()]
        rows += [{"kind": "missing", "name": n, "written": why} for n, why in self.missing.items()]
        return pd.DataFrame(rows, columns=["kind", "name", "written"])

    def moved(self, folders: dict[Path, Path]) -> "Assembled":
        """The same outputs with their paths in the folders they were moved to (staging -> target)."""
        def relocated(paths: dict[str, Path]) -> dict[str, Path]:
            return {fmt: folders[path.parent] / path.name for fmt, path in paths.items()}

        return Assembled(tables={n: relocated(p) for n, p in self.tables.items()},
                         figures={n: relocated(p) for n, p in self.figures.items()}, missing=dict(self.missing))


def stamp_date() -> str:
    """``SOURCE_DATE_EPOCH`` as a UTC date when set (byte-identical reruns on any day), else today (UTC)."""
    epoch = os.environ.get(SOURCE_DATE_ENV)
    moment = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    return moment.date().isoformat()


def config_files(profile: str) -> list[Path]:
    """The configs every output depends on: the profile, the encoder registry, Table 1, the stage configs,
    the ablation, the baselines, the published data and the paper's claims."""
    profile_path = CONFIG_DIR / "profiles" / f"{profile}.yaml" if profile in PROFILE_NAMES else Path(profile)
    ablation = CONFIG_DIR / "ablation" / (f"{profile}.yaml" if profile in PROFILE_NAMES else "paper.yaml")
    return [profile_path, CONFIG_DIR / "encoders.yaml", CONFIG_DIR / "datasets" / "table1.yaml",
            *sorted((CONFIG_DIR / "stages").glob("*.yaml")), ablation, BASELINES_PATH,
            CONFIG_DIR / "published.yaml", CONFIG_DIR / "claims.yaml",
            CONFIG_DIR / "other_papers.yaml"]


def recorded_run(eval_out: str | Path | None, ablation_results: str | Path | None, *, profile: str | None = None,
                 seed: int | None = None) -> tuple[str, int]:
    """(profile, seed) for the stamp: what the evaluation result files record (else the ablation's), so a
    paper run re-rendered in reviewer mode is not stamped with a default; an explicit value must agree.
    A bad result or ablation file raises ResultFileError naming it."""
    records = load_results(eval_out) if eval_out and Path(eval_out, "results").is_dir() else []
    if not records and ablation_results and Path(ablation_results).is_file():
        records = [load_ablation(ablation_results)]
    chosen = {}
    for key, given, default in (("profile", profile, "tiny"), ("seed", seed, 0)):
        found = sorted({r[key] for r in records if r.get(key) is not None}, key=str)
        if len(found) > 1:
            raise ValueError(f"the result files under {eval_out} come from several {key}s: {found}")
        if given is not None and found and given != found[0]:
            raise ValueError(f"--{key} {given!r} but the result files record {found[0]!r}")
        chosen[key] = given if given is not None else (found[0] if found else default)
    return chosen["profile"], chosen["seed"]


def run_stamp(profile: str, seed: int, date: str | None = None) -> Stamp:
    configs = {p.name if p.is_relative_to(CONFIG_DIR) else str(p): p.read_text(encoding="utf-8")
               for p in config_files(profile)}
    return make_stamp(profile, configs, seed=seed, date=date or stamp_date())


def with_fresh(published: pd.DataFrame, fresh: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The published table with the fresh run's columns appended ("<model> (this run, <profile>)");
    ranking stays among the paper's columns, a benchmark the run skipped reads "not run"."""
    extra = fresh.rename(columns=lambda c: f"{c} (this run, {profile})").reindex(published.index)
    extra = extra.astype(object).where(extra.notna(), NOT_RUN_TEXT)
    frame = pd.concat([published.astype(object), extra], axis=1)
    frame.attrs = dict(published.attrs)
    frame.attrs["rank_columns"] = list(published.columns)
    frame.attrs["missing"] = published.attrs.get("missing", "–")
    return frame


def comparison_frame(fresh: pd.DataFrame, published: pd.DataFrame, ci: pd.DataFrame) -> pd.DataFrame:
    """Fresh vs published per cell, flattened to one index level so it renders as a table."""
    long = compare_with_published(fresh, published, ci)
    long = long.reset_index()
    long.index = [f"{r} · {m}" for r, m in zip(long.pop("row"), long.pop("model"))]
    long.index.name = "Row · model"
    long.attrs.update(caption=f"This run vs the paper: {published.attrs.get('caption', '')}",
                      decimals=published.attrs.get("decimals", 2), rank=False, missing="–")
    return long


@dataclass(frozen=True)
class Inputs:
    """Everything a tables run reads, read and checked before anything is written."""

    results: list[dict[str, Any]]  # evaluation results; empty where there are none
    ablation: dict[str, Any] | None  # the encoder ablation's results.json, None where there is none
    eval_out: Path | None
    ablation_path: Path | None


def read_inputs(eval_out: Path | None, ablation_results: Path | None) -> Inputs:
    """Every result file and the ablation JSON, checked (ResultFileError names a bad file). A folder
    without ``results/`` or no ablation file reads as "no results" (reported as missing, not an error)."""
    results = load_results(eval_out) if eval_out is not None and (eval_out / "results").is_dir() else []
    ablation = load_ablation(ablation_results) if ablation_results is not None and ablation_results.is_file() else None
    return Inputs(results=results, ablation=ablation, eval_out=eval_out, ablation_path=ablation_results)


def table3_with_counts(results: list[dict[str, Any]]) -> pd.DataFrame:
    frame = published_table(3)
    loaded = {r["benchmark"]: r["n"] for r in results}
    if loaded:
        from medkit.reporting.published import load_published

        rows = load_published().table3.rows
        frame = frame.copy()
        frame["Loaded (this run)"] = [" / ".join(str(loaded[b]) if b in loaded else "–" for b in r.benchmarks)
                                      for r in rows]
    return frame


def result_tables(inputs: Inputs, tables_dir: Path, stamp: Stamp, done: Assembled) -> dict[str, pd.DataFrame]:
    """Tables 4-6 and the Figure 2 values; returns the fresh frames by table."""
    fresh_frames = {}
    for table in RESULT_TABLES:
        name = f"table{table}" if table != "figure2" else "figure2_values"
        published = published_table(table)
        fresh = results_frame(inputs.results, table) if inputs.results else pd.DataFrame(index=published.index)
        if fresh.shape[1] == 0:
            done.missing[f"{name}_vs_paper"] = f"no evaluation results for it under {inputs.eval_out}"
            done.tables[name] = render_table(published, name, tables_dir, stamp)
            continue
        fresh_frames[table] = fresh
        done.tables[name] = render_table(with_fresh(published, fresh, stamp.profile), name, tables_dir, stamp)
        ci = results_ci_frame(inputs.results, table)
        done.tables[f"{name}_vs_paper"] = render_table(comparison_frame(fresh, published, ci),
                                                        f"{name}_vs_paper", tables_dir, stamp)
    return fresh_frames


def render_all(inputs: Inputs, tables_dir: Path, figures_dir: Path, stamp: Stamp) -> Assembled:
    """Every table and figure from checked inputs, into the given (staging) folders."""
    from medkit.reporting.figures import figure1, figure2

    done = Assembled()
    done.tables["table1"] = render_table(table1(), "table1", tables_dir, stamp)
    done.tables["table2"] = render_table(table2(), "table2", tables_dir, stamp)
    done.tables["table3"] = render_table(table3_with_counts(inputs.results), "table3", tables_dir, stamp)
    fresh = result_tables(inputs, tables_dir, stamp, done)
    if inputs.ablation is not None:
        done.tables["figure1_values"] = render_table(ablation_table(inputs.ablation), "figure1_values",
                                                     tables_dir, stamp)
        done.figures["figure1"] = figure1(inputs.ablation, figures_dir, stamp)
    else:
        done.missing["figure1"] = f"no encoder-ablation results at {inputs.ablation_path} (run notebook 02)"
    done.figures["figure2"] = figure2(figures_dir, fresh=fresh.get("figure2"), stamp=stamp,
                                      lexical=lexical_frame(inputs.results) if inputs.results else None)
    done.tables["claims_audit"] = render_table(claims_audit(), "claims_audit", tables_dir, stamp)
    paired = fresh_claims_audit(inputs.results, inputs.eval_out, stamp.seed or 0) if inputs.results else None
    if paired is None:
        done.missing["claims_audit_fresh"] = ("needs results of two or more models on one multiple-choice "
                                              "benchmark (medkit eval each model into the same --out)")
    else:
        done.tables["claims_audit_fresh"] = render_table(paired, "claims_audit_fresh", tables_dir, stamp)
    done.tables["cross_paper"] = render_table(cross_paper(inputs.results), "cross_paper", tables_dir, stamp)
    done.tables["scoring_protocols"] = render_table(scoring_protocols(inputs.results), "scoring_protocols",
                                                    tables_dir, stamp)
    return done


def assemble(*, eval_out: str | Path | None, ablation_results: str | Path | None, tables_dir: str | Path,
             figures_dir: str | Path, stamp: Stamp) -> Assembled:
    """Write every table and figure (see the module docstring); no model is loaded.

    All or nothing: every input is read and checked first (a bad file raises ResultFileError naming it),
    everything is rendered into staging folders beside ``tables_dir`` and ``figures_dir``, and only then
    swapped in, removing the previous run's outputs this run does not produce (medkit.reporting.outputs);
    on any failure both folders stay as they were."""
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    inputs = read_inputs(Path(eval_out) if eval_out is not None else None,
                         Path(ablation_results) if ablation_results is not None else None)
    with staged_outputs(tables_dir, figures_dir) as (staged_tables, staged_figures):
        done = render_all(inputs, staged_tables, staged_figures, stamp)
    return done.moved({staged_tables: tables_dir, staged_figures: figures_dir})
