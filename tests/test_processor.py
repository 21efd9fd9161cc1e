"""Samples -> model inputs: placeholders expanded per tile, labels exactly the assistant completions,
and bad records rejected with the file and record named."""

import json

import pytest
import torch
from PIL import Image

from medkit.chat import IMAGE_CONTEXT_TOKEN, load_tokenizer
from medkit.data.schema import Sample, SchemaError, read_jsonl
from medkit.model.build import build_tiny_model
from medkit.model.image_processing import ImageLoadError
from medkit.model.processor import IGNORE_INDEX, MedGPTOssProcessor, PlaceholderMismatchError
from medkit.profiles import load_profile
from medkit.training.collator import PadCollator


@pytest.fixture(scope="module")
def parts():
    profile = load_profile("tiny")
    tokenizer = load_tokenizer("tiny")
    model = build_tiny_model(profile, tokenizer).eval()
    return tokenizer, model, MedGPTOssProcessor.for_model(model.config, tokenizer, profile)


def write_images(root, sizes):
    names = []
    for i, size in enumerate(sizes):
        Image.effect_noise(size, 40).convert("RGB").save(root / f"img{i}.png")
        names.append(f"img{i}.png")
    return names


def vqa_sample(images, answer="B", thinking=None):
    assistant = {"role": "assistant", "content": answer}
    if thinking:
        assistant["thinking"] = thinking
    return Sample(
        id="case-1",
        images=images,
        messages=[
            {"role": "system", "content": "Answer with the letter."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare with the prior."}]},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which lobe? A. upper B. lower"}]},
            assistant,
        ],
    )


def test_placeholders_match_tiles_and_model_accepts_them(parts, tmp_path):
    tokenizer, model, processor = parts
    sample = vqa_sample(write_images(tmp_path, [(64, 64), (200, 100)]))
    enc = processor.encode(sample, tmp_path)
    assert enc.tiles_per_image[0] == 1 and enc.tiles_per_image[1] > 1  # second image tiled + thumbnail
    n_placeholders = int((enc.input_ids == tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)).sum())
    assert n_placeholders == sum(enc.tiles_per_image) * model.config.tokens_per_tile
    assert enc.pixel_values.shape[0] == sum(enc.tiles_per_image)
    batch = PadCollator(tokenizer.pad_token_id)([enc, enc])
    out = model(**batch)
    assert torch.isfinite(out.loss)


def test_supervised_tokens_are_exactly_the_assistant_completions(parts, tmp_path):
    tokenizer, _, processor = parts
    sample = vqa_sample(write_images(tmp_path, [(64, 64), (64, 64)]), thinking="Basal opacity means lower.")
    enc = processor.encode(sample, tmp_path)
    supervised = enc.labels != IGNORE_INDEX
    assert torch.equal(enc.labels[supervised], enc.input_ids[supervised])
    text = tokenizer.decode(enc.input_ids[supervised], skip_special_tokens=False)
    assert text == (
        "<|channel|>final<|message|>Noted.<|end|>"
        "<|channel|>analysis<|message|>Basal opacity means lower.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>B<|return|>"
    )
    # nothing from system, user or image tokens is supervised
    assert not supervised[enc.input_ids == tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)].any()


def test_generation_prompt_drops_the_answer(parts, tmp_path):
    tokenizer, _, processor = parts
    sample = vqa_sample(write_images(tmp_path, [(64, 64), (64, 64)]), answer="B")
    enc = processor.encode(sample, tmp_path, for_generation=True)
    text = tokenizer.decode(enc.input_ids)
    assert text.endswith("Which lobe? A. upper B. lower<|end|><|start|>assistant")
    assert "<|return|>" not in text


def test_same_sample_encodes_identically(parts, tmp_path):
    _, _, processor = parts
    sample = vqa_sample(write_images(tmp_path, [(150, 90), (64, 64)]))
    a, b = processor.encode(sample, tmp_path), processor.encode(sample, tmp_path)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.pixel_values, b.pixel_values)


def test_corrupt_image_names_file_and_record(parts, tmp_path):
    _, _, processor = parts
    images = write_images(tmp_path, [(64, 64), (64, 64)])
    (tmp_path / images[1]).write_bytes(b"GIF89a broken")
    with pytest.raises(ImageLoadError, match=r"img1\.png \(record case-1\): corrupt or unreadable"):
        processor.encode(vqa_sample(images), tmp_path)


def test_missing_image_names_file_and_record(parts, tmp_path):
    _, _, processor = parts
    with pytest.raises(ImageLoadError, match=r"gone\.png \(record case-1\): image file not found"):
        processor.encode(vqa_sample(["gone.png", "gone.png"]), tmp_path)


def test_image_count_mismatch_names_record(parts, tmp_path):
    _, _, processor = parts
    with pytest.raises(PlaceholderMismatchError, match=r"record case-1: 2 image placeholder\(s\) but 1 image file"):
        processor.encode(vqa_sample(write_images(tmp_path, [(64, 64)])), tmp_path)


def test_malformed_jsonl_record_names_file_line_and_id(tmp_path):
    good = vqa_sample(["a.png", "b.png"])
    bad = json.loads(good.to_json())
    bad["id"] = "case-2"
    bad["images"] = ["a.png"]
    path = tmp_path / "data.jsonl"
    path.write_text(good.to_json() + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(SchemaError, match=r"data\.jsonl line 2 \(id 'case-2'\): 2 image placeholder\(s\) in messages but 1 image"):
        list(read_jsonl(path))
    path.write_text("{not json\n")
    with pytest.raises(SchemaError, match=r"data\.jsonl line 1: not valid JSON"):
        list(read_jsonl(path))
