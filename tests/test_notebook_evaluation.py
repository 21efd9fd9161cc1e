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
    assert list(shown.columns) == ["benchmark", "id", "prompt (end)", "raw output", "parsed", "medevalkit reads",
                                   "gold", "correct"]
    assert len(shown) == 2 * 6  # two of each Table 5 benchmark
    first = shown.iloc[0]
    assert first["benchmark"] == "medqa" and first["raw output"]  # what the store holds, cut to one line
    assert "Answer with the letter" in first["prompt (end)"]
    assert first["gold"][0] in "ABCDE" and first["gold"][1:3] == ". "
    assert first["medevalkit reads"] in "ABCDE"  # that rule reads a letter from every output


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


def test_what_this_run_shows_is_computed_from_the_result_files(tmp_path):
    import json

    from medkit.notebook.evaluation import MODEL_NAME, what_this_run_shows
    from medkit.notebook.params import NotebookParameters

    folder = tmp_path / "eval" / "results" / MODEL_NAME
    folder.mkdir(parents=True)

    def mc(name, accuracy, low, chance, unparsed):
        metrics = {"n": 100, "accuracy": accuracy, "ci_low": low, "ci_high": accuracy + 0.1,
                   "unparsed_rate": unparsed, "lenient_accuracy": accuracy, "chance_rate": chance}
        (folder / f"{name}.json").write_text(json.dumps({"benchmark": name, "n": 100, "metrics": metrics}))

    mc("medqa", 0.80, 0.72, 0.23, 0.10)
    mc("medmcqa", 0.30, 0.21, 0.22, 0.30)  # CI reaches below chance
    text = what_this_run_shows(NotebookParameters(run_dir=str(tmp_path)), "5").data
    assert "averages **0.55** over 2" in text and "**1 of 2** have their whole 95% CI above" in text
    assert "(medqa)" in text and "20% of outputs are unparsed" in text and "**0.23** for guessing" in text
    report = {"n": 100, "bleu4": {"value": 0.00004}, "rougeL": {"value": 0.08}, "radgraph_partial": {"value": None}}
    (folder / "mimic_cxr_report.json").write_text(json.dumps({"benchmark": "mimic_cxr_report", "metrics": report}))
    text = what_this_run_shows(NotebookParameters(run_dir=str(tmp_path)), "figure2").data
    assert "above zero on rougeL; bleu4 stays at 0.000" in text  # judged at the printed 3 decimals


def test_not_computed_cells_show_as_markers_with_each_reason_once_below():
    """Notebooks 08-09 showed "not computed: needs package RaTEScore==0.6.0 a..." in every such cell, cut
    by pandas; the frame now shows the tables' marker and the whole reason once, as a footnote."""
    import pandas as pd

    from medkit.notebook.display import noted

    reason = ("not computed: needs package RaTEScore==0.6.0 and weights Angelakeke/RaTE-NER-Deberta "
              "(loading failed: OSError)")
    frame = pd.DataFrame({"benchmark": ["impression_0shot", "impression_1shot"], "bleu2": [0.231, 0.2],
                          "ratescore": [reason, reason], "radgraph": ["not computed: needs radgraph", None]})
    shown = noted(frame)
    assert shown.frame["ratescore"].tolist() == ["n/c [1]", "n/c [1]"]
    assert shown.frame["radgraph"].tolist()[0] == "n/c [2]"
    assert shown.frame["bleu2"].tolist() == [0.231, 0.2]  # numbers untouched
    assert shown.notes == [f"[1] {reason}", "[2] not computed: needs radgraph"]
    for text in (repr(shown), shown._repr_html_()):
        assert text.count("RaTE-NER-Deberta") == 1 and "..." not in text


def test_the_kernel_setup_shows_every_cell_whole(monkeypatch):
    """pandas cut cells at 50 characters (benchmark descriptions, prompt excerpts, file lists)."""
    import pandas as pd

    monkeypatch.delenv("MEDKIT_RUN_DIR", raising=False)
    long = "Radiology figures with captions from PMC articles, filtered for medical content and quality"
    with pd.option_context("display.max_colwidth", 50):
        assert "..." in repr(pd.DataFrame({"description": [long]}))  # the default this guards against
        notebook_parameters({})
        assert long in repr(pd.DataFrame({"description": [long]}))
