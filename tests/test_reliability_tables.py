"""A tables run is all or nothing, never leaves stale outputs, and names any bad input file.

Findings 7 (partial or stale outputs) and 10 (corrupt result files, two models under one column label,
the ablation JSON read without naming the file)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medkit.reporting.assemble import assemble, recorded_run, run_stamp
from medkit.reporting.tables import load_results, results_frame

FIXTURES = Path(__file__).parent / "fixtures" / "reporting"
EVAL_OUT = FIXTURES / "eval_out"
ABLATION = FIXTURES / "ablation_results.json"
FIRST_DAY, NEXT_DAY = "1767225600", "1767312000"  # 2026-01-01 and 2026-01-02 UTC: every stamp differs
USER_FILES = {"paper_tables/README.md": "# my tables\n", "paper_tables/.gitkeep": "",
              "paper_tables/table4_notes.md": "my notes on Table 4\n", "figures/README.md": "# figures\n",
              "figures/loss_pretrain.png": "a notebook's loss curve\n"}


def _assemble(out: Path, monkeypatch, eval_out=EVAL_OUT, ablation=ABLATION, day=FIRST_DAY):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", day)
    return assemble(eval_out=eval_out, ablation_results=ablation, tables_dir=out / "paper_tables",
                    figures_dir=out / "figures", stamp=run_stamp("tiny", 0))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _previous_run_with_user_files(out: Path, monkeypatch) -> dict[str, bytes]:
    _assemble(out, monkeypatch)
    for name, text in USER_FILES.items():
        (out / name).write_text(text)
    return _snapshot(out)


def _eval_copy(tmp_path: Path) -> Path:
    run = tmp_path / "eval"
    shutil.copytree(EVAL_OUT, run)
    return run


def _edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2))


def _staging_left(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if "staging" in p.name]


# ---------------------------------------------------------------- finding 7: partial or stale outputs

def test_finding_07a_result_without_metrics_changes_no_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _previous_run_with_user_files(out, monkeypatch)
    run = _eval_copy(tmp_path)
    slake = run / "results" / "medkit" / "slake.json"
    _edit(slake, lambda r: r.pop("metrics"))
    with pytest.raises(ValueError, match=re.escape(str(slake)) + ".*no 'metrics'"):
        _assemble(out, monkeypatch, eval_out=run, day=NEXT_DAY)
    assert _snapshot(out) == before  # Tables 1-3 not rewritten with the new date, 4-6 not left behind
    assert _staging_left(out) == []


def test_finding_07b_run_without_results_removes_the_previous_runs_outputs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _previous_run_with_user_files(out, monkeypatch)
    assert (out / "paper_tables" / "table4_vs_paper.md").is_file() and (out / "figures" / "figure1.png").is_file()
    done = _assemble(out, monkeypatch, eval_out=tmp_path / "evl", ablation=tmp_path / "none.json", day=NEXT_DAY)
    tables = {p.name for p in (out / "paper_tables").iterdir()}
    assert not [n for n in tables if "_vs_paper" in n or n.startswith("figure1_values")]
    assert not [p.name for p in (out / "figures").iterdir() if p.name.startswith("figure1")]
    written = {p.name for paths in done.tables.values() for p in paths.values()}
    user = {Path(n).name for n in USER_FILES if n.startswith("paper_tables/")}
    assert tables == written | user | {".medkit-outputs.json"}  # nothing else: no stale output at all
    assert "this run" not in (out / "paper_tables" / "table4.md").read_text()
    for name in USER_FILES:  # a user's files are never touched
        assert (out / name).read_bytes() == before[name]
    assert _staging_left(out) == []


def test_finding_07b_outputs_of_a_medkit_without_manifest_are_recognised(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _previous_run_with_user_files(out, monkeypatch)
    for folder in ("paper_tables", "figures"):  # as a medkit that kept no manifest left them
        (out / folder / ".medkit-outputs.json").unlink(missing_ok=True)
    _assemble(out, monkeypatch, eval_out=tmp_path / "evl", ablation=None, day=NEXT_DAY)
    assert sorted(p.name for p in (out / "paper_tables").glob("*_vs_paper.*")) == []
    assert sorted(p.name for p in (out / "figures").glob("figure1.*")) == []
    assert all((out / name).read_text() == text for name, text in USER_FILES.items())


def test_finding_07c_truncated_ablation_names_the_file_and_changes_no_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _previous_run_with_user_files(out, monkeypatch)
    truncated = tmp_path / "ablation" / "results.json"
    truncated.parent.mkdir()
    truncated.write_text(ABLATION.read_text()[:300])
    with pytest.raises(ValueError, match=re.escape(str(truncated)) + r".*not valid JSON.*line \d+, column \d+"):
        _assemble(out, monkeypatch, ablation=truncated, day=NEXT_DAY)
    assert _snapshot(out) == before
    assert _staging_left(out) == []


def test_finding_07_failure_while_rendering_changes_no_output(tmp_path, monkeypatch):
    import medkit.reporting.figures as figures

    out = tmp_path / "out"
    before = _previous_run_with_user_files(out, monkeypatch)

    def broken_figure2(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(figures, "figure2", broken_figure2)  # the last output: every table is written by then
    with pytest.raises(OSError, match="no space left"):
        _assemble(out, monkeypatch, day=NEXT_DAY)
    assert _snapshot(out) == before
    assert _staging_left(out) == []


def test_failure_while_swapping_in_puts_everything_back(tmp_path, monkeypatch):
    # guards the swap itself (HEAD had none: it wrote in place, see test_finding_07_failure_while_rendering_...)
    import os

    out = tmp_path / "out"
    before = _previous_run_with_user_files(out, monkeypatch)
    real_replace, calls = os.replace, []

    def replace_then_fail(source, target):
        calls.append(source)
        if len(calls) == 60:  # the previous outputs are moved aside, some new ones are in
            raise OSError("input/output error")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="input/output error"):
        _assemble(out, monkeypatch, day=NEXT_DAY)
    monkeypatch.undo()
    assert len(calls) > 60 and _snapshot(out) == before
    assert _staging_left(out) == []


def test_outputs_into_one_folder_and_a_new_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIRST_DAY)
    one = tmp_path / "new" / "deep" / "out"  # none of it exists yet
    done = assemble(eval_out=EVAL_OUT, ablation_results=ABLATION, tables_dir=one, figures_dir=one,
                    stamp=run_stamp("tiny", 0))
    assert done.figures["figure2"]["png"] == one / "figure2.png" and done.tables["table1"]["markdown"].is_file()
    manifest = json.loads((one / ".medkit-outputs.json").read_text())
    assert set(manifest["files"]) == {p.name for p in one.iterdir()} - {".medkit-outputs.json"}
    assert "figure1.pdf" in manifest["files"] and "table6_vs_paper.tex" in manifest["files"]
    assert _staging_left(tmp_path) == []


def test_failure_in_a_new_folder_leaves_no_folder_behind(tmp_path, monkeypatch):
    import medkit.reporting.figures as figures

    monkeypatch.setattr(figures, "figure2", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _assemble(tmp_path / "new" / "out", monkeypatch)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- finding 10: corrupt result files

def _drop(key):
    return lambda r: r.pop(key)


CORRUPT = {
    # name: (file under results/, how to corrupt it (text or a record edit), what the error must say)
    "invalid JSON": ("medkit/slake.json", '{"benchmark": "slake", oops}', r"not valid JSON.*line 1, column 24"),
    "truncated": ("medkit/slake.json", EVAL_OUT.joinpath("results/medkit/slake.json").read_text()[:120],
                  r"not valid JSON .truncated or corrupt\?.*line \d+, column \d+"),
    "empty": ("medkit/slake.json", "", r"not valid JSON.*line 1, column 1"),
    "not an object": ("medkit/slake.json", "[1, 2]", "the file must be a JSON object, found an array"),
    "not UTF-8": ("medkit/slake.json", b"\xff\xfe{}", "not UTF-8"),
    "no benchmark": ("medkit/slake.json", _drop("benchmark"), "no 'benchmark'"),
    "no model": ("octomed-7b/slake.json", _drop("model"), "no 'model'"),
    "no n": ("medkit/slake.json", _drop("n"), "no 'n'"),
    "metrics a string": ("medkit/slake.json", lambda r: r.update(metrics="0.42"),
                         "'metrics' must be an object, found a string"),
    "accuracy a string": ("medkit/slake.json", lambda r: r["metrics"].update(accuracy="42%"),
                          "'accuracy' in 'metrics' must be a number or null, found a string"),
    "ci a list": ("medkit/medframeqa.json", lambda r: r["metrics"].update(ci_low=[0.1]),
                  "'ci_low' in 'metrics' must be a number or null, found an array"),
    "metric entry a number": ("medkit/mimic_cxr_report.json", lambda r: r["metrics"].update(ratescore=0.31),
                              "'ratescore' in 'metrics' must be an object, found a number"),
    "metric value a string": ("medkit/impression_0shot.json",
                              lambda r: r["metrics"]["ratescore"].update(value="high"),
                              r"'value' in 'metrics.ratescore' must be a number or null, found a string"),
    "n a string": ("medkit/slake.json", lambda r: r.update(n="50"), "'n' must be an integer, found a string"),
    "seed a list": ("medkit/slake.json", lambda r: r.update(seed=[0]), "'seed' must be an integer or null"),
}


def _corrupt(tmp_path: Path, case: str) -> Path:
    relative, damage, _ = CORRUPT[case]
    path = _eval_copy(tmp_path) / "results" / relative
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    elif isinstance(damage, str):
        path.write_text(damage)
    else:
        _edit(path, damage)
    return path


@pytest.mark.parametrize("case", list(CORRUPT))
def test_finding_10_corrupt_result_file_is_named_before_any_output(tmp_path, monkeypatch, case):
    path = _corrupt(tmp_path, case)
    expected = re.escape(str(path)) + ": .*" + CORRUPT[case][2]
    with pytest.raises(ValueError, match=expected):
        load_results(tmp_path / "eval")
    with pytest.raises(ValueError, match=expected):
        _assemble(tmp_path / "out", monkeypatch, eval_out=tmp_path / "eval")
    assert not (tmp_path / "out").exists()  # not one table written


def test_finding_10_cli_prints_the_bad_file(tmp_path, capsys):
    from medkit.cli import main

    path = _corrupt(tmp_path, "truncated")
    rc = main(["tables", "--eval-out", str(tmp_path / "eval"), "--ablation", str(ABLATION),
               "--tables-dir", str(tmp_path / "t"), "--figures-dir", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"medkit tables: error: {path}: not valid JSON"), err
    assert re.search(r"line \d+, column \d+", err)
    assert not (tmp_path / "t").exists() and not (tmp_path / "f").exists()


def test_finding_10_ablation_without_what_figure1_reads_is_named(tmp_path, monkeypatch):
    ablation = tmp_path / "results.json"
    data = json.loads(ABLATION.read_text())
    del data["encoders"][1]["heldout_loss"]["mean"]
    ablation.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(str(ablation)) + r": no 'mean' in encoders\[1\].heldout_loss"):
        _assemble(tmp_path / "out", monkeypatch, ablation=ablation)
    assert not (tmp_path / "out").exists()


def test_finding_10_recorded_run_names_a_truncated_ablation(tmp_path):
    ablation = tmp_path / "results.json"
    ablation.write_text(ABLATION.read_text()[:200])
    with pytest.raises(ValueError, match=re.escape(str(ablation)) + r": not valid JSON.*line \d+, column \d+"):
        recorded_run(tmp_path / "no_eval", ablation)


def test_finding_10_recorded_run_names_a_corrupt_result(tmp_path):
    path = _corrupt(tmp_path, "not an object")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        recorded_run(tmp_path / "eval", None)


# ---------------------------------------------------------------- finding 10: two models, one column label

def _second_medgpt(tmp_path: Path) -> Path:
    """The fixture run plus the released MedGPT-OSS weights on SLAKE: two models the paper calls MedGPT-OSS."""
    run = _eval_copy(tmp_path)
    released = run / "results" / "medgpt-oss-20b" / "slake.json"
    released.parent.mkdir()
    shutil.copy(run / "results" / "medkit" / "slake.json", released)
    _edit(released, lambda r: (r.update(model="medgpt-oss-20b"),
                               r["metrics"].update(accuracy=0.6, ci_low=0.45, ci_high=0.73)))
    return run


def test_finding_10_two_models_under_one_label_keep_their_own_columns(tmp_path, monkeypatch):
    run = _second_medgpt(tmp_path)
    frame = results_frame(run, "4")
    assert list(frame.columns) == ["MedGPT-OSS [medgpt-oss-20b]", "MedGPT-OSS [medkit]", "OctoMed"]
    assert frame.loc["SLAKE"].tolist() == pytest.approx([60.0, 42.0, 50.0])
    done = _assemble(tmp_path / "out", monkeypatch, eval_out=run)
    md = done.tables["table4"]["markdown"].read_text()
    assert "MedGPT-OSS [medkit] (this run, tiny)" in md and "MedGPT-OSS [medgpt-oss-20b] (this run, tiny)" in md
    slake = next(line for line in md.splitlines() if line.startswith("| SLAKE "))
    assert slake.endswith("| 60.00 | 42.00 | 50.00 |")
    compared = done.tables["table4_vs_paper"]["csv"].read_text()  # both against the paper's MedGPT-OSS
    assert "SLAKE · MedGPT-OSS [medgpt-oss-20b],60.00,71.53,-11.53,45.00,73.00" in compared
    assert "SLAKE · MedGPT-OSS [medkit],42.00,71.53,-29.53,30.00,56.00" in compared
    medframe = next(line for line in md.splitlines() if line.startswith("| MedFrameQA "))
    assert medframe.endswith("| not run | 25.00 | not run |")  # one model's results never fill another's


def test_finding_10_two_files_for_one_model_and_benchmark_are_refused(tmp_path, monkeypatch):
    run = _eval_copy(tmp_path)
    shutil.copytree(run / "results" / "medkit", run / "results" / "medkit-copy")  # 'model' still says medkit
    expected = (re.escape(str(run / "results" / "medkit" / "impression_0shot.json")) + " and "
                + re.escape(str(run / "results" / "medkit-copy" / "impression_0shot.json")))
    with pytest.raises(ValueError, match=expected + ".*model 'medkit' on benchmark 'impression_0shot'"):
        _assemble(tmp_path / "out", monkeypatch, eval_out=run)
    assert not (tmp_path / "out").exists()


def test_extra_result_fields_and_default_folder_names_are_fine(tmp_path, monkeypatch):
    run = _eval_copy(tmp_path)
    (run / "results" / "medkit").rename(run / "results" / "instruct-model-1a2b3c4d")
    for path in (run / "results" / "instruct-model-1a2b3c4d").glob("*.json"):
        if not path.name.endswith(".items.json"):
            _edit(path, lambda r: r.update(model="instruct-model-1a2b3c4d", weights={"sha256": "ab" * 32},
                                           fingerprint="1a2b3c4d", profile="tiny", seed=0))
    done = _assemble(tmp_path / "out", monkeypatch, eval_out=run)
    md = done.tables["table4"]["markdown"].read_text()
    assert "instruct-model-1a2b3c4d (this run, tiny)" in md
    assert recorded_run(run, ABLATION) == ("tiny", 0)


def test_an_evaluations_staging_folder_is_not_read(tmp_path, monkeypatch):
    run = _eval_copy(tmp_path)
    staging = run / "results" / ".medkit.staging-1a2b3c4d"  # where the eval runner stages a run's results
    shutil.copytree(run / "results" / "medkit", staging)
    (staging / "slake.json").write_text('{"benchmark": "sla')  # unfinished
    assert len(load_results(run)) == len(load_results(EVAL_OUT))
    done = _assemble(tmp_path / "out", monkeypatch, eval_out=run)
    assert "MedGPT-OSS (this run, tiny)" in done.tables["table4"]["markdown"].read_text()
