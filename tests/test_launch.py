"""Launching stages: torchrun and DeepSpeed launcher commands (one node or several), checks made before any
rank starts, and the released-weights path end to end: compose the initial checkpoint from checkpoints in
the released formats, then train stage 0 on a Table 1 data root through the deepspeed launcher."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import CLIPConfig, CLIPModel, GptOssForCausalLM

from medkit.chat import load_tokenizer
from medkit.cli import main
from medkit.data.mixture import dataset_folder
from medkit.model.build import load_model, model_config
from medkit.profiles import get_encoder, load_profile
from medkit.training.launch import Launch, StageOverrides, stage_command
from medkit.training.stages import load_stage

from test_mixture import write_arrow_source, write_jsonl_source


def test_torchrun_single_and_multi_node_commands(tmp_path):
    one = stage_command("midtrain", profile="tiny", out=tmp_path, corpus="c", launch=Launch(nproc=2))
    assert one[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert "--nnodes" not in one
    assert one[one.index("--previous") + 1] == str(tmp_path / "pretrain" / "model")
    multi = stage_command("pretrain", profile="tiny", out=tmp_path, data_root="/data/t1", skip_missing=True,
                          launch=Launch(nproc=8, nnodes=4, node_rank=3, master_addr="node0", master_port=29600),
                          overrides=StageOverrides(per_device_batch_size=1, global_batch_size=32))
    flags = multi[multi.index("torch.distributed.run") + 1:multi.index("medkit.training.stage_run")]
    assert flags == ["--nproc_per_node", "8", "--nnodes", "4", "--node_rank", "3", "--master_addr", "node0",
                     "--master_port", "29600", "-m"]
    assert multi[multi.index("--data-root") + 1] == "/data/t1" and "--skip-missing" in multi
    assert "--corpus" not in multi and "--previous" not in multi  # tiny stage 0 starts from random weights
    assert multi[-4:] == ["--per-device-batch-size", "1", "--global-batch-size", "32"]  # passed on to every rank


def test_deepspeed_launcher_command(tmp_path):
    cmd = stage_command("instruct", profile="tiny", out=tmp_path, corpus="c",
                        launch=Launch(launcher="deepspeed", nproc=8, nnodes=2, hostfile="/job/hostfile"),
                        overrides=StageOverrides(global_batch_size=128))  # the tiny profile's 8 per device x 16 ranks
    head = cmd[cmd.index("deepspeed.launcher.runner") + 1:cmd.index("--stage")]
    assert head == ["--num_gpus", "8", "--num_nodes", "2", "--no_local_rank", "--hostfile", "/job/hostfile",
                    "--module", "medkit.training.stage_run"]


@pytest.mark.parametrize("kwargs, message", [
    ({"hostfile": "h"}, "read by the deepspeed launcher"),
    ({"nnodes": 2}, "need --master-addr"),
    ({"nnodes": 2, "node_rank": 2, "master_addr": "a"}, "bad launch sizes"),
    ({"launcher": "mpirun"}, "launcher must be"),
    ({"launcher": "deepspeed", "nnodes": 2}, "need --hostfile"),
])
def test_bad_launch_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Launch(**kwargs)


def test_train_checks_data_before_launching(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["train", "--stage", "pretrain", "--data-root", str(tmp_path), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "ROCOv2 (filtered) at" in err and "rocov2_filtered" in err
    assert not out.exists()  # nothing started, nothing written


def released_like_profile(tmp_path):
    """A profile shaped like `paper` whose checkpoints are tiny models saved in the released formats."""
    tokenizer = load_tokenizer("tiny")
    torch.manual_seed(3)
    text_config = model_config(load_profile("tiny"), vocab_size=len(tokenizer)).text_config
    # positions for Table 2's 32,768-token rows, as a released GPT-oss has: fewer is refused before training
    text_config.max_position_embeddings = 32768
    GptOssForCausalLM(text_config).save_pretrained(tmp_path / "gpt-oss")
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(vision_config=get_encoder("clip").tiny, text_config=tower)).save_pretrained(tmp_path / "clip")
    profile = {"name": "released-like", "seed": 0,
               "model": {"encoder": "clip", "language_model": str(tmp_path / "gpt-oss"), "tokenizer": "tiny",
                         "encoder_path": str(tmp_path / "clip"), "dtype": "float32"},
               "training": {"per_device_batch_size": 2, "global_batch_size": 4, "max_steps": 2,
                            "learning_rate": {"pretrain": 1.0e-2}}}
    path = tmp_path / "released_like.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.slow
def test_released_weights_stage0_on_a_table1_root_through_the_deepspeed_launcher(tmp_path):
    profile = released_like_profile(tmp_path)
    root = tmp_path / "table1"
    write_jsonl_source(root / dataset_folder("ROCOv2 (filtered)"), 6)
    write_arrow_source(root / dataset_folder("Quilt-1M (filtered)"), 6)
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "medkit", "train", "--stage", "pretrain", "--profile", str(profile),
           "--data-root", str(root), "--skip-missing", "--nproc", "2", "--launcher", "deepspeed",
           "--master-port", "29533", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    assert not (out / "init" / "model.partial").exists()
    report = json.loads((out / "pretrain" / "data_report.json").read_text())
    assert report["records"] == 12 and report["missing"] == ["PMC-OA (filtered)",
                                                            "BIOMEDICA (dermatology and surgery subsets)"]
    metrics = json.loads((out / "pretrain" / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 2
    init, trained = (load_model(p).state_dict() for p in (out / "init" / "model", out / "pretrain" / "model"))
    released = GptOssForCausalLM.from_pretrained(tmp_path / "gpt-oss").state_dict()
    assert torch.equal(init["model.language_model.embed_tokens.weight"], released["model.embed_tokens.weight"])

    def changed(prefix):
        return any(not torch.equal(init[k], trained[k]) for k in init if k.startswith(prefix))

    # stage 0 (Table 2): only the projector trains; the released encoder and LLM are untouched
    assert changed("model.multi_modal_projector.")
    assert not changed("model.vision_tower.") and not changed("model.language_model.") and not changed("lm_head.")


def test_compose_once_then_other_nodes_only_check(tmp_path, capsys):
    profile = released_like_profile(tmp_path)
    root = tmp_path / "table1"
    write_jsonl_source(root / dataset_folder("ROCOv2 (filtered)"), 2)
    out = tmp_path / "train"
    node1 = ["train", "--stage", "pretrain", "--profile", str(profile), "--data-root", str(root), "--skip-missing",
             "--nnodes", "2", "--node-rank", "1", "--master-addr", "node0", "--out", str(out)]
    assert main(node1) == 2
    assert "run `medkit compose --profile" in capsys.readouterr().err
    assert not (out / "init").exists()  # a non-zero node never composes

    assert main(["compose", "--profile", str(profile), "--out", str(out)]) == 0
    composed = load_model(out / "init" / "model")
    released = GptOssForCausalLM.from_pretrained(tmp_path / "gpt-oss")
    assert torch.equal(composed.lm_head.weight, released.lm_head.weight)
    assert (out / "init" / "model" / "model.safetensors").is_file()
    assert main(["compose", "--profile", "tiny"]) == 2  # the tiny model is built, not composed


def test_progress_follows_the_trainer_log_lines_and_keeps_the_tail(capsys):
    from medkit.training.launch import run_with_progress

    script = ("print(\"{'loss': '7.6', 'grad_norm': '1.0'}\"); print('noise'); print(\"{'loss': 5.25}\"); "
              "print(\"{'train_runtime': '2.9'}\"); import sys; sys.exit(3)")
    code, tail = run_with_progress([sys.executable, "-c", script], desc="pretrain", total=2)
    assert code == 3 and tail[-1] == "{'train_runtime': '2.9'}\n" and len(tail) == 4
    bar = capsys.readouterr().err
    assert "pretrain: 100%" in bar and "2/2" in bar and "loss=5.25" in bar


def test_an_executed_notebook_gets_a_few_bar_lines_not_one_per_step(capsys, monkeypatch):
    """Under the notebook runner (plain bars) 300 quick steps redraw at the bar's interval: the loss
    postfix must not force a line per step into the executed copy."""
    from medkit.progress import PLAIN_PROGRESS_ENV
    from medkit.training.launch import run_with_progress

    monkeypatch.setenv(PLAIN_PROGRESS_ENV, "1")
    script = "for i in range(300): print(\"{'loss': '%.3f'}\" % (1 / (i + 1)))"
    code, _ = run_with_progress([sys.executable, "-c", script], desc="instruct", total=300)
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("instruct")]
    assert code == 0 and len(lines) <= 6, lines
    assert "300/300" in lines[-1] and "loss=0.003" in lines[-1]


@pytest.mark.timeout(300, method="thread")  # the test itself interrupts through SIGALRM, pytest-timeout's signal
def test_an_interrupted_notebook_stops_every_rank(tmp_path):
    """Interrupting the kernel while a stage trains stops the launcher and the ranks it started in their
    own sessions (torchrun does so); none is left training in the background."""
    import signal

    from medkit.training.launch import run_with_progress

    rank = tmp_path / "rank.py"
    rank.write_text("import os, pathlib, time\n"
                    "pathlib.Path(os.environ['PIDS'], os.environ['RANK']).write_text(str(os.getpid()))\n"
                    "print(\"{'loss': 1.0}\", flush=True)\n"
                    "time.sleep(600)\n")
    pids = tmp_path / "pids"
    pids.mkdir()
    cmd = ["env", f"PIDS={pids}", sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29541", str(rank)]

    def interrupt(*_):
        if len(list(pids.iterdir())) < 2:
            return  # ranks not started yet: look again at the next tick
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_with_progress(cmd, desc="pretrain", total=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    ranks = [int(f.read_text()) for f in pids.iterdir()]
    assert len(ranks) == 2 and not any(map(still_running, ranks))


def still_running(pid: int) -> bool:
    import psutil

    from medkit.notebook.runner import alive

    try:
        return alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def test_notebook_stages_exclude_audited_ids_from_table1_data_only(tmp_path, monkeypatch):
    from medkit.config import ConfigError
    from medkit.notebook import training
    from medkit.notebook.params import NotebookParameters

    calls = []
    monkeypatch.setattr(training, "launch_stage", lambda stage, **kw: calls.append(kw) or [1.0])
    monkeypatch.setattr(NotebookParameters, "synthetic_corpus", lambda self: self.corpus)
    run, table1 = tmp_path / "run", tmp_path / "table1"
    table1.mkdir()
    (run / "leakage").mkdir(parents=True)
    report = run / "leakage" / "leakage.json"
    report.write_text('{"excluded_train_ids": ["x"], "train_source": null}')  # an audit of the synthetic corpus
    training.train_stage("pretrain", NotebookParameters(run_dir=str(run)))
    assert calls[-1]["corpus"] == run / "corpus" and "leakage_report" not in calls[-1]
    on_table1 = NotebookParameters(run_dir=str(run), train_data_root=str(table1))
    with pytest.raises(ConfigError, match="audited the synthetic corpus, not .*table1: rerun notebook 01"):
        training.train_stage("pretrain", on_table1)
    report.write_text(json.dumps({"excluded_train_ids": ["x"], "train_source": str(table1.resolve())}))
    training.train_stage("pretrain", on_table1)
    assert calls[-1]["data_root"] == str(table1) and calls[-1]["leakage_report"] == report
    report.unlink()
    with pytest.warns(UserWarning, match="no leakage report"):
        training.train_stage("pretrain", on_table1)
    assert calls[-1]["leakage_report"] is None


# ---- batches on the world size, the dry run, and the length check before any rank starts ----

def readme_train_commands() -> list[str]:
    """Every `medkit train` line of the README's bash blocks."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if re.match(r"(\.venv/bin/)?medkit train ", line)]


