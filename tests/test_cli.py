"""The command line: summary numbers from configs, clear errors for bad options."""

import subprocess
import sys

from medkit.cli import main


def test_summary_paper_profile_offline(capsys):
    assert main(["summary", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "encoder=clip lm=openai/gpt-oss-20b" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert 21.0e9 < int(total.split()[1].replace(",", "")) < 21.5e9
    clip_row = next(line for line in out.splitlines() if line.startswith("clip "))
    assert clip_row.split() == ["clip", "336", "576", "144", "13", "1872"]
    medsiglip_row = next(line for line in out.splitlines() if line.startswith("medsiglip "))
    assert medsiglip_row.split()[1:4] == ["448", "1024", "256"]


def test_summary_tiny_with_other_encoder(capsys):
    assert main(["summary", "--profile", "tiny", "--encoder", "biomedclip"]) == 0
    out = capsys.readouterr().out
    assert "encoder=biomedclip lm=tiny" in out
    assert "vision_tower" in out and "lm.experts" in out


def test_unknown_encoder_exits_2_with_message(capsys):
    assert main(["summary", "--encoder", "resnet"]) == 2
    assert "unknown vision encoder 'resnet'" in capsys.readouterr().err


def test_unknown_subcommand_is_rejected():
    result = subprocess.run([sys.executable, "-m", "medkit", "fly"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice: 'fly'" in result.stderr


def test_train_command_chains_stages_through_the_launcher():
    from medkit.cli import build_parser, train_command

    args = build_parser().parse_args(["train", "--stage", "midtrain", "--nproc", "2", "--out", "runs/x", "--max-steps", "5"])
    cmd = train_command(args)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert cmd[cmd.index("--previous") + 1] == "runs/x/pretrain/model"  # starts from the previous stage
    assert cmd[cmd.index("--out") + 1] == "runs/x/midtrain"
    first = train_command(build_parser().parse_args(["train", "--stage", "pretrain"]))
    # tiny's first stage starts from the stand-ins composed into OUT/init/model, as paper's from the releases
    assert first[first.index("--previous") + 1] == "runs/train/init/model"


def test_train_unknown_stage_exits_2(capsys):
    assert main(["train", "--stage", "finetune"]) == 2
    assert "unknown stage 'finetune'" in capsys.readouterr().err


def test_plan_prints_memory_and_reference_hours(capsys):
    from medkit.cli import main

    assert main(["plan", "--stage", "midtrain", "--hardware", "b200", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "estimate_zero3_model_states_mem_needs" in out and "240 h 24 m" in out
    assert main(["plan", "--hardware", "tpu-v9"]) == 2
    assert "tpu-v9" in capsys.readouterr().err


def test_train_batch_and_checkpoint_options_reach_every_rank():
    from medkit.cli import build_parser, train_command

    args = build_parser().parse_args(["train", "--stage", "instruct", "--nproc", "2", "--per-device-batch-size", "2",
                                      "--global-batch-size", "16", "--save-minutes", "30", "--save-model-only"])
    cmd = train_command(args)
    assert cmd[cmd.index("--per-device-batch-size") + 1] == "2" and cmd[cmd.index("--global-batch-size") + 1] == "16"
    assert cmd[cmd.index("--save-minutes") + 1] == "30.0" and "--save-model-only" in cmd and "--save-steps" not in cmd
    plain = train_command(build_parser().parse_args(["train", "--stage", "instruct", "--nproc", "2"]))
    assert not any(flag.startswith(("--save", "--per-device", "--global")) for flag in plain)  # the stage's own


def test_train_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--stage", "instruct", "--nproc", "2", "--global-batch-size", "32", "--save-steps", "10",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "world size 2" in out and "per device 8 samples per micro-step, global 32" in out and "accumulation 2" in out
    assert "attention    packed_eager" in out and "every 10 steps, weights + optimizer state (resumable), keep 2" in out
    assert "router load-balancing loss on (coefficient 0.9)" in out
    assert '"reduce_bucket_size": 4194304' in out  # the floor, not the tiny width's 64^2 (one collective per weight)
    assert list(tmp_path.iterdir()) == []  # no corpus generated, no run folder
