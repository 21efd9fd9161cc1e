"""Baseline adapters: strict specs, message building, offline prompt rendering and a tiny real generate.

No hub files are used: the processor is a real Qwen2-VL processor built locally around medkit's tiny
tokenizer with a fixture chat template in the Qwen2.5-VL family's structure, and the model is a randomly
initialised tiny Qwen2-VL.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from medkit.config import ConfigError
from medkit.data.schema import Sample
from medkit.eval import baselines as bl
from medkit.eval.generation import DecodeSettings

FIXTURES = Path(__file__).parent / "fixtures" / "baselines"
QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
EXPECTED = ["octomed-7b", "hulu-med-32b", "lingshu-32b", "medgemma-27b", "qoq-med-32b"]


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    colours = {"a.png": (255, 0, 0), "b.png": (0, 255, 0), "c.png": (0, 0, 255)}
    sizes = {"a.png": (64, 40), "b.png": (40, 64), "c.png": (56, 56)}
    for name, colour in colours.items():
        Image.new("RGB", sizes[name], colour).save(tmp_path / name)
    return tmp_path


def mc_sample(sample_id: str = "s1", images: tuple[str, ...] = ("a.png", "b.png"), with_answer: bool = True,
              system: str | None = "Answer with the option letter.") -> Sample:
    messages = [{"role": "system", "content": system}] if system else []
    parts = [{"type": "image"}, {"type": "text", "text": "Compare the two views."}, {"type": "image"}] if len(images) == 2 else \
        [{"type": "image"}] * len(images)
    messages.append({"role": "user", "content": [*parts, {"type": "text", "text": "Which lung? A) left B) right"}]})
    if with_answer:
        messages.append({"role": "assistant", "content": "B"})
    return Sample(id=sample_id, messages=messages, images=list(images))


def tiny_qwen_processor():
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen2VLProcessor

    from medkit.chat.tokenizer import TINY_TOKENIZER_DIR

    # the kit's env has no torchvision, which the video processor's base class needs; the unused video
    # slot is allowed to stay empty
    class NoVideoProcessor(Qwen2VLProcessor):
        def check_argument_for_proper_class(self, name, arg):
            return None if arg is None else super().check_argument_for_proper_class(name, arg)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TINY_TOKENIZER_DIR)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    tokenizer.pad_token = "<|im_end|>"
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14,
                                            merge_size=2, temporal_patch_size=2)
    template = (FIXTURES / "qwen_like_chat_template.jinja").read_text()
    return NoVideoProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def tiny_qwen_model(tokenizer):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|im_end|>"]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        video_token_id=ids["<|vision_end|>"], initializer_range=0.5,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None  # run the full budget so batched vs single is compared on every step
    return model


def spec_named(name: str, **changes) -> bl.BaselineSpec:
    return dataclasses.replace(bl.get_spec(name), **changes)


# ---------------------------------------------------------------------------------------------- specs

def test_yaml_loads_all_paper_baselines():
    specs = bl.load_specs()
    assert list(specs) == EXPECTED == bl.baseline_names()
    for spec in specs.values():
        assert spec.generation_kwargs.get("do_sample", False) is False
        assert spec.answer_extraction in ("plain", "strip_think", "think_answer")


def test_only_hulu_med_trusts_remote_code():
    assert {n for n, s in bl.load_specs().items() if s.trust_remote_code} == {"hulu-med-32b"}


def test_reasoning_models_strip_their_think_blocks():
    specs = bl.load_specs()
    assert specs["octomed-7b"].answer_extraction == "strip_think"
    assert specs["qoq-med-32b"].answer_extraction == "think_answer"
    assert specs["lingshu-32b"].answer_extraction == "plain"


def write_registry(tmp_path: Path, entry: dict) -> Path:
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"baselines": [entry]}))
    return path


BASE_ENTRY = {"name": "x", "hub_id": "org/x", "model_class": "AutoModelForImageTextToText"}


@pytest.mark.parametrize("bad, message", [
    ({"trust_remote_code": "yes"}, "expected bool"),
    ({"revison": "abc"}, "unknown key"),
    ({"answer_extraction": "regex"}, "is not one of"),
    ({"generation_kwargs": {"do_sample": True}}, "greedily"),
    ({"generation_kwargs": {"temperature": 0.7}}, "not allowed"),
    ({"model_class": "AutoModelForMagic"}, "not a transformers class"),
    ({"image": {"max_pixel": 10}}, "unknown key"),
])
def test_yaml_is_strict(tmp_path: Path, bad: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        bl.load_specs(write_registry(tmp_path, {**BASE_ENTRY, **bad}))


def test_unknown_baseline_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown baseline 'gpt-5'.*lingshu-32b"):
        bl.load_baseline("gpt-5")


# ----------------------------------------------------------------------------------------- extraction

@pytest.mark.parametrize("text, mode, expected", [
    ("<think>left is dense</think>\n\nB", "strip_think", "B"),
    ("<think>a</think>x<think>b</think> B ", "strip_think", "x B"),
    ("reasoning in the prompt's open block</think>B", "strip_think", "B"),
    ("<think>ran out of budget", "strip_think", ""),
    ("no block at all: B", "strip_think", "no block at all: B"),
    ("<think>hmm</think><answer> C </answer>", "think_answer", "C"),
    ("<think>hmm</think>Answer: D", "think_answer", "Answer: D"),
    ("  <think>kept</think> B ", "plain", "<think>kept</think> B"),
])
def test_answer_extraction(text: str, mode: str, expected: str):
    assert bl.extract_answer(text, mode) == expected


# ------------------------------------------------------------------------------------------- messages

def test_build_messages_orders_images_and_merges_system(image_root: Path):
    adapter = bl.HFChatAdapter.from_spec(bl.get_spec("medgemma-27b"), model=object(), processor=object())
    messages = adapter.build_messages(mc_sample(), image_root)
    assert [m["role"] for m in messages] == ["system", "user"]  # answer turn dropped
    assert messages[0]["content"] == [{"type": "text", "text": "You are a helpful medical assistant.\n\nAnswer with the option letter."}]
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["image", "text", "image", "text"]
    assert [p["image"].getpixel((0, 0)) for p in parts if p["type"] == "image"] == [(255, 0, 0), (0, 255, 0)]
    assert parts[1]["text"] == "Compare the two views." and parts[3]["text"] == "Which lung? A) left B) right"


def test_no_spec_prompt_passes_sample_system_through(image_root: Path):
    adapter = bl.HFChatAdapter.from_spec(bl.get_spec("lingshu-32b"), model=object(), processor=object())
    assert adapter.build_messages(mc_sample(), image_root)[0]["content"][0]["text"] == "Answer with the option letter."
    assert adapter.build_messages(mc_sample(system=None), image_root)[0]["role"] == "user"


def test_missing_image_names_file_and_record(image_root: Path):
    adapter = bl.HFChatAdapter.from_spec(bl.get_spec("lingshu-32b"), model=object(), processor=object())
    with pytest.raises(ValueError, match=r"missing\.png.*record s9"):
        adapter.build_messages(mc_sample("s9", images=("a.png", "missing.png")), image_root)


# ----------------------------------------------------------------------------- offline prompt rendering

def test_chat_template_renders_image_placeholders_in_order(image_root: Path):
    processor = tiny_qwen_processor()
    adapter = bl.HFChatAdapter.from_spec(bl.get_spec("lingshu-32b"), model=object(), processor=processor)
    items = [(mc_sample("s1"), image_root), (mc_sample("s2", images=("c.png",), system=None), image_root)]
    batch = adapter.encode(items)
    tokenizer = processor.tokenizer
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # a.png (64x40) and b.png (40x64) give different grids, so order shows in the per-image token runs
    grids = batch["image_grid_thw"].tolist()
    assert len(grids) == 3 and grids[0] != grids[1]
    per_image = [t * h * w // 4 for t, h, w in grids]
    row0 = batch["input_ids"][0].tolist()
    runs, count = [], 0
    for token in row0 + [-1]:
        if token == pad:
            count += 1
        elif count:
            runs.append(count)
            count = 0
    assert runs == per_image[:2]
    assert batch["input_ids"][1].tolist().count(pad) == per_image[2]
    # left padding: the shorter prompt starts with pads, both end with the generation prompt
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]
    text0 = tokenizer.decode(row0)
    assert text0.index("Compare the two views.") < text0.index("Which lung? A) left B) right")
    assert text0.startswith("<|im_start|>system\nAnswer with the option letter.<|im_end|>")
    assert "assistant\nB" not in text0
    for row in batch["input_ids"]:
        assert tokenizer.decode(row).endswith("<|im_start|>assistant\n")
    assert "Default system." in tokenizer.decode(batch["input_ids"][1])


def test_image_settings_reach_the_processor(image_root: Path):
    processor = tiny_qwen_processor()
    small = spec_named("lingshu-32b", image=bl.ImageSettings(max_pixels=28 * 28 * 4))
    large = spec_named("lingshu-32b", image=bl.ImageSettings(min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64))
    counts = [bl.HFChatAdapter(s, model=object(), processor=processor).encode([(mc_sample(), image_root)])["pixel_values"].shape[0]
              for s in (small, large)]
    assert counts[0] < counts[1]


# ------------------------------------------------------------------------------------------ fingerprint

def test_fingerprint_tracks_revision_image_settings_and_template():
    processor = tiny_qwen_processor()
    model = tiny_qwen_model(processor.tokenizer)
    spec = bl.get_spec("lingshu-32b")
    base = bl.HFChatAdapter(spec, model=model, processor=processor).fingerprint()
    assert base["hub_id"] == "lingshu-medical-mllm/Lingshu-32B" and base["chat_template_sha256"]
    pinned = bl.HFChatAdapter(dataclasses.replace(spec, revision="0123abc"), model=model, processor=processor).fingerprint()
    resized = bl.HFChatAdapter(dataclasses.replace(spec, image=bl.ImageSettings(max_pixels=1024)), model=model,
                               processor=processor).fingerprint()
    assert pinned != base and resized != base
    processor.chat_template += " "
    assert bl.HFChatAdapter(spec, model=model, processor=processor).fingerprint() != base


# --------------------------------------------------------------------------------------- offline loading

@pytest.mark.parametrize("name", ["medgemma-27b", "hulu-med-32b"])
def test_offline_load_error_names_hub_id(name: str, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    adapter = bl.load_baseline(name)
    hub_id = bl.get_spec(name).hub_id
    with pytest.raises(bl.BaselineUnavailable, match=rf"baseline '{name}': .*{hub_id}.*not available offline.*HF_HOME"):
        adapter.fingerprint()
    with pytest.raises(OSError, match=hub_id):
        _ = adapter.model


def test_local_path_is_used_instead_of_the_hub(tmp_path: Path):
    adapter = bl.load_baseline("octomed-7b", local_path=tmp_path / "nowhere")
    with pytest.raises(bl.BaselineUnavailable, match="nowhere"):
        _ = adapter.processor


# ----------------------------------------------------------------------------------------- generation

def test_generate_batched_equals_one_at_a_time(image_root: Path):
    processor = tiny_qwen_processor()
    model = tiny_qwen_model(processor.tokenizer)
    adapter = bl.HFChatAdapter.from_spec(spec_named("octomed-7b", max_new_tokens=5), model=model, processor=processor)
    items = [(mc_sample("s1"), image_root), (mc_sample("s2", images=("c.png",), system=None), image_root)]
    batched = adapter.generate(items, DecodeSettings(batch_size=2))
    single = adapter.generate(items, DecodeSettings(batch_size=1))
    assert [c.id for c in batched] == ["s1", "s2"]
    assert batched == single
    assert all(c.raw for c in batched)
    assert batched[0].raw != batched[1].raw  # the prompts reach the model


def test_generate_applies_extraction(image_root: Path, monkeypatch):
    processor = tiny_qwen_processor()
    model = tiny_qwen_model(processor.tokenizer)
    adapter = bl.HFChatAdapter(spec_named("octomed-7b", max_new_tokens=3), model=model, processor=processor)
    monkeypatch.setattr(processor.tokenizer, "decode", lambda ids, skip_special_tokens=False: "<think>x</think> B")
    assert adapter.generate([(mc_sample(), image_root)], DecodeSettings())[0].final == "B"


def test_sampling_is_refused(image_root: Path):
    adapter = bl.HFChatAdapter(bl.get_spec("lingshu-32b"), model=object(), processor=object())
    with pytest.raises(ValueError, match="greedy decoding"):
        adapter.generate([(mc_sample(), image_root)], DecodeSettings(do_sample=True))
