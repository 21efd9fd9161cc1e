"""A stage killed mid-run resumes from its last checkpoint and ends where an uninterrupted run ends."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from medkit.data.synthetic import generate_corpus
from medkit.notebook.runner import alive
from medkit.training.stage_run import checkpoint_is_complete, last_complete_checkpoint

SIZES = {"caption": 40, "report_long": 5, "report": 5, "vqa_mc": 5, "text_mc": 5, "reasoning": 5,
         "trial": 5, "impression": 5}
STEPS, SAVE_EVERY = 30, 3  # tiny steps take ~0.1 s: enough of them that the kill lands mid-run


def stage_command(corpus, out, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(port),
            "-m", "medkit.training.stage_run", "--stage", "pretrain", "--corpus", str(corpus), "--out", str(out),
            "--max-steps", str(STEPS), "--save-steps", str(SAVE_EVERY)]


ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def run_to_end(corpus, out, port):
    done = subprocess.run(stage_command(corpus, out, port), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "losses.json").read_text()), json.loads((out / "train_metrics.json").read_text())


def kill_tree(proc):
    """SIGKILL the launcher and every rank, as a lost node would. torchrun starts ranks in sessions of
    their own, so killing its process group alone leaves them training (and racing the resumed run)."""
    tree = psutil.Process(proc.pid)
    ranks = tree.children(recursive=True)
    for process in [tree, *ranks]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    proc.wait()
    psutil.wait_procs(ranks, timeout=30)
    assert not any(map(alive, ranks))


def kill_after_checkpoint(corpus, out, port, step):
    """Start the stage and SIGKILL it once checkpoint-<step> is complete."""
    proc = subprocess.Popen(stage_command(corpus, out, port), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = out / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 400
    while not marker.is_file():
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    kill_tree(proc)


def cut_short_save(complete, partial):
    """A save the kill interrupted: weights written, DeepSpeed shards and trainer state not yet."""
    partial.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(complete / name, partial / name)
    (partial / "trainer_state.json").unlink(missing_ok=True)


def fake_checkpoint(out, step, ranks=(0, 1)):
    """The files a ZeRO-3 Trainer checkpoint holds (empty where their content is not read)."""
    ckpt = out / f"checkpoint-{step}"
    shards = ckpt / f"global_step{step}"
    shards.mkdir(parents=True)
    for rank in ranks:
        (shards / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt").touch()
        (shards / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").touch()
    (ckpt / "latest").write_text(f"global_step{step}")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


@pytest.mark.parametrize("damage", [
    lambda c: (c / "trainer_state.json").unlink(),
    lambda c: (c / "trainer_state.json").write_text('{"global_step": 6, "log_hi'),
    lambda c: (c / "trainer_state.json").write_text('{"global_step": 3}'),
    lambda c: (c / "latest").unlink(),
    lambda c: shutil.rmtree(c / "global_step6"),
    lambda c: (c / "global_step6" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink(),
], ids=["no-trainer-state", "truncated-trainer-state", "other-step", "no-latest-tag", "no-shards",
        "rank-1-optimizer-missing"])
def test_resume_passes_over_a_checkpoint_the_kill_cut_short(tmp_path, damage, capsys):
    older = fake_checkpoint(tmp_path, 3)
    newest = fake_checkpoint(tmp_path, 6)
    assert checkpoint_is_complete(newest) and last_complete_checkpoint(tmp_path) == newest
    damage(newest)
    assert not checkpoint_is_complete(newest)
    assert last_complete_checkpoint(tmp_path) == older
    assert "checkpoint-6 is incomplete" in capsys.readouterr().out


def test_no_complete_checkpoint_starts_the_stage_afresh(tmp_path):
    assert last_complete_checkpoint(tmp_path / "not-yet") is None
    (fake_checkpoint(tmp_path, 10) / "latest").unlink()
    (tmp_path / "checkpoint-notes").mkdir()  # not a step: ignored
    assert last_complete_checkpoint(tmp_path) is None


def test_newest_is_by_step_not_by_name(tmp_path):
    fake_checkpoint(tmp_path, 9)
    newest = fake_checkpoint(tmp_path, 12)
    assert last_complete_checkpoint(tmp_path) == newest


@pytest.mark.slow
def test_killed_stage_resumes_from_its_last_checkpoint(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=0, sizes=SIZES)
    full_losses, full = run_to_end(corpus, tmp_path / "full", 29531)
    assert full["resumed_from"] is None and len(full_losses) == STEPS

    killed = tmp_path / "killed"
    kill_after_checkpoint(corpus, killed, 29532, SAVE_EVERY)
    assert not (killed / "model").exists()  # killed before the end: no final model
    newest = last_complete_checkpoint(killed)
    start = int(newest.name.rsplit("-", 1)[1])
    assert start % SAVE_EVERY == 0 and SAVE_EVERY <= start < STEPS
    cut_short_save(newest, killed / f"checkpoint-{start + SAVE_EVERY}")  # as if the kill hit the next save
    resumed_losses, resumed = run_to_end(corpus, killed, 29533)
    assert resumed["resumed_from"] == str(newest)
    assert resumed["global_step"] == STEPS
    # only the steps after the checkpoint ran again, and they match the uninterrupted run
    assert resumed_losses == pytest.approx(full_losses[start:], rel=1e-4)
