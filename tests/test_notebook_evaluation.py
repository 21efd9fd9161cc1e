"""What the evaluation notebooks show beside the numbers: a few predictions, read back from the store."""

from medkit.notebook.evaluation import evaluate_table, sample_predictions
from medkit.notebook.params import notebook_parameters


def test_sample_predictions_show_prompt_output_parsed_answer_and_gold(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.delenv("MEDKIT_SMOKE", raising=False)
    monkeypatch.delenv("MEDKIT_RUN_DIR", raising=False)
    params = notebook_parameters({"run_dir": str(tmp_path / "run"), "model_path": str(tiny_checkpoint),
                                  "limit": 3, "max_new_tokens": 4, "nproc": 1})
    evaluate_table(params, "5")
    shown = sample_predictions(params, "5", per_benchmark=2)
    assert list(shown.columns) == ["benchmark", "id", "prompt (end)", "raw output", "parsed", "gold", "correct"]
    assert len(shown) == 2 * 6  # two of each Table 5 benchmark
    first = shown.iloc[0]
    assert first["benchmark"] == "medqa" and first["raw output"]  # what the store holds, cut to one line
    assert "Answer with the letter" in first["prompt (end)"]
    assert first["gold"][0] in "ABCDE" and first["gold"][1:3] == ". "
