"""Baseline adapters: strict specs, message building, offline prompt rendering and a tiny real generate.

No hub files are used: the processors are real Qwen2-VL and Gemma 3 processors built locally around
medkit's tiny tokenizer with fixture chat templates written in each model family's structure, and the
model is a randomly initialised tiny Qwen2-VL (or a stand-in that records its generate call). Hulu-Med's
processor and model are remote code, so stand-ins for them record the calls its adapter makes, which are
checked against its official inference's calling convention (the source is named in baselines.yaml).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from PIL import Image
from transformers import GenerationConfig

from medkit.config import ConfigError
from medkit.data.schema import Sample
from medkit.eval import baselines as bl
from medkit.eval.adapters import weights_fingerprint
from medkit.eval.benchmarks.prompts import MC_CONSTRAINT, SYSTEM_VQA, mc_messages
from medkit.eval.generation import DecodeSettings

FIXTURES = Path(__file__).parent / "fixtures" / "baselines"
QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
GEMMA_IMAGE_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                      "image_token": "<image_soft_token>"}
EXPECTED = ["octomed-7b", "hulu-med-32b", "lingshu-32b", "lingshu-7b", "medmo-8b", "medgemma-27b", "qoq-med-32b"]
# The chat-template family each spec in baselines.yaml names (its base model); Hulu-Med's processor is remote code.
TEMPLATE_FAMILY = {"octomed-7b": "qwen2.5-vl", "lingshu-32b": "qwen2.5-vl", "qoq-med-32b": "qwen2.5-vl",
                   "lingshu-7b": "qwen2.5-vl", "medmo-8b": "qwen3-vl", "medgemma-27b": "gemma3"}
REMOTE_CODE = {"hulu-med-32b"}
OPTIONS = {"A": "Pulmonary embolism", "B": "Pneumonia", "C": "Gout", "D": "Hepatitis B"}
QUESTION = "Which finding is shown?"


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


def benchmark_sample(sample_id: str, images: tuple[str, ...]) -> Sample:
    """A multiple-choice item as the benchmark prompts build it, with its answer turn."""
    messages = mc_messages(QUESTION, OPTIONS, system=SYSTEM_VQA, n_images=len(images))
    return Sample(id=sample_id, messages=[*messages, {"role": "assistant", "content": "B"}], images=list(images))


def tiny_qwen_processor(template: str = "qwen_like_chat_template.jinja"):
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
    return NoVideoProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            chat_template=(FIXTURES / template).read_text())


def tiny_gemma_processor():
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    from medkit.chat.tokenizer import TINY_TOKENIZER_DIR

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TINY_TOKENIZER_DIR, extra_special_tokens=GEMMA_IMAGE_TOKENS)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    return Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 28, "width": 28}), tokenizer=tokenizer,
                           image_seq_length=3, chat_template=(FIXTURES / "gemma3_chat_template.jinja").read_text())


def tiny_qwen3_vl_processor():
    """A Qwen3-VL processor (16-px patches, merged 2x2) around the kit's small tokenizer and a template
    in the released Qwen3-VL Instruct format."""
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen3VLProcessor

    from medkit.chat.tokenizer import TINY_TOKENIZER_DIR

    class NoVideoProcessor(Qwen3VLProcessor):  # no torchvision here, as for tiny_qwen_processor
        def check_argument_for_proper_class(self, name, arg):
            return None if arg is None else super().check_argument_for_proper_class(name, arg)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TINY_TOKENIZER_DIR)
    tokenizer.add_special_tokens({"additional_special_tokens": [*QWEN_SPECIAL, "<|video_pad|>"]})
    tokenizer.pad_token = "<|im_end|>"
    image_processor = Qwen2VLImageProcessor(min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 16, patch_size=16,
                                            merge_size=2, temporal_patch_size=2)
    return NoVideoProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            chat_template=(FIXTURES / "qwen3_vl_chat_template.jinja").read_text())


def family_processor(family: str):
    if family == "gemma3":
        return tiny_gemma_processor()
    if family == "qwen3-vl":
        return tiny_qwen3_vl_processor()
    return tiny_qwen_processor("qwen2_5_vl_chat_template.jinja")


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


# ---------------------------------------------------------------- every baseline's prompt, offline

def test_every_baseline_has_an_offline_prompt_check():
    assert set(TEMPLATE_FAMILY) | REMOTE_CODE == set(bl.load_specs())


def prompt_opening(family: str, system: str, bos: str) -> str:
    if family == "gemma3":  # Gemma 3 has no system turn: the system text opens the first user turn
        return f"{bos}<start_of_turn>user\n{system}\n\n"
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"


GENERATION_PROMPT = {"gemma3": "<start_of_turn>model\n", "qwen2.5-vl": "<|im_start|>assistant\n",
                     "qwen3-vl": "<|im_start|>assistant\n"}
IMAGE_MARKER = {"gemma3": "<start_of_image>", "qwen2.5-vl": "<|vision_start|>", "qwen3-vl": "<|vision_start|>"}
PATCH_VALUES = {"gemma3": 0, "qwen2.5-vl": 2 * 14 * 14, "qwen3-vl": 2 * 16 * 16}  # values per patch row


def image_colours(batch, family: str, patch_values: int = 2 * 14 * 14) -> list[int]:
    """Dominant colour channel of each image the processor received, in order."""
    pixels = batch["pixel_values"]
    if family == "gemma3":  # (images, channels, height, width)
        return [int(image.mean(dim=(1, 2)).argmax()) for image in pixels]
    # Qwen: one row of patches per grid cell, each row channel-major (channel, time, patch, patch)
    sizes = [t * h * w for t, h, w in batch["image_grid_thw"].tolist()]
    return [int(rows.reshape(len(rows), 3, patch_values).mean(dim=(0, 2)).argmax())
            for rows in torch.split(pixels, sizes)]


@pytest.mark.parametrize("name", sorted(TEMPLATE_FAMILY))
def test_prompt_is_rendered_by_the_processors_chat_template(name: str, image_root: Path, monkeypatch):
    spec, family = bl.get_spec(name), TEMPLATE_FAMILY[name]
    processor = family_processor(family)
    calls = []
    render = processor.apply_chat_template
    def spy(conversations, **kwargs):
        calls.append(json.loads(json.dumps(kwargs)))  # a copy: transformers adds to processor_kwargs
        return render(conversations, **kwargs)

    monkeypatch.setattr(processor, "apply_chat_template", spy)
    adapter = bl.HFChatAdapter(spec, model=object(), processor=processor)
    items = [(benchmark_sample("s1", ("a.png", "b.png")), image_root), (benchmark_sample("s2", ("c.png",)), image_root)]
    batch = adapter.encode(items)
    (kwargs,) = calls
    assert kwargs["add_generation_prompt"] is True and kwargs["tokenize"] is True
    assert kwargs["processor_kwargs"] == {"padding": True, **spec.image.processor_kwargs()}
    assert image_colours(batch, family, PATCH_VALUES[family]) == [0, 1, 2]  # a.png red, b.png green (item 1), c.png blue (item 2)
    system = bl.merged_system_prompt(spec.system_prompt, [SYSTEM_VQA])
    if spec.system_prompt:
        assert system.startswith(spec.system_prompt)
    tokenizer = processor.tokenizer
    for row, mask, n_images in zip(batch["input_ids"], batch["attention_mask"], (2, 1)):
        text = tokenizer.decode(row[mask.bool()])
        assert text.startswith(prompt_opening(family, system, tokenizer.bos_token or ""))
        assert text.endswith(GENERATION_PROMPT[family])
        assert text.count(IMAGE_MARKER[family]) == n_images
        option_lines = [f"{letter}. {option}" for letter, option in OPTIONS.items()]
        texts = [QUESTION, *option_lines, MC_CONSTRAINT]
        positions = [text.rindex(IMAGE_MARKER[family]), *(text.index(x) for x in texts)]
        assert positions == sorted(positions)  # images first, then the question, options and constraint
        assert GENERATION_PROMPT[family] + "B" not in text  # the answer turn is dropped


class RecordingModel:
    """Stands in for the weights: records generate's kwargs and appends a fixed completion."""

    device = torch.device("cpu")
    dtype = torch.float32
    generation_config = None

    def __init__(self, completion_ids: list[int]):
        self.completion = torch.tensor([completion_ids])
        self.calls: list[dict] = []

    def generate(self, **kwargs):
        self.calls.append(kwargs)
        return torch.cat([kwargs["input_ids"], self.completion.expand(len(kwargs["input_ids"]), -1)], dim=1)


