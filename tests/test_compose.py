"""The paper profile's loading path, run on tiny checkpoints saved in the released models' native formats."""

import torch
from transformers import CLIPConfig, CLIPModel, GptOssForCausalLM

from medkit.chat import load_tokenizer
from medkit.model.build import compose_pretrained, load_model, model_config
from medkit.profiles import get_encoder, load_profile

TEXT_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}


def test_compose_released_encoder_and_lm_then_round_trip(tmp_path):
    tokenizer = load_tokenizer("tiny")
    text_config = model_config(load_profile("tiny"), vocab_size=len(tokenizer)).text_config
    torch.manual_seed(1)
    lm = GptOssForCausalLM(text_config).eval()
    lm.save_pretrained(tmp_path / "gpt-oss")
    clip = CLIPModel(CLIPConfig(vision_config=get_encoder("clip").tiny, text_config=TEXT_TOWER))
    clip.save_pretrained(tmp_path / "clip")

    profile = load_profile("paper", language_model=str(tmp_path / "gpt-oss"), tokenizer="tiny", dtype="float32")
    model = compose_pretrained(profile, tokenizer, encoder_path=str(tmp_path / "clip")).eval()

    assert not any(p.is_meta for p in model.parameters())
    ids = torch.tensor([tokenizer.encode("Portable chest film: small left pleural effusion.")])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, lm(input_ids=ids).logits)  # LM weights carried over
    vision = model.model.vision_tower.state_dict()
    assert all(torch.equal(v, clip.vision_model.state_dict()[k]) for k, v in vision.items())
    assert model.config.text_config.rope_parameters == lm.config.rope_parameters  # YaRN taken as is

    model.save_pretrained(tmp_path / "composed")
    reloaded = load_model(tmp_path / "composed").eval()
    t = model.config.tokens_per_tile
    img = model.config.image_token_id
    ids = torch.tensor([[5, 6] + [img] * t + [7]])
    tiles = torch.randn(1, 3, model.config.tile_size, model.config.tile_size)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, pixel_values=tiles).logits,
                           reloaded(input_ids=ids, pixel_values=tiles).logits)


def test_missing_checkpoint_says_what_to_set(tmp_path):
    import pytest

    profile = load_profile("paper", tokenizer="tiny", language_model=str(tmp_path / "no-such-lm"),
                           encoder_path=str(tmp_path / "no-such-clip"))
    with pytest.raises(FileNotFoundError, match=r"no-such-clip.*set model\.encoder_path in a profile YAML"):
        compose_pretrained(profile, load_tokenizer("tiny"))


def test_hub_id_without_cache_is_a_clear_error(tmp_path):
    import pytest

    clip = CLIPModel(CLIPConfig(vision_config=get_encoder("clip").tiny, text_config=TEXT_TOWER))
    clip.save_pretrained(tmp_path / "clip")
    profile = load_profile("paper", tokenizer="tiny", encoder_path=str(tmp_path / "clip"))
    with pytest.raises(FileNotFoundError, match=r"'openai/gpt-oss-20b'.*set model\.language_model"):
        compose_pretrained(profile, load_tokenizer("tiny"))
