"""Every paper table and figure from result files alone (reviewer mode: no model, a few seconds).

Reads what the evaluation and ablation runs left behind (``<eval_out>/results/<model>/<benchmark>.json``,
the ablation's ``results.json``) and writes, each with the same provenance stamp:

* ``paper_tables/``: Tables 1-6 (``tableN.md/.tex/.csv``). Tables 4-6 and the Figure 2 values are laid out
  as printed; the fresh run's columns are appended (marked "this run", never ranked against the paper), and
  ``tableN_vs_paper.*`` lists fresh, published, delta and the fresh 95% CI per cell. Table 3 gets the loaded
  item counts beside the printed ones where a run exists.
* ``figures/``: Figure 1 (encoder ablation, when its results exist) and Figure 2 (PNG + PDF).

Anything without results is reported as missing in the returned summary, never filled in.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medkit.profiles import CONFIG_DIR, PROFILE_NAMES
from medkit.reporting.provenance import Stamp, make_stamp
from medkit.reporting.published import RESULT_TABLES, published_table
from medkit.reporting.tables import (
    ablation_table,
    compare,
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


def stamp_date() -> str:
    """``SOURCE_DATE_EPOCH`` as a UTC date when set (byte-identical reruns on any day), else today (UTC)."""
    epoch = os.environ.get(SOURCE_DATE_ENV)
    moment = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    return moment.date().isoformat()


def config_files(profile: str) -> list[Path]:
    """The configs every output depends on: the profile, the encoder registry, Table 1, the stage configs,
    the ablation, the baselines and the published data."""
    profile_path = CONFIG_DIR / "profiles" / f"{profile}.yaml" if profile in PROFILE_NAMES else Path(profile)
    ablation = CONFIG_DIR / "ablation" / (f"{profile}.yaml" if profile in PROFILE_NAMES else "paper.yaml")
    return [profile_path, CONFIG_DIR / "encoders.yaml", CONFIG_DIR / "datasets" / "table1.yaml",
            *sorted((CONFIG_DIR / "stages").glob("*.yaml")), ablation, CONFIG_DIR / "baselines.yaml",
            CONFIG_DIR / "published.yaml"]


def recorded_run(eval_out: str | Path | None, ablation_results: str | Path | None, *, profile: str | None = None,
                 seed: int | None = None) -> tuple[str, int]:
    """(profile, seed) for the stamp: what the evaluation result files record (else the ablation's), so a
    paper run re-rendered in reviewer mode is not stamped with a default; an explicit value must agree."""
    records = load_results(eval_out) if eval_out and Path(eval_out, "results").is_dir() else []
    if not records and ablation_results and Path(ablation_results).is_file():
        records = [json.loads(Path(ablation_results).read_text(encoding="utf-8"))]
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
    long = compare(fresh, published, ci, models=[m for m in fresh.columns if m in published.columns])
    long = long.reset_index()
    long.index = [f"{r} · {m}" for r, m in zip(long.pop("row"), long.pop("model"))]
    long.index.name = "Row · model"
    long.attrs.update(caption=f"This run vs the paper: {published.attrs.get('caption', '')}",
                      decimals=published.attrs.get("decimals", 2), rank=False, missing="–")
    return long


def table3_with_counts(eval_out: Path | None) -> pd.DataFrame:
    frame = published_table(3)
    if eval_out is None:
        return frame
    loaded = {r["benchmark"]: r["n"] for r in load_results(eval_out)}
    if loaded:
        from medkit.reporting.published import load_published

        rows = load_published().table3.rows
        frame = frame.copy()
        frame["Loaded (this run)"] = [" / ".join(str(loaded[b]) if b in loaded else "–" for b in r.benchmarks)
                                      for r in rows]
    return frame


def result_tables(eval_out: Path | None, tables_dir: Path, stamp: Stamp, done: Assembled) -> dict[str, pd.DataFrame]:
    """Tables 4-6 and the Figure 2 values; returns the fresh frames by table."""
    fresh_frames = {}
    found = eval_out is not None and (eval_out / "results").is_dir()
    for table in RESULT_TABLES:
        name = f"table{table}" if table != "figure2" else "figure2_values"
        published = published_table(table)
        fresh = results_frame(eval_out, table) if found else pd.DataFrame(index=published.index)
        if fresh.shape[1] == 0:
            done.missing[f"{name}_vs_paper"] = f"no evaluation results for it under {eval_out}"
            done.tables[name] = render_table(published, name, tables_dir, stamp)
            continue
        fresh_frames[table] = fresh
        done.tables[name] = render_table(with_fresh(published, fresh, stamp.profile), name, tables_dir, stamp)
        ci = results_ci_frame(eval_out, table)
        done.tables[f"{name}_vs_paper"] = render_table(comparison_frame(fresh, published, ci),
                                                        f"{name}_vs_paper", tables_dir, stamp)
    return fresh_frames


def assemble(*, eval_out: str | Path | None, ablation_results: str | Path | None, tables_dir: str | Path,
             figures_dir: str | Path, stamp: Stamp) -> Assembled:
    """Write every table and figure (see the module docstring); no model is loaded."""
    from medkit.reporting.figures import figure1, figure2

    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    eval_out = Path(eval_out) if eval_out is not None else None
    done = Assembled()
    done.tables["table1"] = render_table(table1(), "table1", tables_dir, stamp)
    done.tables["table2"] = render_table(table2(), "table2", tables_dir, stamp)
    done.tables["table3"] = render_table(table3_with_counts(eval_out), "table3", tables_dir, stamp)
    fresh = result_tables(eval_out, tables_dir, stamp, done)
    if ablation_results is not None and Path(ablation_results).is_file():
        done.tables["figure1_values"] = render_table(ablation_table(ablation_results), "figure1_values",
                                                     tables_dir, stamp)
        done.figures["figure1"] = figure1(ablation_results, figures_dir, stamp)
    else:
        done.missing["figure1"] = f"no encoder-ablation results at {ablation_results} (run notebook 02)"
    done.figures["figure2"] = figure2(figures_dir, fresh=fresh.get("figure2"), stamp=stamp)
    return done
