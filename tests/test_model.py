import pytest
import torch
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

from medkit.config import ConfigError
from medkit.model.build import model_config
from medkit.model.encoders import convert_open_clip_vit, load_vision_tower, vision_config
from medkit.model.modeling import ImageTokenMismatchError, MedGPTOssForConditionalGeneration
from medkit.model.summary import encoder_token_budget, meta_model, parameter_table
from medkit.profiles import encoder_registry, get_encoder, load_profile

IMG = 7  # placeholder id used in these tests
VOCAB = 300
ENCODERS = ["clip", "siglip", "medsiglip", "biomedclip"]


def tiny_model(encoder="clip", seed=0):
    config = model_config(load_profile("tiny", encoder=encoder), vocab_size=VOCAB, img_token=IMG)
    torch.manual_seed(seed)
    return MedGPTOssForConditionalGeneration(config).eval()


def sequence_with_images(n_tokens, before=(1, 2, 3), after=(4, 5)):
    return torch.tensor([list(before) + [IMG] * n_tokens + list(after)])


def test_registry_has_the_four_encoders():
    assert sorted(encoder_registry()) == sorted(ENCODERS)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"unknown vision encoder 'dino'.*registered encoders: \['biomedclip', 'clip'"):
        load_profile("tiny", encoder="dino")


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_profile("huge")


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_builds_and_runs_in_tiny(encoder):
    model = tiny_model(encoder)
    cfg = model.config
    tiles = torch.randn(2, 3, cfg.tile_size, cfg.tile_size)
    ids = sequence_with_images(2 * cfg.tokens_per_tile)
    assert model(input_ids=ids, pixel_values=tiles).logits.shape == (1, ids.shape[1], VOCAB)
    out = model(input_ids=ids, pixel_values=tiles, labels=ids)
    assert out.logits is None and torch.isfinite(out.loss)  # training forward: supervised-token loss only
    features = model.get_image_features(tiles).pooler_output
    assert features.shape == (2, cfg.tokens_per_tile, cfg.text_config.hidden_size)


def test_token_counts_come_from_encoder_config():
    expected = {"clip": (24, 144), "siglip": (24, 144), "medsiglip": (32, 256), "biomedclip": (14, 49)}
    for encoder, (side, tokens) in expected.items():
        cfg = model_config(load_profile("paper", encoder=encoder))
        assert (cfg.patches_per_side, cfg.tokens_per_tile) == (side, tokens)
        assert cfg.vision_config.image_size == get_encoder(encoder).paper["image_size"]


def test_image_features_land_exactly_at_placeholders():
    model = tiny_model()
    t = model.config.tokens_per_tile
    tiles = torch.randn(3, 3, model.config.tile_size, model.config.tile_size)
    ids = torch.tensor([[1] + [IMG] * t + [2, 3] + [IMG] * 2 * t + [4]])
    captured = {}
    model.model.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        model(input_ids=ids, pixel_values=tiles)
        features = model.get_image_features(tiles).pooler_output.reshape(-1, model.config.text_config.hidden_size)
        text_embeds = model.get_input_embeddings()(ids)
    embeds = captured["embeds"][0]
    is_img = ids[0] == IMG
    assert torch.equal(embeds[is_img], features)  # in order: tile 0 tokens, tile 1, tile 2
    assert torch.equal(embeds[~is_img], text_embeds[0][~is_img])


def test_multiple_images_in_different_turns_and_rows():
    model = tiny_model()
    t = model.config.tokens_per_tile
    row0 = [1] + [IMG] * t + [2] + [IMG] * t + [3]
    row1 = [1, 2] + [IMG] * t + [3, 3]
    ids = torch.tensor([row0, row1 + [0] * (len(row0) - len(row1))])
    tiles = torch.randn(3, 3, model.config.tile_size, model.config.tile_size)
    out = model(input_ids=ids, pixel_values=tiles)
    assert out.logits.shape[:2] == ids.shape


def test_placeholder_feature_mismatch_raises_clear_error():
    model = tiny_model()
    t = model.config.tokens_per_tile
    tiles = torch.randn(2, 3, model.config.tile_size, model.config.tile_size)
    with pytest.raises(ImageTokenMismatchError, match=rf"placeholder tokens \({t}; per sequence \[{t}\]\).*2 tiles x {t}"):
        model(input_ids=sequence_with_images(t), pixel_values=tiles)


def test_save_and_reload_gives_identical_logits(tmp_path):
    model = tiny_model("siglip")
    cfg = model.config
    tiles = torch.randn(1, 3, cfg.tile_size, cfg.tile_size)
    ids = sequence_with_images(cfg.tokens_per_tile)
    with torch.no_grad():
        before = model(input_ids=ids, pixel_values=tiles).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    reloaded = MedGPTOssForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert type(reloaded.model.vision_tower).__name__ == "SiglipVisionModel"
    assert reloaded.config.encoder_name == "siglip"
    with torch.no_grad():
        after = reloaded(input_ids=ids, pixel_values=tiles).logits
    assert torch.equal(before, after)


