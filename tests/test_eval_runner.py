"""The evaluation runner on the tiny profile: store, resume, rescoring, determinism, CLI."""

import json
import re

import pytest

from medkit.cli import main
from medkit.data.synthetic import generate_corpus
from medkit.eval.adapters import MedkitAdapter
from medkit.eval.benchmarks import load_benchmark
from medkit.eval.generation import DecodeSettings, generate
from medkit.eval.runner import EvalRequest, run_eval
from medkit.profiles import load_profile

SIZES = {"caption": 5, "report_long": 10, "report": 10, "vqa_mc": 200, "text_mc": 200, "reasoning": 5,
         "trial": 10, "impression": 10}
BENCHMARKS = ["medqa", "slake", "mimic_cxr_report"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_corpus")
    generate_corpus(root, seed=0, sizes=SIZES)
    return root


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def adapter(checkpoint):
    return MedkitAdapter.load(checkpoint, load_profile("tiny"))


def request(out, corpus, **kw):
    return EvalRequest(benchmarks=kw.pop("benchmarks", BENCHMARKS), out_dir=out, corpus_dir=corpus, limit=6,
                       max_new_tokens=8, batch_size=4, n_boot=200, profile="tiny", **kw)


class Interrupted(RuntimeError):
    pass


class DiesAfter:
    """Wraps an adapter and raises after ``batches`` calls, like a run killed mid-benchmark."""

    def __init__(self, inner, batches):
        self.inner, self.left, self.name = inner, batches, inner.name

    def fingerprint(self):
        return self.inner.fingerprint()

    def generate(self, items, settings):
        if self.left == 0:
            raise Interrupted()
        self.left -= 1
        return self.inner.generate(items, settings)


def store_lines(out, benchmark):
    (path,) = (out / "predictions").glob(f"*/{benchmark}/*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_and_stores_per_benchmark(tmp_path, corpus, adapter):
    results = run_eval(adapter, request(tmp_path, corpus), progress=False)
    assert [r["benchmark"] for r in results] == BENCHMARKS
    mc = results[0]["metrics"]
    assert {"accuracy", "ci_low", "ci_high", "unparsed_rate", "lenient_accuracy"} <= set(mc)
    assert 0 <= mc["unparsed_rate"] <= 1 and mc["ci_low"] <= mc["accuracy"] <= mc["ci_high"]
    for r in results:
        lines = store_lines(tmp_path, r["benchmark"])
        assert len(lines) == r["n"] == r["generated_now"]
        assert len({line["id"] for line in lines}) == r["n"]
        saved = json.loads((tmp_path / "results" / adapter.name / f"{r['benchmark']}.json").read_text())
        assert saved["metrics"] == json.loads(json.dumps(r["metrics"]))
        assert (saved["profile"], saved["seed"], saved["source"]) == ("tiny", 0, "synthetic")
    assert "synthetic" in results[0]["count_note"]


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, corpus, adapter):
    full = run_eval(adapter, request(tmp_path / "full", corpus), progress=False)
    with pytest.raises(Interrupted):
        run_eval(DiesAfter(adapter, 3), request(tmp_path / "cut", corpus), progress=False)
    with pytest.raises(Exception, match="--resume"):
        run_eval(adapter, request(tmp_path / "cut", corpus), progress=False)
    resumed = run_eval(adapter, request(tmp_path / "cut", corpus, resume=True), progress=False)
    assert sum(r["generated_now"] for r in resumed) < sum(r["generated_now"] for r in full)
    for a, b in zip(full, resumed):
        assert a["metrics"] == b["metrics"]
        key = lambda line: line["id"]  # noqa: E731
        assert sorted(store_lines(tmp_path / "full", a["benchmark"]), key=key) == sorted(
            store_lines(tmp_path / "cut", a["benchmark"]), key=key)


def test_store_lines_keep_the_parsed_answer_and_correctness_at_generation(tmp_path, corpus, adapter):
    from medkit.eval.scoring import score_mc

    run_eval(adapter, request(tmp_path, corpus), progress=False)
    items = {s.id: s for s in load_benchmark("medqa", corpus_dir=corpus, limit=6).items}
    for line in store_lines(tmp_path, "medqa"):
        assert set(line) == {"id", "prompt_hash", "raw", "final", "parsed", "correct"}
        sample = items[line["id"]]
        expected = score_mc(line["final"], sample.meta["options"], sample.meta["answer"])
        assert (line["parsed"], line["correct"]) == (expected.parsed, expected.correct)
    for line in store_lines(tmp_path, "mimic_cxr_report"):
        assert (line["parsed"], line["correct"]) == (None, None)


def test_rescoring_recomputes_from_raw_and_final_not_the_stored_scores(tmp_path, corpus, adapter):
    first = run_eval(adapter, request(tmp_path, corpus, benchmarks=["medqa"]), progress=False)
    (path,) = (tmp_path / "predictions").glob("*/medqa/*.jsonl")
    lines = store_lines(tmp_path, "medqa")
    tampered = [{**line, "parsed": "J", "correct": not line["correct"]} for line in lines]
    path.write_text("".join(json.dumps(line) + "\n" for line in tampered))
    again = run_eval(DiesAfter(adapter, 0), request(tmp_path, corpus, benchmarks=["medqa"], resume=True),
                     generate=False, progress=False)
    assert again[0]["metrics"] == first[0]["metrics"]
    assert store_lines(tmp_path, "medqa") == tampered  # rescoring writes results, never the store
    rows = json.loads((tmp_path / "results" / adapter.name / "medqa.items.json").read_text())
    assert all(row["parsed"] != "J" for row in rows)


def test_rescoring_never_calls_the_model(tmp_path, corpus, adapter):
    first = run_eval(adapter, request(tmp_path, corpus), progress=False)
    again = run_eval(DiesAfter(adapter, 0), request(tmp_path, corpus, resume=True), generate=False, progress=False)
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]
    resumed = run_eval(DiesAfter(adapter, 0), request(tmp_path, corpus, resume=True), progress=False)
    assert all(r["generated_now"] == 0 for r in resumed)  # nothing left to generate