COMPLETION = "<think>the left base</think><answer>B</answer>"
EXTRACTED = {"plain": COMPLETION, "strip_think": "<answer>B</answer>", "think_answer": "B"}


@pytest.mark.parametrize("name", sorted(TEMPLATE_FAMILY))
def test_generate_uses_the_specs_decoding_and_extraction(name: str, image_root: Path):
    spec = bl.get_spec(name)
    processor = family_processor(TEMPLATE_FAMILY[name])
    model = RecordingModel(processor.tokenizer.encode(COMPLETION, add_special_tokens=False))
    adapter = bl.HFChatAdapter(spec, model=model, processor=processor)
    items = [(benchmark_sample("s1", ("a.png", "b.png")), image_root), (benchmark_sample("s2", ("c.png",)), image_root)]
    completions = adapter.generate(items, DecodeSettings(max_new_tokens=7, batch_size=2))
    (call,) = model.calls
    assert call["do_sample"] is False and call["use_cache"] is True
    assert call["max_new_tokens"] == spec.max_new_tokens
    assert all(call[k] == v for k, v in spec.generation_kwargs.items())
    assert not {"temperature", "top_p", "top_k"} & set(call)
    assert [c.final for c in completions] == [EXTRACTED[spec.answer_extraction]] * 2


# ------------------------------------------------------------- Hulu-Med's official calling convention