def table1_fixture(root):
    """One dataset of each stage's mixture under ``root`` (the others stay missing)."""
    write_jsonl_source(root / dataset_folder("ROCOv2 (filtered)"), 3)
    write_jsonl_source(root / dataset_folder("MIMIC-CXR (single-panel)"), 2)
    write_arrow_source(root / dataset_folder("PubMedVision (instruction)"), 2)
    return root


def test_every_readme_training_command_passes_its_dry_run(tmp_path, monkeypatch, capsys):
    import shlex

    from medkit.training import launch

    def never(*args, **kwargs):
        raise AssertionError("a dry run started or composed something")

    monkeypatch.setattr(launch, "compose_in_subprocess", never)
    monkeypatch.setattr(launch, "initial_checkpoint", never)
    monkeypatch.setattr(subprocess, "run", never)
    monkeypatch.setattr(subprocess, "Popen", never)
    root = table1_fixture(tmp_path / "table1")
    monkeypatch.chdir(tmp_path)
    commands = readme_train_commands()
    assert len(commands) == 7 and sum("--nnodes 4" in c for c in commands) == 2
    for command in commands:
        argv = shlex.split(command.replace("/data/table1", str(root)))[1:]
        assert main(argv + ["--dry-run"]) == 0, (command, capsys.readouterr().err)
        out = capsys.readouterr().out
        assert "world size" in out and "accumulation" in out and '"train_batch_size"' in out, command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table1"]  # nothing written: no corpus, no runs/


