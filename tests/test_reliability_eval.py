"""Reliability of `medkit eval` and the CLI under bad input and faults (issue 13, findings 1-3, 7, 9-12).

Each test is named after the finding it guards and fails on the code before the fix: it reproduces
what a careless or hostile user did and asserts what the kit must do instead.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from medkit.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
EVAL = ["--max-new-tokens", "4", "--batch-size", "2"]


@pytest.fixture
def data_root(tmp_path):
    """A native data root holding MedQA's release layout (the 3-row fixture)."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURES / "medqa", root / "medqa")
    return root


def eval_args(model, data_root, out, *extra):
    return ["eval", "--model", str(model), "--benchmarks", "medqa", "--data-root", str(data_root),
            "--out", str(out), *EVAL, *extra]


def written_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def other_weights(checkpoint: Path, target: Path) -> Path:
    """A copy of ``checkpoint`` with one weight changed: another model that saves to the same folder name."""
    shutil.copytree(checkpoint, target)
    (weights,) = target.glob("*.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    return target


# ---------------------------------------------------------------------------------------------- 1


def test_finding_01_rescore_refuses_predictions_of_changed_data(tmp_path, tiny_checkpoint, data_root, capsys):
    out = tmp_path / "eval"
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 0
    test_file = data_root / "medqa" / "test.jsonl"
    lines = test_file.read_text().splitlines(keepends=True)
    test_file.write_text("".join(lines[1:]))  # MedQA ids are row numbers: every later question moves up
    capsys.readouterr()
    assert main(eval_args(tiny_checkpoint, data_root, out, "--rescore")) == 2
    err = capsys.readouterr().err
    assert "medqa-00000" in err and "medqa-00001" in err and "changed" in err
    assert main(eval_args(tiny_checkpoint, data_root, out, "--resume")) == 2
    assert "changed" in capsys.readouterr().err
    assert main(eval_args(tiny_checkpoint, data_root, out, "--dry-run")) == 2  # the plan says so too
    assert "changed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 2

HOLD_IN_GENERATE = """
import sys, time, pathlib
from medkit.eval import adapters
real = adapters.MedkitAdapter.generate
def held(self, items, settings):
    pathlib.Path(sys.argv[1]).write_text("decoding")
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.05)
    return real(self, items, settings)
adapters.MedkitAdapter.generate = held
from medkit.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_finding_02_a_second_writer_on_one_store_fails_at_once_and_writes_nothing(tmp_path, tiny_checkpoint,
                                                                                   data_root, capsys):
    out, started, release = tmp_path / "eval", tmp_path / "started", tmp_path / "release"
    first = subprocess.Popen([sys.executable, "-c", HOLD_IN_GENERATE, str(started), str(release),
                              *eval_args(tiny_checkpoint, data_root, out)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert main(eval_args(tiny_checkpoint, data_root, out)) == 2
        err = capsys.readouterr().err
        assert "another medkit eval" in err and str(first.pid) in err
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        release.write_text("go")
        output = first.communicate(timeout=180)[0]
    assert first.returncode == 0, output
    (store,) = out.glob("predictions/*/medqa/*[0-9a-f].jsonl")
    assert len(store.read_text().splitlines()) == 3  # one line per id, not two runs' worth
    assert main(eval_args(tiny_checkpoint, data_root, out, "--rescore")) == 0


# ---------------------------------------------------------------------------------------------- 3


def test_finding_03_results_of_two_checkpoints_in_folders_named_model_stay_apart(tmp_path, tiny_checkpoint,
                                                                                  data_root):
    instruct = tmp_path / "train" / "instruct" / "model"
    shutil.copytree(tiny_checkpoint, instruct)
    pretrain = other_weights(tiny_checkpoint, tmp_path / "train" / "pretrain" / "model")
    out = tmp_path / "eval"
    assert main(eval_args(instruct, data_root, out)) == 0
    assert main(eval_args(pretrain, data_root, out, "--limit", "1")) == 0
    results = sorted(out.glob("results/*/medqa.json"))
    assert len(results) == 2
    records = [json.loads(p.read_text()) for p in results]
    assert sorted(r["n"] for r in records) == [1, 3]  # the instruct model's 3 items were not replaced
    assert len({r["weights_sha256"] for r in records}) == 2
    assert all(r["model"] != "model" for r in records)  # a readable name, not the folder every stage shares


def test_finding_03_a_given_name_is_not_reused_for_other_weights(tmp_path, tiny_checkpoint, data_root, capsys):
    pretrain = other_weights(tiny_checkpoint, tmp_path / "pretrain" / "model")
    out = tmp_path / "eval"
    assert main(eval_args(tiny_checkpoint, data_root, out, "--name", "medgpt")) == 0
    before = (out / "results" / "medgpt" / "medqa.json").read_bytes()
    capsys.readouterr()
    assert main(eval_args(pretrain, data_root, out, "--name", "medgpt")) == 2
    assert "other weights" in capsys.readouterr().err
    assert (out / "results" / "medgpt" / "medqa.json").read_bytes() == before
    assert main(eval_args(pretrain, data_root, out, "--name", "medgpt", "--replace")) == 0
    assert json.loads((out / "results" / "medgpt" / "medqa.json").read_text())["weights_sha256"] != \
        json.loads(before)["weights_sha256"]


# ---------------------------------------------------------------------------------------------- 7


def test_finding_07_a_full_disk_leaves_no_half_result_and_no_stray_tmp(tmp_path, tiny_checkpoint, data_root,
                                                                       monkeypatch, capsys):
    out = tmp_path / "eval"
    real_write = Path.write_text

    def disk_full_on_items(self, *args, **kwargs):
        if ".items." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_on_items)
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    results = [p.name for p in out.glob("results/*/*")]
    assert results == []  # neither medqa.json without medqa.items.json nor a .tmp
    assert main(eval_args(tiny_checkpoint, data_root, out, "--resume")) == 0  # the store survived: rescore it
    assert sorted(p.name for p in out.glob("results/*/*")) == ["medqa.items.json", "medqa.json"]


# ---------------------------------------------------------------------------------------------- 9


@pytest.mark.parametrize("selection", ["table7", "figure3"])
def test_finding_09_an_unknown_table_name_is_an_error(tmp_path, tiny_checkpoint, selection, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", selection, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert selection in err and "table4" in err
    assert written_files(out) == []


# ---------------------------------------------------------------------------------------------- 10


def corrupt_middle_line(store: Path, text: str) -> None:
    lines = store.read_text().splitlines(keepends=True)
    lines[1] = text + "\n"
    store.write_text("".join(lines))


@pytest.mark.parametrize("bad_line", ['{"id": "medqa-00001", "prompt_hash": "0a1b", "raw": "<|chan',
                                      '{"id": "medqa-00001", "raw": "x"}', '[1, 2]'])
def test_finding_10_a_corrupt_store_line_names_file_and_line_and_the_repair(tmp_path, tiny_checkpoint, data_root,
                                                                            bad_line, capsys):
    out = tmp_path / "eval"
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 0
    (store,) = out.glob("predictions/*/medqa/*[0-9a-f].jsonl")
    corrupt_middle_line(store, bad_line)
    capsys.readouterr()
    for flag in ("--rescore", "--resume"):
        assert main(eval_args(tiny_checkpoint, data_root, out, flag)) == 2
        err = capsys.readouterr().err
        assert f"{store} line 2" in err and "--resume" in err and "Traceback" not in err


def test_finding_10_a_non_utf8_store_names_file_and_line(tmp_path, tiny_checkpoint, data_root, capsys):
    out = tmp_path / "eval"
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 0
    (store,) = out.glob("predictions/*/medqa/*[0-9a-f].jsonl")
    data = store.read_bytes().split(b"\n")
    data[2] = data[2][:20] + b"\xff\xfe" + data[2][20:]
    store.write_bytes(b"\n".join(data))
    capsys.readouterr()
    assert main(eval_args(tiny_checkpoint, data_root, out, "--rescore")) == 2
    assert f"{store} line 3" in capsys.readouterr().err


def test_finding_10_a_damaged_key_file_is_named(tmp_path, tiny_checkpoint, data_root, capsys):
    out = tmp_path / "eval"
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 0
    (key,) = out.glob("predictions/*/medqa/*.key.json")
    key.write_text("{bad")
    capsys.readouterr()
    assert main(eval_args(tiny_checkpoint, data_root, out, "--resume")) == 2
    assert f"{key}: damaged key file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 11


def exit_code(args) -> int:
    """main's return value, or the code argparse exits with for a value it refuses."""
    try:
        return main(args)
    except SystemExit as e:
        return e.code


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load weights fails the test: settings must be checked before that."""
    import medkit.model.build

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(medkit.model.build, "load_model", refuse)


@pytest.mark.parametrize("flag", [["--batch-size", "0"], ["--batch-size", "-2"], ["--max-new-tokens", "0"],
                                  ["--limit", "0"], ["--nproc", "0"]])
def test_finding_11_bad_settings_fail_before_the_model_loads_and_write_nothing(tmp_path, tiny_checkpoint, data_root,
                                                                               no_model_load, flag, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medqa", "--data-root", str(data_root),
            "--out", str(out), *flag]
    assert exit_code(args) == 2
    assert flag[0] in capsys.readouterr().err
    assert written_files(out) == []


def test_finding_11_missing_native_data_is_found_before_anything_is_decoded(tmp_path, tiny_checkpoint, data_root,
                                                                            no_model_load, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medqa", "mmmu_med", "--data-root", str(data_root),
            "--out", str(out), *EVAL]
    assert main(args) == 2
    assert str(data_root / "mmmu") in capsys.readouterr().err
    assert written_files(out) == []


# ---------------------------------------------------------------------------------------------- 12


def test_finding_12_output_path_that_is_a_file_is_a_cli_error(tmp_path, tiny_checkpoint, data_root, capsys):
    out = tmp_path / "eval"
    out.write_text("not a folder")
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("medkit eval: error:") and str(out) in err and "Traceback" not in err


@pytest.mark.parametrize("code,text", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left")])
def test_finding_12_file_system_errors_are_cli_errors(tmp_path, tiny_checkpoint, data_root, monkeypatch, capsys,
                                                      code, text):
    import medkit.eval.store

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(medkit.eval.store.os, "fsync", failing_fsync)
    out = tmp_path / "eval"
    assert main(eval_args(tiny_checkpoint, data_root, out)) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith("medkit eval: error:") and text in line and "Traceback" not in err
    assert str(next(out.glob("predictions/*/medqa/*[0-9a-f].jsonl"))) in line  # names the store it wrote


def test_finding_12_a_truncated_safetensors_file_is_named_before_the_model_loads(tmp_path, tiny_checkpoint,
                                                                                 data_root, no_model_load, capsys):
    broken = tmp_path / "broken" / "model"
    shutil.copytree(tiny_checkpoint, broken)
    (weights,) = broken.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "eval"
    assert main(eval_args(broken, data_root, out)) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "truncated" in err
    assert written_files(out) == []


def test_finding_12_a_bad_params_yaml_is_a_cli_error(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("limit: [1, 2\nprofile: tiny\n")
    assert main(["notebooks", "--params", str(params), "--only", "01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medkit notebooks: error:") and str(params) in err and "line" in err


def test_resume_and_rescore_together_are_refused(tmp_path, tiny_checkpoint, data_root, capsys):
    assert main(eval_args(tiny_checkpoint, data_root, tmp_path / "eval", "--resume", "--rescore")) == 2
    assert "pass one of them" in capsys.readouterr().err and not (tmp_path / "eval").exists()


def test_finding_12_debug_shows_the_traceback(tmp_path, tiny_checkpoint, data_root, capsys):
    out = tmp_path / "eval"
    out.write_text("not a folder")
    with pytest.raises(OSError):
        main(["--debug", *eval_args(tiny_checkpoint, data_root, out)])
