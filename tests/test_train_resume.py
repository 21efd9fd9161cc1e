"""A stage killed mid-run resumes from its last checkpoint and ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medkit.data.synthetic import generate_corpus

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


def kill_after_checkpoint(corpus, out, port, step):
    """Start the stage and SIGKILL its whole process group once checkpoint-<step> is complete."""
    proc = subprocess.Popen(stage_command(corpus, out, port), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = out / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 400
    while not marker.is_file():
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_stage_resumes_from_its_last_checkpoint(tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=0, sizes=SIZES)
    full_losses, full = run_to_end(corpus, tmp_path / "full", 29531)
    assert full["resumed_from"] is None and len(full_losses) == STEPS

    kill_after_checkpoint(corpus, tmp_path / "killed", 29532, SAVE_EVERY)
    assert not (tmp_path / "killed" / "model").exists()  # killed before the end: no final model
    resumed_losses, resumed = run_to_end(corpus, tmp_path / "killed", 29533)
    start = int(resumed["resumed_from"].rsplit("checkpoint-", 1)[1])  # the newest complete checkpoint
    assert start % SAVE_EVERY == 0 and SAVE_EVERY <= start < STEPS
    assert resumed["global_step"] == STEPS
    # only the steps after the checkpoint ran again, and they match the uninterrupted run
    assert resumed_losses == pytest.approx(full_losses[start:], rel=1e-4)