def test_dry_run_resolves_a_multi_node_stage_without_starting_it(tmp_path, capsys):
    root = table1_fixture(tmp_path / "table1")
    out = tmp_path / "out"
    argv = ["train", "--stage", "midtrain", "--profile", "paper", "--data-root", str(root), "--nproc", "8",
            "--nnodes", "4", "--node-rank", "0", "--master-addr", "node0", "--per-device-batch-size", "4",
            "--out", str(out), "--dry-run"]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "8 rank(s) per node x 4 node(s) = world size 32" in report
    assert "per device 4 samples per micro-step, global 128 samples per optimizer step, accumulation 1" in report
    assert "into 1-4 row(s) of <= 32,768 tokens" in report and "128 samples in at most 128 rows" in report
    deepspeed = json.loads(report[report.index("deepspeed") + len("deepspeed"):report.index("\ndata")])
    assert (deepspeed["train_micro_batch_size_per_gpu"], deepspeed["gradient_accumulation_steps"],
            deepspeed["train_batch_size"], deepspeed["zero_optimization"]["stage"]) == (4, 1, 128, 3)
    assert "attention    flex_attention" in report and "router load-balancing loss on (coefficient 0.9)" in report
    assert "every 360 min, weights + optimizer state (resumable), keep 2" in report
    assert "a sample may have 32,768 tokens" in report
    mimic = next(line for line in report.splitlines() if "mimic_cxr_single_panel" in line)
    assert mimic.split()[-5:] == ["jsonl", "2", "(Table", "1:", "22,747)"]  # records per dataset, read not opened
    assert "NOT READY: stage midtrain: no train.jsonl or saved dataset for MIMIC-CXR (multi-view" in report
    assert "--per-device-batch-size 4" in report.splitlines()[-1]
    assert not out.exists()


