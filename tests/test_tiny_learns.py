"""The tiny model learns something a reader can see: held-out multiple-choice accuracy above chance.

A real run at smoke size: the tiny VLM from random weights, the pipeline's own single-process training
(``medkit.training.run.train``) on the corpus's ``text_mc`` training items, then ``medkit eval``'s runner on
the MedQA counterpart (held-out items only) with the strict scorer. The bar is the benchmark's own chance
rate, recorded by the runner, below the lower end of the 95% CI: a model that had learned nothing (or only
the answer frame) fails it.
"""

from pathlib import Path

import pytest

from medkit.data.dataset import ConversationDataset
from medkit.data.synthetic import generate_corpus
from medkit.eval.adapters import MedkitAdapter
from medkit.eval.runner import EvalRequest, run_eval
from medkit.profiles import load_profile
from medkit.reproduce import prepare
from medkit.training.collator import PadCollator
from medkit.training.run import single_process_args, train

STEPS = 400  # ~80 s on 2 cores; at 240 the answer texts are half learned (59% of outputs name no option)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("learn") / "corpus"
    generate_corpus(out, seed=0, sizes={"text_mc": 1200})  # 960 training items, 240 held out
    return out


@pytest.mark.slow
def test_the_tiny_model_beats_chance_on_a_held_out_multiple_choice_counterpart(corpus, tmp_path):
    profile = load_profile("tiny")
    tokenizer, model, processor = prepare(profile, corpus)
    dataset = ConversationDataset.from_jsonl([corpus / "text_mc.jsonl"], processor, split="train")
    args = single_process_args(tmp_path / "train", seed=profile.seed, learning_rate=3e-3, steps=STEPS, batch_size=8)
    train(model, dataset, PadCollator(tokenizer.pad_token_id), args)

    request = EvalRequest(benchmarks=["medqa"], out_dir=tmp_path / "eval", corpus_dir=corpus, batch_size=16,
                          n_boot=500, profile="tiny")
    (result,) = run_eval(MedkitAdapter(model, processor, profile, name="learns"), request, progress=False)
    metrics = result["metrics"]
    assert result["n"] >= 30 and result["source"] == "synthetic"
    assert 0.2 <= metrics["chance_rate"] <= 0.25  # 4 or 5 options per item
    assert metrics["ci_low"] > metrics["chance_rate"], metrics
    assert metrics["unparsed_rate"] < 0.5, metrics
