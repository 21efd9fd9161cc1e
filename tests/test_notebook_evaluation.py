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


def test_corpus_and_leakage_summaries_are_whole_tables_that_say_what_is_applied(tmp_path):
    from medkit.data.leakage import LeakagePair, LeakageReport
    from medkit.data.synthetic import generate_corpus
    from medkit.notebook.data import corpus_summary, leakage_summary

    generate_corpus(tmp_path, seed=0, sizes={"caption": 5, "text_mc": 10})
    summary = corpus_summary(tmp_path)
    assert summary.loc["total"].tolist() == [12, 3] and summary.loc["text_mc"].tolist() == [8, 2]
    pairs = [LeakagePair(train_id=t, eval_id="e", signal="text_minhash", score=0.9) for t in ("a", "b", "a")]
    report = LeakageReport(n_train=12, n_eval=3, max_phash_distance=6, text_jaccard_threshold=0.8, pairs=pairs)
    shown = leakage_summary(report, applied=False)["value"]
    assert shown["training samples flagged"] == 2
    assert shown["left out of training"].startswith("0 (reported, not applied")
    assert leakage_summary(report, applied=True)["value"]["left out of training"] == 2
