"""Composing from gpt-oss in its released layout: MXFP4 experts, dequantized for training whatever is installed.

The tiny checkpoint below is openai/gpt-oss-20b's config.json (as published on the hub:
``quantization_config`` {"quant_method": "mxfp4", "modules_to_not_convert": [...]}, v4 ``rope_scaling``
with ``rope_theta`` at top level) at toy sizes, and its ``model.safetensors`` holds what the release holds:
bf16 tensors, except each layer's experts, stored as ``mlp.experts.{gate_up_proj,down_proj}_{blocks,scales}``
uint8 tensors (20b: gate_up_proj_blocks [32, 5760, 90, 16], scales [32, 5760, 90]). Blocks are rows of
the weight as ``[out_features]`` x 32-value blocks along ``in_features``, two FP4 (e2m1) values a byte,
low nibble first; scales are one E8M0 exponent (bias 127) per block. The experts' weights are quantized
here from known values, so the test knows what dequantizing must give.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, GptOssConfig, GptOssForCausalLM, Mxfp4Config

from medkit.chat import load_tokenizer
from medkit.model.build import compose_pretrained, load_model
from medkit.profiles import get_encoder, load_profile

# E2M1 code -> value: sign bit 3, then exponent and mantissa (codes 8..15 are the negatives of 0..7)
FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
FP4_MAX = 6.0
BLOCK = 32  # values per shared scale
E8M0_BIAS = 127
EXPERT_WEIGHTS = ("gate_up_proj", "down_proj")
TEXT_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
YARN = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
        "original_max_position_embeddings": 4096}

# openai/gpt-oss-20b config.json with smaller dims, fewer layers and experts, and the tiny tokenizer's ids
# (its pad/eos ids 199999/200002 are the same tokens, <|endoftext|> and <|return|>)
RELEASED_CONFIG = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "experts_per_token": 2, "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
    "initial_context_length": 4096, "initializer_range": 0.02, "intermediate_size": 64,
    "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 131072,
    "model_type": "gpt_oss", "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "num_local_experts": 4, "output_router_logits": False,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05, "rope_scaling": YARN, "rope_theta": 150000, "router_aux_loss_coef": 0.9,
    "sliding_window": 128, "swiglu_limit": 7.0, "tie_word_embeddings": False,
    "transformers_version": "4.55.0.dev0", "use_cache": True,
}


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An expert weight as transformers' GptOssExperts holds it, [experts, in, out], -> (blocks, scales).

    Each block of 32 input values of one output row shares the power of two that brings its largest
    magnitude to at most 6 (FP4's largest); each value is then rounded to the nearest FP4 value.
    """
    experts, n_in, n_out = weight.shape
    rows = weight.transpose(1, 2).float().reshape(experts, n_out, n_in // BLOCK, BLOCK)
    largest = rows.abs().amax(dim=-1, keepdim=True)
    exponent = torch.where(largest > 0, torch.ceil(torch.log2(largest / FP4_MAX)), torch.zeros_like(largest))
    scaled = rows / torch.exp2(exponent)
    codes = (scaled.unsqueeze(-1) - FP4_VALUES).abs().argmin(dim=-1).to(torch.uint8)  # +0.0 wins over -0.0
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)  # two values a byte, the first in the low nibble
    return blocks, (exponent.squeeze(-1) + E8M0_BIAS).to(torch.uint8)