def test_a_batch_split_the_world_size_cannot_make_stops_before_launching(tmp_path, capsys):
    argv = ["train", "--stage", "midtrain", "--profile", "paper", "--data-root", str(tmp_path), "--nproc", "8",
            "--nnodes", "4", "--master-addr", "node0", "--out", str(tmp_path / "out")]
    for extra in ([], ["--dry-run"]):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert "global batch 128 on 32 ranks needs per-device x 32 to divide 128: --per-device-batch-size 1, 2 " \
               "or 4 (accumulation 4, 2, 1), or --global-batch-size 512 for per-device 16" in err
    cmd = stage_command("midtrain", profile="paper", out=tmp_path, data_root="/d", launch=Launch(nproc=8, nnodes=4,
                        master_addr="node0"), overrides=StageOverrides(global_batch_size=512, save_minutes=90.0))
    assert cmd[cmd.index("--global-batch-size") + 1] == "512" and cmd[cmd.index("--save-minutes") + 1] == "90.0"


def test_overlong_records_are_handled_before_the_ranks_start(tmp_path, monkeypatch):
    from dataclasses import replace

    from medkit.data.mixture import MixtureError
    from medkit.training import launch
    from medkit.training.launch import prepare_stage

    from test_mixture import append_long_record

    root = tmp_path / "table1"
    write_jsonl_source(root / dataset_folder("ROCOv2 (filtered)"), 3)
    append_long_record(root / "rocov2_filtered", "roco-long", 9000)  # beyond the tiny model's 8,192 positions
    out = tmp_path / "out"
    report = prepare_stage("pretrain", profile="tiny", out=out, data_root=root, skip_missing=True)
    assert (report.records, report.length_limit, report.to_dict()["overlong"]) == (3, 8192, 1)
    assert [p.name.split("-")[0] for p in (out / "pretrain" / "lengths").iterdir()] == ["rocov2_filtered"]
    refusing = replace(load_stage("pretrain"), overlong="error")
    monkeypatch.setattr(launch, "load_stage", lambda name, schedule: refusing)
    with pytest.raises(MixtureError, match=r"rocov2_filtered/roco-long \(9,\d{3} tokens\)"):
        prepare_stage("pretrain", profile="tiny", out=out, data_root=root, skip_missing=True)