def test_same_seed_same_weights_different_seed_different():
    a, b, c = tiny_model(seed=0), tiny_model(seed=0), tiny_model(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_lm_keeps_gpt_oss_structure():
    text = model_config(load_profile("tiny"), vocab_size=VOCAB).text_config
    assert text.model_type == "gpt_oss"
    assert text.num_local_experts > text.num_experts_per_tok > 1
    assert set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert text.rope_parameters["rope_type"] == "yarn"
    model = tiny_model()
    assert hasattr(model.model.language_model.layers[0].self_attn, "sinks")  # attention sinks


def test_paper_config_has_yarn_once():
    text = model_config(load_profile("paper")).text_config
    rope = text.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("yarn", 32.0, 150000.0)
    assert rope["original_max_position_embeddings"] * rope["factor"] == text.max_position_embeddings == 131072


def test_paper_parameter_counts_from_config_alone():
    table = parameter_table(meta_model(load_profile("paper")))
    lm = sum(r["total"] for p, r in table.items() if p.startswith("lm"))
    assert 20.5e9 < lm < 21.5e9  # gpt-oss-20b: ~20.9B parameters
    assert 300e6 < table["vision_tower"]["total"] < 310e6  # CLIP ViT-L/14 vision tower ~303M
    # projector: LayerNorm(4096) + 4096x2880 + 2880x2880 linear layers
    assert table["projector"]["total"] == 2 * 4096 + 4096 * 2880 + 2880 + 2880 * 2880 + 2880


def test_token_budget_per_image():
    rows = {r.encoder: r for r in encoder_token_budget(load_profile("paper"))}
    assert rows["clip"].max_tiles_per_image == 13
    assert rows["clip"].max_tokens_per_image == 13 * 144


# --- paper-profile loaders, exercised on tiny checkpoints saved in each encoder's native format ---

def test_clip_and_siglip_towers_load_from_full_checkpoints(tmp_path):
    for name, full_model in [
        ("clip", CLIPModel(CLIPConfig(vision_config=get_encoder("clip").tiny, text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}))),
        ("siglip", SiglipModel(SiglipConfig(vision_config=get_encoder("siglip").tiny, text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}))),
    ]:
        full_model.save_pretrained(tmp_path / name)
        tower = load_vision_tower(get_encoder(name), str(tmp_path / name))
        source = full_model.vision_model.state_dict()
        loaded = tower.state_dict()
        assert source.keys() == loaded.keys()
        assert all(torch.equal(source[k], loaded[k]) for k in source)


def fake_open_clip_state(hidden=64, layers=3, patch=16, image=64, mlp=128):
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)
    n = (image // patch) ** 2
    s = {
        "visual.trunk.cls_token": r(1, 1, hidden),
        "visual.trunk.pos_embed": r(1, n + 1, hidden),
        "visual.trunk.patch_embed.proj.weight": r(hidden, 3, patch, patch),
        "visual.trunk.patch_embed.proj.bias": r(hidden),
        "visual.trunk.norm.weight": r(hidden),
        "visual.trunk.norm.bias": r(hidden),
        "visual.head.proj.weight": r(512, hidden),  # open_clip projection head: not part of the trunk
        "text.transformer.embeddings.word_embeddings.weight": r(10, 8),
    }
    for i in range(layers):
        p = f"visual.trunk.blocks.{i}."
        s.update({
            p + "norm1.weight": r(hidden), p + "norm1.bias": r(hidden),
            p + "attn.qkv.weight": r(3 * hidden, hidden), p + "attn.qkv.bias": r(3 * hidden),
            p + "attn.proj.weight": r(hidden, hidden), p + "attn.proj.bias": r(hidden),
            p + "norm2.weight": r(hidden), p + "norm2.bias": r(hidden),
            p + "mlp.fc1.weight": r(mlp, hidden), p + "mlp.fc1.bias": r(mlp),
            p + "mlp.fc2.weight": r(hidden, mlp), p + "mlp.fc2.bias": r(hidden),
        })
    return s


def test_biomedclip_open_clip_checkpoint_converts_into_vit(tmp_path):
    state = fake_open_clip_state()
    folder = tmp_path / "biomedclip"
    folder.mkdir()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    spec = get_encoder("biomedclip")
    tower = load_vision_tower(spec, str(folder), config=vision_config(spec, "tiny"))
    sd = tower.state_dict()
    qkv_w = state["visual.trunk.blocks.1.attn.qkv.weight"]
    assert torch.equal(sd["layers.1.attention.q_proj.weight"], qkv_w[:64])
    assert torch.equal(sd["layers.1.attention.k_proj.weight"], qkv_w[64:128])
    assert torch.equal(sd["layers.1.attention.v_proj.weight"], qkv_w[128:])
    assert torch.equal(sd["embeddings.position_embeddings"], state["visual.trunk.pos_embed"])
    assert torch.equal(sd["layers.2.mlp.fc2.weight"], state["visual.trunk.blocks.2.mlp.fc2.weight"])
    assert tower.config.layer_norm_eps == 1e-6


def test_open_clip_conversion_rejects_other_checkpoints():
    with pytest.raises(KeyError, match="not an open_clip timm-trunk checkpoint"):
        convert_open_clip_vit({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)}, 1)


def test_text_only_training_batch_still_runs_vision_with_zero_weight():
    model = tiny_model().train()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = [p.grad for p in model.model.vision_tower.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)  # joined the graph, changed nothing
    model.eval()
    with torch.no_grad():  # the blank tile changed nothing: the same loss as without it
        assert torch.equal(model(input_ids=ids, labels=ids).loss, out.loss.detach())