def on_fp4_grid(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Weights MXFP4 holds exactly (FP4 values times a power of two per block), so dequantizing gives them back."""
    experts, n_in, n_out = shape
    codes = torch.randint(0, len(FP4_VALUES), (experts, n_out, n_in), generator=generator)
    exponents = torch.randint(-6, 2, (experts, n_out, n_in // BLOCK, 1), generator=generator)
    rows = FP4_VALUES[codes].reshape(experts, n_out, n_in // BLOCK, BLOCK) * torch.exp2(exponents.float())
    return rows.reshape(experts, n_out, n_in).transpose(1, 2).to(torch.bfloat16)


def write_released_gpt_oss(folder, vocab_size: int, pad_id: int, eos_id: int) -> dict[str, torch.Tensor]:
    """A tiny gpt-oss checkpoint in the release's layout; returns the expert weights it must dequantize to."""
    config = {**RELEASED_CONFIG, "vocab_size": vocab_size, "pad_token_id": pad_id, "eos_token_id": eos_id}
    plain = {k: v for k, v in config.items() if k != "quantization_config"}
    torch.manual_seed(3)
    state = GptOssForCausalLM(GptOssConfig(**plain)).state_dict()
    generator = torch.Generator().manual_seed(4)
    tensors, experts = {}, {}
    for name, value in state.items():
        weight_name = name.rpartition(".")[2]
        if ".mlp.experts." in name and weight_name in EXPERT_WEIGHTS:
            experts[name] = on_fp4_grid(tuple(value.shape), generator)
            tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = quantize_mxfp4(experts[name])
        else:
            tensors[name] = value.to(torch.bfloat16).contiguous()
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return experts


def test_quantize_helper_packs_the_way_the_release_is_read():
    """The layout the helper writes, checked on one hand-made block (independent of transformers)."""
    weight = torch.zeros(1, BLOCK, 1)
    weight[0, :4, 0] = torch.tensor([1.0, -3.0, 1.0, 12.0])  # largest 12 -> scale 2**1
    blocks, scales = quantize_mxfp4(weight)
    assert blocks.shape == (1, 1, 1, BLOCK // 2) and scales.shape == (1, 1, 1)
    assert scales.item() == E8M0_BIAS + 1
    # halved: 0.5 (code 1), -1.5 (code 11), 0.5, 6.0 (code 7), then zeros (code 0); low nibble first
    assert blocks[0, 0, 0].tolist() == [1 | 11 << 4, 1 | 7 << 4] + [0] * 14


@pytest.fixture
def released(tmp_path):
    tokenizer = load_tokenizer("tiny")
    pad_id, eos_id = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|return|>"])
    experts = write_released_gpt_oss(tmp_path / "gpt-oss", len(tokenizer), pad_id, eos_id)
    clip = CLIPModel(CLIPConfig(vision_config=get_encoder("clip").tiny, text_config=TEXT_TOWER))
    clip.save_pretrained(tmp_path / "clip")
    # the paper profile as is (bf16) but eager attention, the one with a CPU backward
    profile = load_profile("paper", language_model=str(tmp_path / "gpt-oss"), tokenizer="tiny",
                           attn_implementation="eager")
    return profile, tokenizer, experts, str(tmp_path / "clip")


def assert_dequantized(model, experts):
    lm = model.model.language_model
    for name, expected in experts.items():
        loaded = lm.get_parameter(name.removeprefix("model."))
        assert loaded.dtype == torch.bfloat16 and loaded.requires_grad
        assert torch.equal(loaded, expected), name


def test_compose_dequantizes_released_mxfp4_experts_trains_and_round_trips(released, tmp_path):
    profile, tokenizer, experts, clip = released
    model = compose_pretrained(profile, tokenizer, encoder_path=clip)

    assert_dequantized(model, experts)
    text_config = model.config.text_config
    assert getattr(text_config, "quantization_config", None) is None
    assert text_config.rope_parameters == {**YARN, "rope_theta": 150000.0}  # v4 rope_scaling read as is
    assert not any(p.is_meta for p in model.parameters())

    t, img = model.config.tokens_per_tile, model.config.image_token_id
    ids = torch.tensor([[5, 6] + [img] * t + [7, 8, 9]])
    labels = torch.cat([torch.full((1, 2 + t), -100), ids[:, 2 + t:]], dim=1)
    tiles = torch.randn(1, 3, model.config.tile_size, model.config.tile_size, generator=torch.Generator().manual_seed(5))
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = model(input_ids=ids, pixel_values=tiles, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    expert = next(iter(experts))
    assert not torch.equal(model.model.language_model.get_parameter(expert.removeprefix("model.")), experts[expert])

    model.eval()
    model.save_pretrained(tmp_path / "composed")
    saved = json.loads((tmp_path / "composed" / "config.json").read_text())
    assert "quantization_config" not in saved and "quantization_config" not in saved["text_config"]
    with safe_open(str(tmp_path / "composed" / "model.safetensors"), framework="pt") as f:
        assert not any(k.endswith(("_blocks", "_scales")) for k in f.keys())
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    reloaded = load_model(tmp_path / "composed", dtype="bfloat16").eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, pixel_values=tiles).logits,
                           reloaded(input_ids=ids, pixel_values=tiles).logits)


def test_dequantize_is_asked_for_even_where_mxfp4_kernels_are_installed(released, monkeypatch):
    """Where triton and the `kernels` package are present, transformers would keep the experts quantized
    on a GPU; compose must ask for dequantized weights explicitly rather than rely on their absence."""
    from transformers.quantizers import quantizer_mxfp4

    monkeypatch.setattr(quantizer_mxfp4, "is_kernels_available", lambda *a, **k: True)
    monkeypatch.setattr(quantizer_mxfp4, "is_triton_available", lambda *a, **k: True)
    calls = []
    original = GptOssForCausalLM.from_pretrained.__func__

    def recording_from_pretrained(cls, *args, **kwargs):
        calls.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(GptOssForCausalLM, "from_pretrained", classmethod(recording_from_pretrained))
    profile, tokenizer, experts, clip = released
    model = compose_pretrained(profile, tokenizer, encoder_path=clip)

    (kwargs,) = calls
    assert isinstance(kwargs["quantization_config"], Mxfp4Config) and kwargs["quantization_config"].dequantize
    assert_dequantized(model, experts)


def test_other_quantization_methods_are_refused(released):
    profile, tokenizer, _, clip = released
    config_file = Path(profile.model.language_model) / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = {"quant_method": "fp8"}
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"quantized with 'fp8'.*Set model\.language_model"):
        compose_pretrained(profile, tokenizer, encoder_path=clip)
