"""`make reproduce` on the tiny profile: corpus, training and held-out loss written to the run folder."""

import json

import pytest

from medkit.model.build import load_model
from medkit.reproduce import reproduce


@pytest.mark.slow
def test_reproduce_tiny_writes_summary_and_model(tmp_path):
    summary = reproduce("tiny", run_dir=tmp_path / "run", steps=4)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["steps"] == 4 and len(saved["losses"]) == 4
    assert saved["eval_examples"] > 0 and saved["eval_loss_after"] < saved["eval_loss_before"]
    assert (tmp_path / "run" / "corpus" / "manifest.json").is_file()
    model = load_model(tmp_path / "run" / "model")
    assert model.config.encoder_name == "clip"