class FakeHuluProcessor:
    """Stands in for Hulu-Med's remote processor: records each call, loads the image paths it is given,
    returns one prompt's ids with one patch grid per image, and decodes like its ``batch_decode`` (think
    blocks dropped unless ``use_think``). It adds no ``modals``, so the tests see the adapter's own."""

    chat_template = "hulu-med fixture template"

    def __init__(self):
        from transformers import PreTrainedTokenizerFast

        from medkit.chat.tokenizer import TINY_TOKENIZER_DIR

        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(TINY_TOKENIZER_DIR)
        self.calls: list[dict] = []
        self.decode_calls: list[dict] = []

    def __call__(self, conversation, **kwargs):
        self.calls.append({"conversation": conversation, **kwargs})
        parts = [p for message in conversation for p in message["content"]]
        paths = [p["image"]["image_path"] for p in parts if p["type"] == "image"]
        ids = self.tokenizer.encode(" ".join(p["text"] for p in parts if p["type"] == "text"))
        inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        if paths:
            images = [torch.tensor(Image.open(path).getpixel((0, 0)), dtype=torch.float32) for path in paths]
            inputs.update(pixel_values=torch.stack(images), grid_sizes=torch.tensor([[1, 1, 1]] * len(paths)),
                          merge_sizes=torch.ones(len(paths), dtype=torch.long))
        return inputs

    def batch_decode(self, sequences, skip_special_tokens=True, use_think=False):
        self.decode_calls.append({"skip_special_tokens": skip_special_tokens, "use_think": use_think})
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)
        return texts if use_think else [bl.THINK_BLOCK.sub("", text) for text in texts]


class HuluRecordingModel(RecordingModel):
    """Records generate's kwargs and, like Hulu-Med's generate (which hands the base generate only the
    prompt's embeddings), returns only the new tokens."""

    dtype = torch.bfloat16
    generation_config = GenerationConfig()

    def generate(self, **kwargs):
        self.calls.append(kwargs)
        return self.completion.expand(len(kwargs["input_ids"]), -1)

    def state_dict(self):
        return {}


def hulu_med_adapter(completion: str = COMPLETION, **changes):
    spec = spec_named("hulu-med-32b", **changes)
    processor = FakeHuluProcessor()
    model = HuluRecordingModel(processor.tokenizer.encode(completion, add_special_tokens=False))
    return bl.adapter_class(spec)(spec, model=model, processor=processor), model, processor