def test_same_run_twice_gives_identical_predictions(tmp_path, corpus, adapter):
    for name in ("a", "b"):
        run_eval(adapter, request(tmp_path / name, corpus, benchmarks=["slake"]), progress=False)
    assert store_lines(tmp_path / "a", "slake") == store_lines(tmp_path / "b", "slake")


def test_batched_decoding_equals_one_at_a_time(corpus, adapter):
    items = [(s, corpus) for s in load_benchmark("slake", corpus_dir=corpus).items[:5]]
    items += [(s, corpus) for s in load_benchmark("medqa", corpus_dir=corpus).items[:3]]
    batched = generate(adapter.model, adapter.processor, items, DecodeSettings(max_new_tokens=8, batch_size=8))
    single = generate(adapter.model, adapter.processor, items, DecodeSettings(max_new_tokens=8, batch_size=1))
    assert [c.raw for c in batched] == [c.raw for c in single]
    assert [c.id for c in batched] == [s.id for s, _ in items]  # input order kept despite length sorting


def test_cli_eval_and_clear_errors(tmp_path, corpus, checkpoint, capsys):
    args = ["eval", "--model", str(checkpoint), "--benchmarks", "medqa", "--corpus", str(corpus),
            "--out", str(tmp_path), "--limit", "4", "--max-new-tokens", "6"]
    assert main(args) == 0
    assert re.search(r"medqa \(n=\d+\): accuracy \d\.\d+ \[", capsys.readouterr().out)
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert main(["eval", "--model", str(checkpoint), "--benchmarks", "nejm_qa", "--corpus", str(corpus)]) == 2
    assert "nejm_qa" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--benchmarks", "medqa"]) == 2
