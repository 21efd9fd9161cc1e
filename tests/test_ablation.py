"""The LoRA encoder ablation (Figure 1) on the tiny profile, with toy step counts."""

import json
from dataclasses import replace

import pytest
import torch

from medkit.chat import load_tokenizer
from medkit.config import ConfigError
from medkit.data.synthetic import generate_corpus
from medkit.model.build import build_tiny_model
from medkit.profiles import load_profile
from medkit.training.ablation import add_lora, load_ablation_config, run_ablation, text_only

SIZES = {"caption": 20, "report_long": 5, "report": 10, "vqa_mc": 20, "text_mc": 10, "reasoning": 5,
         "trial": 5, "impression": 5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation_corpus")
    generate_corpus(root, seed=0, sizes=SIZES)
    return root


def toy_config(steps=2):
    config = load_ablation_config("tiny")
    short = dict(steps=steps, batch_size=4)
    return replace(
        config,
        base_lm=replace(config.base_lm, **short),
        projector_pretraining=replace(config.projector_pretraining, **short),
        lora_finetuning=replace(config.lora_finetuning, **short),
        evaluation=replace(config.evaluation, n_boot=200),
    )


def strip_runtime(results):
    return [{k: v for k, v in row.items() if k != "train_runtime_s"} for row in results["encoders"]]


@pytest.mark.slow
def test_every_encoder_trains_and_is_scored_on_the_same_items(tmp_path, corpus):
    results = run_ablation("tiny", tmp_path / "run", data_root=corpus, config=toy_config())
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["encoder"] for r in on_disk["encoders"]] == ["clip", "biomedclip", "siglip", "medsiglip"]
    assert on_disk["seed"] == 0 and on_disk["profile"] == "tiny"
    for row in results["encoders"]:
        acc, loss = row["mc_accuracy"], row["heldout_loss"]
        assert acc["n"] == 4  # the eval split of 20 vqa_mc items, the same for every encoder
        assert acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"]
        assert loss["ci_low"] <= loss["mean"] <= loss["ci_high"] and loss["mean"] > 0
        assert row["phase1_loss"]["steps"] == 2 and row["phase2_loss"]["steps"] == 2
        ids = [json.loads(line)["id"] for line in (tmp_path / "run" / row["encoder"] / "predictions.jsonl").open()]
        assert ids == [json.loads(line)["id"] for line in (tmp_path / "run" / "clip" / "predictions.jsonl").open()]
        assert (tmp_path / "run" / row["encoder"] / "adapter" / "adapter_model.safetensors").is_file()
    assert results["encoders"][0]["trainable_parameters_phase2"] < results["encoders"][0]["total_parameters"]


@pytest.mark.slow
def test_same_seed_gives_identical_results(tmp_path, corpus):
    config = replace(toy_config(), encoders=["siglip"])
    first = run_ablation("tiny", tmp_path / "a", data_root=corpus, config=config)
    second = run_ablation("tiny", tmp_path / "b", data_root=corpus, config=config)
    assert strip_runtime(first) == strip_runtime(second)
    assert (tmp_path / "a/siglip/predictions.jsonl").read_bytes() == (tmp_path / "b/siglip/predictions.jsonl").read_bytes()


def test_lora_trains_adapters_and_projector_only():
    profile = load_profile("tiny")
    model = build_tiny_model(profile, load_tokenizer("tiny"))
    peft_model = add_lora(model, load_ablation_config("tiny").lora)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert any("self_attn.q_proj.lora_A" in n for n in trainable)
    assert any("mlp.experts" in n and "lora_A" in n for n in trainable)  # expert weights adapted too
    assert not any("vision_tower" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert all(torch.count_nonzero(p) == 0 for p in before.values())  # LoRA starts as the identity


def test_unknown_encoder_and_bad_config_are_clear_errors(tmp_path):
    bad = tmp_path / "ablation.yaml"
    bad.write_text((load_ablation_config.__globals__["CONFIG_DIR"] / "ablation" / "tiny.yaml").read_text()
                   .replace("encoders: [clip,", "encoders: [dinov2, clip,"))
    with pytest.raises(ConfigError, match="dinov2"):
        load_ablation_config(bad)
    bad.write_text("encoders: [clip]\nlr: 3\n")
    with pytest.raises(ConfigError, match="lr"):
        load_ablation_config(bad)
    with pytest.raises(ConfigError, match="not in the ablation config"):
        run_ablation("tiny", tmp_path / "x", data_root=tmp_path, config=toy_config(), encoders=["clip", "vit"])


def test_missing_data_file_names_the_path(tmp_path):
    config = toy_config()
    with pytest.raises(FileNotFoundError, match=r"nowhere.text_mc\.jsonl does not exist"):
        run_ablation("tiny", tmp_path / "run", data_root=tmp_path / "nowhere", config=config)
    assert not (tmp_path / "run" / "results.json").exists()


def test_text_only_drops_images_keeps_text(corpus):
    from medkit.data.schema import read_jsonl

    sample = next(s for s in read_jsonl(corpus / "vqa_mc.jsonl") if len(s.images) > 1)
    stripped = text_only(sample)
    assert stripped.images == [] and stripped.num_image_parts == 0
    assert [m["role"] for m in stripped.messages] == [m["role"] for m in sample.messages]