def hulu_items(image_root: Path):
    """Two images, one image, and a text-only prompt."""
    return [(benchmark_sample("s1", ("a.png", "b.png")), image_root), (benchmark_sample("s2", ("c.png",)), image_root),
            (benchmark_sample("s3", ()), image_root)]


def test_load_baseline_gives_hulu_med_its_own_adapter():
    assert {n for n in EXPECTED if type(bl.load_baseline(n)) is bl.HuluMedAdapter} == {"hulu-med-32b"}
    assert all(type(bl.load_baseline(n)) is bl.HFChatAdapter for n in TEMPLATE_FAMILY)


def test_hulu_med_messages_give_image_paths_as_its_official_inference(image_root: Path):
    adapter, _, _ = hulu_med_adapter()
    assert adapter.spec.system_prompt is None and adapter.spec.trust_remote_code
    messages = adapter.build_messages(benchmark_sample("s1", ("a.png", "b.png")), image_root)
    assert [m["role"] for m in messages] == ["system", "user"]  # answer turn dropped
    assert messages[0]["content"] == [{"type": "text", "text": SYSTEM_VQA}]
    parts = messages[1]["content"]
    assert parts[:2] == [{"type": "image", "image": {"image_path": str(image_root / name)}} for name in ("a.png", "b.png")]
    assert parts[2]["type"] == "text" and parts[2]["text"].startswith(QUESTION) and parts[2]["text"].endswith(MC_CONSTRAINT)
    assert all(f"{letter}. {option}" in parts[2]["text"] for letter, option in OPTIONS.items())
    with pytest.raises(ValueError, match=r"missing\.png.*record s9"):  # checked before the processor sees it
        adapter.build_messages(benchmark_sample("s9", ("a.png", "missing.png")), image_root)


def test_hulu_med_processor_gets_one_conversation_with_the_official_options(image_root: Path):
    adapter, _, processor = hulu_med_adapter()
    items = hulu_items(image_root)
    adapter.generate(items, DecodeSettings(batch_size=3))
    assert [call.pop("conversation") for call in processor.calls] == [adapter.build_messages(s, r) for s, r in items]
    with_images = {"add_system_prompt": True, "add_generation_prompt": True, "return_tensors": "pt"}
    text_only = {"add_generation_prompt": True, "return_tensors": "pt"}  # the official text-only call omits it
    assert processor.calls == [with_images, with_images, text_only]


def test_hulu_med_generate_gets_modals_and_greedy_settings_one_prompt_at_a_time(image_root: Path):
    adapter, model, processor = hulu_med_adapter()
    adapter.generate(hulu_items(image_root), DecodeSettings(max_new_tokens=7, batch_size=3))
    assert [call["modals"] for call in model.calls] == [["image", "image"], ["image"], ["text"]]
    assert [len(call["input_ids"]) for call in model.calls] == [1, 1, 1]
    for call in model.calls:
        assert call["do_sample"] is False and call["use_cache"] is True
        assert call["max_new_tokens"] == adapter.spec.max_new_tokens
        assert call["pad_token_id"] == processor.tokenizer.eos_token_id
        assert not {"temperature", "top_p", "top_k"} & set(call)
    # the images reach generate in the model's dtype, in prompt order (a.png red, b.png green; c.png blue)
    first, second, text = model.calls
    assert first["pixel_values"].dtype == torch.bfloat16
    assert [int(p.argmax()) for p in (*first["pixel_values"], *second["pixel_values"])] == [0, 1, 2]
    assert "pixel_values" not in text


@pytest.mark.parametrize("completion, final", [
    (COMPLETION, "<answer>B</answer>"),
    ("<think>ran out of budget", ""),  # an unfinished thought is no answer, as for the other baselines
])
def test_hulu_med_decodes_its_whole_output_with_its_processor(completion: str, final: str, image_root: Path):
    adapter, _, processor = hulu_med_adapter(completion)
    (result,) = adapter.generate([(benchmark_sample("s1", ("a.png",)), image_root)], DecodeSettings())
    assert processor.decode_calls == [{"skip_special_tokens": True, "use_think": False}]
    assert result.raw == completion  # nothing cut off: generate returned only the new tokens
    assert result.final == final