def test_a_later_stage_without_its_previous_stage_s_model_stops_before_the_ranks_start(tmp_path):
    """Without the check, both ranks died in from_pretrained on a hub-id validation error."""
    from medkit.training.launch import prepare_stage

    root = tmp_path / "table1"
    write_jsonl_source(root / dataset_folder("MIMIC-CXR (single-panel)"), 3)  # a mid-training dataset
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"stage midtrain starts from .*out/pretrain/model, which is not "
                       r"there: run stage pretrain first"):
        prepare_stage("midtrain", profile="tiny", out=out, data_root=root, skip_missing=True)
    assert not (out / "midtrain").exists()


@pytest.mark.slow
def test_a_stage_with_an_overlong_sample_trains_balances_its_routers_and_saves_by_policy(tmp_path):
    """Mid-training (LLM trainable) through `medkit train` on a data root holding one sample longer than the
    tiny model's positions: dropped before the ranks start, counted in data_report.json, the run ends; the
    router loss is in the logged loss; checkpoints follow --save-steps and keep the newest two."""
    from medkit.model.build import build_tiny_model

    from test_mixture import append_long_record

    root = tmp_path / "table1"
    write_jsonl_source(root / dataset_folder("MIMIC-CXR (single-panel)"), 5)
    append_long_record(root / "mimic_cxr_single_panel", "mimic-long", 9000)
    out = tmp_path / "train"
    tokenizer = load_tokenizer("tiny")
    build_tiny_model(load_profile("tiny"), tokenizer).save_pretrained(out / "pretrain" / "model")
    cmd = [sys.executable, "-m", "medkit", "train", "--stage", "midtrain", "--data-root", str(root), "--skip-missing",
           "--nproc", "1", "--master-port", "29535", "--out", str(out), "--max-steps", "3",
           "--per-device-batch-size", "2", "--global-batch-size", "2", "--save-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dropped MIMIC-CXR (single-panel) 1" in done.stdout
    report = json.loads((out / "midtrain" / "data_report.json").read_text())
    mimic = next(s for s in report["sources"] if s["name"] == "MIMIC-CXR (single-panel)")
    assert (mimic["records"], mimic["overlong"], report["length_limit"]) == (5, 1, 8192)
    metrics = json.loads((out / "midtrain" / "train_metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["router_aux_loss_coef"] == 0.9
    assert metrics["batch"]["accumulation"] == 1 and metrics["checkpoint"]["every_steps"] == 1
    assert "'router_aux_loss':" in done.stdout
    assert sorted(p.name for p in (out / "midtrain").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
