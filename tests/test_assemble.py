"""Reviewer mode: every table and figure from result files alone, stamped, byte-identical on a rerun."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medkit.notebook.params import notebook_parameters
from medkit.reporting.assemble import assemble, run_stamp, with_fresh
from medkit.reporting.published import published_table
from medkit.reporting.tables import results_frame, to_markdown

FIXTURES = Path(__file__).parent / "fixtures" / "reporting"
EVAL_OUT = FIXTURES / "eval_out"
ABLATION = FIXTURES / "ablation_results.json"
PRINTED = json.loads((FIXTURES / "paper_printed.json").read_text(encoding="utf-8"))
NUMBER = re.compile(r"\d+\.\d+")
PINNED_DATE = "1767225600"  # 2026-01-01 UTC


def _assemble(out: Path, monkeypatch, ablation=ABLATION, eval_out=EVAL_OUT):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", PINNED_DATE)
    return assemble(eval_out=eval_out, ablation_results=ablation, tables_dir=out / "paper_tables",
                    figures_dir=out / "figures", stamp=run_stamp("tiny", 0))


def test_every_table_and_figure_is_written_with_a_stamp(tmp_path, monkeypatch):
    done = _assemble(tmp_path, monkeypatch)
    assert {"table1", "table2", "table3", "table4", "table5", "table6", "figure2_values", "figure1_values",
            "table4_vs_paper", "table6_vs_paper", "figure2_values_vs_paper"} <= set(done.tables)
    assert set(done.figures) == {"figure1", "figure2"}
    assert set(done.missing) == {"table5_vs_paper"}  # the fixture run has no Table 5 benchmark
    for paths in done.tables.values():
        assert set(paths) == {"markdown", "latex", "csv", "provenance"}
        stamp = json.loads(paths["provenance"].read_text())
        assert stamp["profile"] == "tiny" and stamp["seed"] == 0 and stamp["date"] == "2026-01-01"
        assert len(stamp["config_hash"]) == 64 and stamp["git_commit"]
        assert "medkit provenance:" in paths["markdown"].read_text()
    for paths in done.figures.values():
        assert paths["png"].read_bytes().startswith(b"\x89PNG") and paths["pdf"].read_bytes().startswith(b"%PDF")


def test_published_columns_stay_exact_and_fresh_columns_are_not_ranked(tmp_path, monkeypatch):
    done = _assemble(tmp_path, monkeypatch)
    md = done.tables["table4"]["markdown"].read_text()
    body = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert "MedGPT-OSS (this run, tiny)" in md.splitlines()[2]
    for printed, line in zip(PRINTED["table4"], body):
        assert NUMBER.findall(line)[:6] == printed  # the paper's six columns, then the fresh ones
    slake = next(line for line in body if line.startswith("| SLAKE "))
    assert slake.endswith("| 42.00 | 50.00 |")  # fresh values shown plain: never bold/underlined
    assert "| MMMU-Med (dev) |" in md and "not run" in md  # benchmarks the run skipped
    compare_csv = done.tables["table4_vs_paper"]["csv"].read_text()
    assert "SLAKE · MedGPT-OSS,42.00,71.53,-29.53,30.00,56.00" in compare_csv


def test_fresh_ranking_ignores_appended_columns():
    published = published_table(4)
    fresh = results_frame(EVAL_OUT, "4").astype(object)
    fresh.loc["SLAKE", "MedGPT-OSS"] = 99.0  # would be first if it competed
    md = to_markdown(with_fresh(published, fresh, "tiny"))
    slake = next(line for line in md.splitlines() if line.startswith("| SLAKE "))
    assert "**72.24**" in slake and "<u>71.53</u>" in slake and "| 99.00 |" in slake


def test_rerun_is_byte_identical(tmp_path, monkeypatch):
    first = _assemble(tmp_path / "a", monkeypatch)
    second = _assemble(tmp_path / "b", monkeypatch)
    files = lambda done: {f"{n}.{k}": p.read_bytes() for group in (done.tables, done.figures)  # noqa: E731
                          for n, paths in group.items() for k, p in paths.items()}
    one, two = files(first), files(second)
    assert one.keys() == two.keys() and len(one) > 40
    assert [k for k in one if one[k] != two[k]] == []


def test_missing_results_are_reported_not_invented(tmp_path, monkeypatch):
    done = _assemble(tmp_path, monkeypatch, ablation=tmp_path / "none.json", eval_out=tmp_path / "no_eval")
    assert "figure1" not in done.figures and "run notebook 02" in done.missing["figure1"]
    md = done.tables["table4"]["markdown"].read_text()
    assert "this run" not in md  # the published table alone
    assert [NUMBER.findall(line) for line in md.splitlines() if line.startswith("| ")][1:] == PRINTED["table4"]
    assert "figure2" in done.figures  # the published bars still draw
    audit = done.tables["claims_audit"]  # reviewer mode's audit needs the published numbers alone
    assert set(audit) == {"markdown", "latex", "csv", "provenance"}
    assert "Sec. 4.4 · mmmu_pro4_gap" in audit["csv"].read_text() and "n/c [1]" in audit["markdown"].read_text()
    assert "Lingshu-32B · SLAKE" in done.tables["cross_paper"]["markdown"].read_text()
    rules = done.tables["scoring_protocols"]["markdown"].read_text()  # reviewer mode: the rule per benchmark
    assert "| MMMU-Med (dev) | MMMU parser (random fallback) |" in rules and "No fresh results" in rules
    assert "claims_audit_fresh" not in done.tables and "two or more models" in done.missing["claims_audit_fresh"]


def test_reviewer_cli_needs_no_model(tmp_path):
    code = (
        "import sys\n"
        "from medkit.cli import main\n"
        f"rc = main(['tables', '--eval-out', {str(EVAL_OUT)!r}, '--ablation', {str(ABLATION)!r},\n"
        f"           '--tables-dir', {str(tmp_path / 't')!r}, '--figures-dir', {str(tmp_path / 'f')!r}])\n"
        "loaded = [m for m in ('medkit.model.build', 'medkit.eval.adapters', 'deepspeed') if m in sys.modules]\n"
        "assert rc == 0 and not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "table6_vs_paper" in done.stdout
    assert (tmp_path / "t" / "table1.tex").is_file() and (tmp_path / "f" / "figure2.pdf").is_file()


def test_smoke_notebooks_write_tables_inside_their_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("MEDKIT_SMOKE", "1")
    params = notebook_parameters({"tables_dir": "paper_tables", "figures_dir": "figures"})
    assert params.tables == tmp_path / "run" / "paper_tables" and params.figures == tmp_path / "run" / "figures"
    monkeypatch.delenv("MEDKIT_SMOKE")
    params = notebook_parameters({"tables_dir": "paper_tables"})
    assert params.tables.name == "paper_tables" and params.tables.parent != tmp_path / "run"


def test_compare_with_paper_reads_the_run(tmp_path):
    from medkit.notebook.evaluation import compare_with_paper

    shutil.copytree(EVAL_OUT, tmp_path / "eval")
    params = notebook_parameters({"run_dir": str(tmp_path)})
    cmp = compare_with_paper(params, "4")
    assert cmp.loc[("SLAKE", "MedGPT-OSS"), "published"] == 71.53
    assert cmp.loc[("SLAKE", "MedGPT-OSS"), "fresh"] == pytest.approx(42.0)


def test_stamp_takes_profile_and_seed_from_the_result_files(tmp_path):
    from medkit.reporting.assemble import recorded_run

    assert recorded_run(EVAL_OUT, ABLATION) == ("tiny", 0)  # fixture results predate the fields: defaults
    run = tmp_path / "eval"
    shutil.copytree(EVAL_OUT, run)
    for path in (run / "results").glob("*/*.json"):
        if not path.name.endswith(".items.json"):
            record = json.loads(path.read_text())
            path.write_text(json.dumps(record | {"profile": "paper", "seed": 7}))
    assert recorded_run(run, None) == ("paper", 7)
    assert recorded_run(run, None, profile="paper", seed=7) == ("paper", 7)
    with pytest.raises(ValueError, match="--profile 'tiny' but the result files record 'paper'"):
        recorded_run(run, None, profile="tiny")
    slake = run / "results" / "medkit" / "slake.json"
    slake.write_text(json.dumps(json.loads(slake.read_text()) | {"seed": 8}))
    with pytest.raises(ValueError, match=r"several seeds: \[7, 8\]"):
        recorded_run(run, None)