def test_hulu_med_refuses_pixel_settings_its_processor_lacks():
    with pytest.raises(ConfigError, match="min_pixels/max_pixels"):
        hulu_med_adapter(image=bl.ImageSettings(max_pixels=28 * 28 * 16))


def test_hulu_med_fingerprint_names_its_adapter():
    adapter, model, processor = hulu_med_adapter()
    fingerprint = adapter.fingerprint()
    assert fingerprint["adapter"] == "hulu-med"
    assert bl.HFChatAdapter(adapter.spec, model=model, processor=processor).fingerprint()["adapter"] == "hf-chat"
    assert fingerprint["image_processor"] is None  # a custom processor without a separate image processor


@pytest.mark.parametrize("name", EXPECTED)
def test_trust_remote_code_is_requested_only_for_hulu_med(name: str, tmp_path: Path, monkeypatch):
    import transformers

    calls = []

    def from_pretrained(source, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(tokenizer=SimpleNamespace(padding_side="right"), generation_config=None,
                               eval=lambda: None)

    for cls in ("AutoProcessor", "AutoModelForCausalLM", "AutoModelForImageTextToText",
                "Qwen3VLForConditionalGeneration"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", from_pretrained)
    adapter = bl.load_baseline(name, local_path=tmp_path)
    _ = adapter.processor, adapter.model
    assert len(calls) == 2
    assert [c["trust_remote_code"] for c in calls] == [name in REMOTE_CODE] * 2


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


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def save_tiny_checkpoint(folder: Path):
    processor = tiny_qwen_processor()
    model = tiny_qwen_model(processor.tokenizer)
    model.save_pretrained(folder)
    return model, processor


def test_fingerprint_records_the_loaded_weights_commit_and_image_processor(tmp_path: Path):
    plain, snapshot = tmp_path / "plain", tmp_path / "models--org--tiny" / "snapshots" / COMMIT
    model, processor = save_tiny_checkpoint(plain)
    model.save_pretrained(snapshot)
    spec = bl.get_spec("lingshu-32b")
    adapter = bl.HFChatAdapter(spec, processor=processor, local_path=plain)
    first = adapter.fingerprint()
    assert adapter._model is None  # the safetensors files are hashed without loading the weights
    assert first["resolved_commit"] is None  # a plain local folder is not a hub snapshot
    assert first["weights_sha256"] == weights_fingerprint(model, plain) != weights_fingerprint(model, None)
    from_snapshot = bl.HFChatAdapter(spec, processor=processor, local_path=snapshot).fingerprint()
    assert from_snapshot["resolved_commit"] == COMMIT and from_snapshot["weights_sha256"] == first["weights_sha256"]
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(tmp_path / "other")
    other = bl.HFChatAdapter(spec, processor=processor, local_path=tmp_path / "other").fingerprint()
    assert other["weights_sha256"] != first["weights_sha256"]
    # the image processor's own settings, beyond the spec's min/max pixels, are in the key
    image = first["image_processor"]
    assert image["config"]["size"] == {"longest_edge": 28 * 28 * 16, "shortest_edge": 28 * 28 * 4}
    assert image["config"]["patch_size"] == 14 and image["class"].startswith("Qwen2VLImageProcessor")
    assert json.loads(json.dumps(image)) == image
    processor.image_processor._processor_class = "SomethingElse"  # how it was loaded does not count
    assert bl.HFChatAdapter(spec, processor=processor, local_path=plain).fingerprint() == first
    processor.image_processor.image_mean = (0.5, 0.5, 0.5)
    assert bl.HFChatAdapter(spec, processor=processor, local_path=plain).fingerprint() != first


def test_fingerprint_resolves_the_hub_revision_from_the_cache(tmp_path: Path, monkeypatch):
    import huggingface_hub

    repo = tmp_path / "hub" / "models--org--tiny"
    model, processor = save_tiny_checkpoint(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    adapter = bl.HFChatAdapter(spec_named("lingshu-32b", hub_id="org/tiny"), processor=processor)
    fingerprint = adapter.fingerprint()
    assert fingerprint["revision"] is None and fingerprint["resolved_commit"] == COMMIT
    assert fingerprint["weights_sha256"] == weights_fingerprint(model, repo / "snapshots" / COMMIT)
    assert adapter._model is None
    assert adapter._pretrained_kwargs()["revision"] == COMMIT  # later loads are pinned to that snapshot


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


def test_weight_hash_trusts_cache_blob_names_and_refuses_missing_shards(tmp_path):
    import hashlib
    import json

    from medkit.eval.adapters import content_sha256, file_sha256, weights_fingerprint

    data = b"not really tensors"
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / digest).write_bytes(data)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "model-00001-of-00002.safetensors").symlink_to(tmp_path / "blobs" / digest)
    linked = snapshot / "model-00001-of-00002.safetensors"
    assert content_sha256(linked) == file_sha256(linked) == digest
    (tmp_path / "blobs" / digest).write_bytes(b"changed after download")  # the name is what is trusted
    assert content_sha256(linked) == digest
    (snapshot / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"weight shards missing \(1 of 2"):
        weights_fingerprint(None, snapshot)


@pytest.mark.parametrize("gpus, placement", [(0, None), (1, {"": 0}), (2, "auto")])
def test_baseline_weights_go_to_the_rank_s_gpus(gpus: int, placement, tmp_path: Path, monkeypatch):
    import transformers

    from medkit.eval import placement as placement_module

    calls = []

    def from_pretrained(source, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(tokenizer=SimpleNamespace(padding_side="right"), generation_config=None,
                               eval=lambda: None)

    monkeypatch.setattr(placement_module, "visible_gpus", lambda: gpus)
    for cls in ("AutoProcessor", "AutoModelForImageTextToText"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", from_pretrained)
    _ = bl.load_baseline("medgemma-27b", local_path=tmp_path).model
    assert calls[-1].get("device_map") == placement
    assert calls[-1]["dtype"] == torch.bfloat16


def test_medmo_prompt_has_no_default_system_turn(image_root: Path):
    """Qwen3-VL Instruct adds no system prompt of its own (Qwen2.5-VL does): without a system message the
    MedMO prompt opens with the user turn, and its images are counted in Qwen3-VL's 16-px patches."""
    adapter = bl.HFChatAdapter(bl.get_spec("medmo-8b"), model=object(), processor=tiny_qwen3_vl_processor())
    sample = mc_sample("s1", images=("c.png",), system=None)
    batch = adapter.encode([(sample, image_root)])
    text = adapter.processor.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>user\n<|vision_start|>") and "system" not in text
    (grid,) = batch["image_grid_thw"].tolist()
    merged = grid[0] * grid[1] * grid[2] // 4  # 2x2 patches merge into one image token
    assert text.count("<|image_pad|>") == merged
    qwen25 = bl.HFChatAdapter(bl.get_spec("lingshu-7b"), model=object(),
                              processor=tiny_qwen_processor("qwen2_5_vl_chat_template.jinja"))
    assert qwen25.processor.tokenizer.decode(qwen25.encode([(sample, image_root)])["input_ids"][0]).startswith(
        "<|im_start|>system\nYou are a helpful assistant.")


def test_seed_papers_models_are_registered_with_their_bases():
    medmo, lingshu = bl.get_spec("medmo-8b"), bl.get_spec("lingshu-7b")
    assert (medmo.hub_id, medmo.model_class, medmo.trust_remote_code) == (
        "MBZUAI/MedMO-8B", "Qwen3VLForConditionalGeneration", False)
    assert (lingshu.hub_id, lingshu.model_class) == ("lingshu-medical-mllm/Lingshu-7B", "AutoModelForImageTextToText")
    assert medmo.generation_kwargs == {} == lingshu.generation_kwargs  # greedy, the shipped generation config


@pytest.mark.parametrize("name", ["medmo-8b", "hulu-med-32b"])
def test_a_baseline_opens_by_name_for_ranks_without_losing_its_hub_source(name: str):
    """open_adapter records what ranks rebuild the adapter from without overwriting the baseline's own
    ``source`` (its hub id): setting one on the other made every baseline eval fail before any data check."""
    from medkit.eval.parallel import AdapterSource, open_adapter

    adapter = open_adapter(AdapterSource(name))  # lazy: nothing is downloaded or loaded here
    assert adapter.source == bl.get_spec(name).hub_id
    assert adapter.opened_from == AdapterSource(name)
