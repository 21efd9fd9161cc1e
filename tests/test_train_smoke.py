"""The pieces connect: the tiny VLM learns from the synthetic corpus on CPU."""

import pytest
import torch

from medkit.data.dataset import ConversationDataset
from medkit.data.synthetic import generate_corpus
from medkit.profiles import load_profile
from medkit.reproduce import prepare, smoke_training_args
from medkit.training.collator import PadCollator
from medkit.training.run import train

SIZES = {"caption": 40, "report_long": 8, "vqa_mc": 60, "text_mc": 40, "reasoning": 16, "report": 16,
         "trial": 16, "impression": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    generate_corpus(out, seed=0, sizes=SIZES)
    return out


@pytest.mark.slow
def test_tiny_vlm_loss_falls_on_synthetic_corpus(corpus, tmp_path):
    profile = load_profile("tiny")
    tokenizer, model, processor = prepare(profile, corpus)
    files = [corpus / f"{t}.jsonl" for t in ("caption", "vqa_mc", "text_mc")]
    dataset = ConversationDataset.from_jsonl(files, processor, split="train")
    assert any(dataset[i].pixel_values.shape[0] > 1 for i in range(len(dataset)))  # multi-tile images seen
    vision_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    result = train(model, dataset, PadCollator(tokenizer.pad_token_id), smoke_training_args(profile, tmp_path, steps=60))
    assert len(result.losses) == 60
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-5:]) / 5
    assert first > 5.0  # starts near ln(vocab)
    assert last < 0.4 * first, result.losses
    # every part trained in this smoke run, the vision tower included
    changed = [k for k, v in model.model.vision_tower.state_dict().items() if not torch.equal(v, vision_before[k])]
    assert changed


def test_same_seed_same_training_run(corpus, tmp_path):
    profile = load_profile("tiny")
    runs = []
    for attempt in range(2):
        tokenizer, model, processor = prepare(profile, corpus)
        dataset = ConversationDataset.from_jsonl([corpus / "vqa_mc.jsonl"], processor, split="train")
        result = train(model, dataset, PadCollator(tokenizer.pad_token_id),
                       smoke_training_args(profile, tmp_path / str(attempt), steps=4))
        runs.append((result.losses, model.state_dict()))
    (losses_a, weights_a), (losses_b, weights_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
