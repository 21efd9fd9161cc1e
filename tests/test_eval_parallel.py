"""Data-parallel evaluation, device placement, generation budgets and profile inference (tiny profile, CPU)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from medkit.cli import main
from medkit.data.synthetic import generate_corpus
from medkit.eval.adapters import checkpoint_dtype, checkpoint_profile
from medkit.eval.benchmarks import GENERATION_BUDGET, get_benchmark, load_benchmark
from medkit.eval.parallel import AdapterSource, EvalRankError, open_adapter
from medkit.eval.placement import PlacementError, model_placement, split_devices
from medkit.eval.runner import EvalRequest, run_eval, store_key
from medkit.model.build import load_model
from medkit.profiles import load_profile

SIZES = {"caption": 5, "report_long": 10, "report": 10, "vqa_mc": 120, "text_mc": 120, "reasoning": 5,
         "trial": 10, "impression": 10}
BENCHMARKS = ["medqa", "slake", "mimic_cxr_report"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel_corpus")
    generate_corpus(root, seed=0, sizes=SIZES)
    return root


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def request(out, corpus, **kw):
    return EvalRequest(benchmarks=kw.pop("benchmarks", BENCHMARKS), out_dir=out, corpus_dir=corpus,
                       limit=kw.pop("limit", 10), max_new_tokens=kw.pop("max_new_tokens", 6), batch_size=3,
                       n_boot=100, **kw)


def stored(out, benchmark):
    """The merged store of one benchmark as {id: line}, and the shard files left beside it."""
    folder = next((out / "predictions").glob(f"*/{benchmark}"))
    (main_file,) = [p for p in folder.glob("*.jsonl") if ".rank" not in p.name]
    lines = [json.loads(line) for line in main_file.read_text().splitlines()]
    return {line["id"]: line for line in lines}, sorted(folder.glob("*.rank*.jsonl"))


def test_two_ranks_give_the_predictions_and_results_of_one_process(tmp_path, corpus, checkpoint):
    adapter = open_adapter(AdapterSource(str(checkpoint)))
    single = run_eval(adapter, request(tmp_path / "one", corpus), progress=False)
    sharded = run_eval(adapter, request(tmp_path / "two", corpus, nproc=2), progress=False)
    for name in BENCHMARKS:
        one, _ = stored(tmp_path / "one", name)
        two, shards = stored(tmp_path / "two", name)
        assert two == one and not shards  # same lines, every shard folded in
    assert [r["metrics"] for r in sharded] == [r["metrics"] for r in single]
    for name in BENCHMARKS:  # per-item files identical too
        (two_items,) = (tmp_path / "two/results").glob(f"*/{name}.items.json")
        (one_items,) = (tmp_path / "one/results").glob(f"*/{name}.items.json")
        assert two_items.read_text() == one_items.read_text()
    logs = sorted((tmp_path / "two/parallel").glob("rank*.log"))
    assert [p.name for p in logs] == ["rank0.log", "rank1.log"]


def test_a_killed_two_rank_run_resumes_on_one_rank_and_the_reverse(tmp_path, corpus, checkpoint):
    reference_out = tmp_path / "reference"
    run_eval(open_adapter(AdapterSource(str(checkpoint))), request(reference_out, corpus, benchmarks=["medqa"],
                                                                    limit=30), progress=False)
    reference, _ = stored(reference_out, "medqa")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medkit", "eval", "--model", str(checkpoint), "--benchmarks", "medqa",
           "--corpus", str(corpus), "--out", str(out), "--limit", "30", "--max-new-tokens", "6",
           "--batch-size", "3", "--nproc", "2"]
    run = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        if sum(p.read_bytes().count(b"\n") for p in out.glob("predictions/*/medqa/*.rank*.jsonl")) >= 3:
            break
        time.sleep(0.05)
    assert run.poll() is None, "the 2-rank run finished before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)  # the parent and both ranks, mid-run
    run.wait()
    assert list(out.glob("predictions/*/medqa/*.rank*.jsonl"))  # partial shards left behind
    assert main(cmd[3:-2] + ["--nproc", "1", "--resume"]) == 0
    resumed, shards = stored(out, "medqa")
    assert resumed == reference and not shards

    # the reverse: a run cut short on one rank continues on two
    out2 = tmp_path / "cut"
    partial = dict(list(reference.items())[:7])
    run_eval(open_adapter(AdapterSource(str(checkpoint))), request(out2, corpus, benchmarks=["medqa"], limit=1),
             progress=False)  # creates the store and its key file (a 1-item run of the same key)
    store_file = next(p for p in out2.glob("predictions/*/medqa/*.jsonl") if ".rank" not in p.name)
    store_file.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in partial.values()))
    run_eval(open_adapter(AdapterSource(str(checkpoint))),
             request(out2, corpus, benchmarks=["medqa"], limit=30, nproc=2, resume=True), progress=False)
    assert stored(out2, "medqa")[0] == reference


def test_a_failing_rank_is_reported_with_its_log_and_the_store_stays_usable(tmp_path, corpus, checkpoint):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    adapter = open_adapter(AdapterSource(str(broken)))
    adapter.fingerprint()  # the parent keys the store; then the weights vanish before the ranks load them
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(EvalRankError, match=r"eval rank \d exited with code [1-9].*--resume") as error:
        run_eval(adapter, request(tmp_path / "out", corpus, benchmarks=["medqa"], nproc=2), progress=False)
    assert "  | " in str(error.value)  # the end of the rank's log is quoted


def test_nproc_needs_an_adapter_the_ranks_can_rebuild(tmp_path, corpus, checkpoint):
    from medkit.eval.adapters import MedkitAdapter

    adapter = MedkitAdapter.load(checkpoint)
    with pytest.raises(ValueError, match="ranks cannot rebuild it"):
        run_eval(adapter, request(tmp_path, corpus, benchmarks=["medqa"], nproc=2), progress=False)


# --------------------------------------------------------------------------------- generation budgets

class KeyOnly:
    name = "keyed"

    def fingerprint(self):
        return {"model": "stub"}


def test_each_benchmark_has_its_own_budget_in_the_store_key(corpus):
    mc, report = (load_benchmark(n, corpus_dir=corpus, limit=2) for n in ("medqa", "mimic_cxr_report"))
    plain = EvalRequest(benchmarks=["medqa", "mimic_cxr_report"], out_dir=corpus)
    assert store_key(KeyOnly(), mc, plain)["decode"]["max_new_tokens"] == GENERATION_BUDGET["mc"] == 2048
    assert store_key(KeyOnly(), report, plain)["decode"]["max_new_tokens"] == GENERATION_BUDGET["report"]
    assert get_benchmark("patient_trial_1shot").max_new_tokens == GENERATION_BUDGET["mc"]
    override = EvalRequest(benchmarks=["medqa"], out_dir=corpus, max_new_tokens=300)
    assert store_key(KeyOnly(), mc, override)["decode"]["max_new_tokens"] == 300
    assert override.budget(mc.benchmark) == (300, "override")
    profiled = EvalRequest(benchmarks=["medqa"], out_dir=corpus, profile_max_new_tokens=64)
    assert profiled.budget(mc.benchmark) == (64, "profile")


def test_results_record_the_budget_and_where_it_came_from(tmp_path, corpus, checkpoint):
    adapter = open_adapter(AdapterSource(str(checkpoint)))
    (result,) = run_eval(adapter, request(tmp_path / "a", corpus, benchmarks=["medqa"], limit=3), progress=False)
    assert (result["max_new_tokens"], result["max_new_tokens_from"]) == (6, "override")
    (result,) = run_eval(adapter, request(tmp_path / "b", corpus, benchmarks=["medqa"], limit=3,
                                          max_new_tokens=None), progress=False)
    assert (result["max_new_tokens"], result["max_new_tokens_from"]) == (64, "profile")  # tiny.yaml's eval
    assert result["profile"] == "tiny"  # inferred from the checkpoint


def test_bad_eval_settings_fail_before_anything_is_loaded(tmp_path):
    for bad in ({"batch_size": 0}, {"batch_size": -2}, {"max_new_tokens": 0}, {"nproc": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EvalRequest(benchmarks=["medqa"], out_dir=tmp_path, **bad)


def test_unknown_benchmark_options_are_refused_naming_the_option(tmp_path, corpus):
    req = EvalRequest(benchmarks=["medqa"], out_dir=tmp_path, corpus_dir=corpus, options={"medqa": {"lang": "en"}})
    with pytest.raises(ValueError, match="no option 'lang'"):
        run_eval(KeyOnly(), req, progress=False)
    with pytest.raises(ValueError, match="not among the selected"):
        run_eval(KeyOnly(), EvalRequest(benchmarks=["medqa"], out_dir=tmp_path, corpus_dir=corpus,
                                        options={"slake": {}}), progress=False)


# ---------------------------------------------------------------------------- profile, dtype, placement

def test_profile_is_inferred_from_the_checkpoint_and_an_explicit_one_must_agree(tmp_path, checkpoint):
    assert checkpoint_profile(checkpoint).name == "tiny"
    with pytest.raises(ValueError, match="omit --profile"):
        checkpoint_profile(checkpoint, load_profile("paper"))
    # a paper-shaped checkpoint (config only: the real gpt-oss-20b dimensions) is recognised as paper
    paper = tmp_path / "paper_model"
    paper.mkdir()
    text_config = dict(load_profile("paper").model.text_config)
    (paper / "config.json").write_text(json.dumps({"model_type": "medgpt_oss", "dtype": "bfloat16",
                                                   "encoder_name": "siglip", "text_config": text_config}))
    inferred = checkpoint_profile(paper)
    assert inferred.name == "paper" and inferred.model.encoder == "siglip"
    assert checkpoint_dtype(json.loads((paper / "config.json").read_text())) == "bfloat16"
    assert checkpoint_dtype(json.loads((checkpoint / "config.json").read_text())) == "float32"
    assert checkpoint_dtype({"model_type": "medgpt_oss"}) is None  # unknown: the profile's dtype, not float32
    (paper / "config.json").write_text(json.dumps({"model_type": "llama", "text_config": text_config}))
    with pytest.raises(ValueError, match="not a medkit checkpoint"):
        checkpoint_profile(paper)


def test_ranks_get_equal_contiguous_gpu_shares_or_cpu_cores(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    eight_by_four = split_devices(4, n_gpus=8)
    assert [r.gpus for r in eight_by_four] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert eight_by_four[1].environment() == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert [r.gpus for r in split_devices(3, n_gpus=8)] == [("0", "1"), ("2", "3"), ("4", "5")]  # 6, 7 idle
    # a parent given GPUs 4-7 (or UUIDs) hands those on, never 0-3, which may be another job's
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert [r.environment()["CUDA_VISIBLE_DEVICES"] for r in split_devices(2, n_gpus=4)] == ["4,5", "6,7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb")
    assert [r.gpus for r in split_devices(2, n_gpus=2)] == [("GPU-aa",), ("GPU-bb",)]
    with pytest.raises(PlacementError, match="--nproc 9 is more ranks than the 8"):
        split_devices(9, n_gpus=8)
    cpu = split_devices(2, n_gpus=0, n_cpus=16)
    assert cpu[0].environment()["OMP_NUM_THREADS"] == "8" and cpu[0].environment()["CUDA_VISIBLE_DEVICES"] == ""
    assert model_placement(0) == {}
    assert model_placement(1) == {"device_map": {"": 0}}
    assert model_placement(2) == {"device_map": "auto"}


def test_device_map_auto_never_splits_a_decoder_or_encoder_layer(checkpoint):
    model = load_model(checkpoint, device_map="auto")  # on this CPU machine: everything on the CPU
    no_split = set(model._no_split_modules)  # collected from the sub-models by transformers
    assert {"GptOssDecoderLayer", "CLIPEncoderLayer"} <= no_split
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_cli_eval_reasoning_effort_changes_the_prompt_and_the_key(tmp_path, corpus, checkpoint, capsys):
    base = ["eval", "--model", str(checkpoint), "--benchmarks", "medqa", "--corpus", str(corpus), "--limit", "2",
            "--max-new-tokens", "4"]
    assert main(base + ["--out", str(tmp_path / "low")]) == 0
    assert main(base + ["--out", str(tmp_path / "high"), "--reasoning-effort", "high"]) == 0
    keys = [json.loads(next((tmp_path / e).glob("predictions/*/medqa/*.key.json")).read_text())
            for e in ("low", "high")]
    assert [k["model"]["template"]["reasoning_effort"] for k in keys] == ["low", "high"]
    low, high = (stored(tmp_path / e, "medqa")[0] for e in ("low", "high"))
    assert all(low[i]["prompt_hash"] == high[i]["prompt_hash"] for i in low)  # the item is the same data
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "x"), "--profile", "paper"]) == 2
    assert "omit --profile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses it before anything runs
        main(base + ["--out", str(tmp_path / "y"), "--nproc", "0"])
    assert refused.value.code == 2 and not (tmp_path / "y").exists()
    assert main(base + ["--out", str(tmp_path / "z"), "--option", "medqa"]) == 2
    assert "BENCHMARK.NAME=VALUE" in capsys.readouterr().err


def test_dry_run_counts_pending_items_and_writes_nothing(tmp_path, corpus, checkpoint, capsys):
    out = tmp_path / "out"
    base = ["eval", "--model", str(checkpoint), "--benchmarks", "medqa", "slake", "--corpus", str(corpus),
            "--out", str(out), "--batch-size", "2", "--nproc", "2"]
    assert main(base + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()  # no store, no key file, no result
    # slake: 4 items, none stored, 2 batches of 2, one per rank, tiny's budget of 64 each
    assert re.search(r"medqa\s+5\s+3\s+0\s+3\s+2\s+1\s+64\s+profile\s+192", text), text
    assert re.search(r"slake\s+4\s+4\s+0\s+4\s+2\s+1\s+64\s+profile\s+256", text), text
    assert "7 items to decode on 2 rank(s), at most 448 new tokens" in text and "not computed" in text
    assert main(base[:-2] + ["--nproc", "1", "--max-new-tokens", "4", "--benchmarks", "medqa"]) == 0
    capsys.readouterr()
    assert main(base + ["--max-new-tokens", "4", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"medqa\s+5\s+3\s+3\s+0\s+0\s+0\s+4\s+override\s+0", text), text


def test_every_eval_command_in_the_readme_parses():
    import shlex
    from pathlib import Path

    from medkit.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [line.split("#")[0] for line in readme.splitlines() if re.match(r"(\.venv/bin/)?medkit (eval|tables) ", line)]
    assert len(commands) >= 8
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])  # exits (fails the test) on a bad flag
        assert args.command in ("eval", "tables")


def test_a_benchmark_selected_twice_is_refused_before_decoding(tmp_path, corpus):
    with pytest.raises(ValueError, match=r"\['medqa'\] selected more than once"):
        run_eval(KeyOnly(), EvalRequest(benchmarks=["medqa", "slake", "medqa"], out_dir=tmp_path, corpus_dir=corpus),
                 progress=False)


def test_ranks_do_not_outlive_a_killed_parent(tmp_path, corpus, checkpoint):
    import psutil

    # enough work that the ranks would run on for well over the 5 s allowed below
    cmd = [sys.executable, "-m", "medkit", "eval", "--model", str(checkpoint), "--benchmarks", "table4", "table5",
           "--corpus", str(corpus), "--out", str(tmp_path), "--max-new-tokens", "200", "--batch-size", "2",
           "--nproc", "2"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    ranks = []
    while time.monotonic() < deadline and len(ranks) < 2 and parent.poll() is None:
        ranks = [c for c in psutil.Process(parent.pid).children() if "medkit.eval.parallel" in " ".join(c.cmdline())]
        time.sleep(0.05)
    assert len(ranks) == 2, "the ranks did not start"
    parent.kill()  # SIGKILL to the parent alone: its finally blocks never run
    parent.wait()
    gone, alive = psutil.wait_procs(ranks, timeout=5)
    assert not alive, f"ranks outlived their parent: {[p.pid for p in alive]}"


def test_results_say_which_decode_time_they_record(tmp_path, corpus, checkpoint):
    adapter = open_adapter(AdapterSource(str(checkpoint)))
    (one,) = run_eval(adapter, request(tmp_path / "one", corpus, benchmarks=["medqa"], limit=3), progress=False)
    assert one["decode_seconds"] > 0 and one["parallel_decode_seconds"] is None
    two = run_eval(adapter, request(tmp_path / "two", corpus, benchmarks=["medqa", "slake"], limit=3, nproc=2),
                   progress=False)
    assert all(r["decode_seconds"] is None for r in two)  # no per-benchmark time when ranks shared the phase
    assert two[0]["parallel_decode_seconds"] == two[1]["parallel_decode_seconds"] > 0
