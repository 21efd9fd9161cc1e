"""The synthetic corpus: schema-valid, deterministic, balanced, and its labels really drawn and derived."""

from __future__ import annotations

import hashlib
import json
import re
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medkit.data import synthetic
from medkit.data.procedural import histology_patch, render, zone_center
from medkit.data.schema import message_text, read_jsonl
from medkit.eval.scoring import score_mc
from medkit.data.synthetic import (
    BUILDERS,
    CONDITIONS,
    TASKS,
    TRIAL_OPTIONS,
    CorpusExistsError,
    ItemContext,
    generate_corpus,
    iter_corpus_texts,
    load_manifest,
)

SMALL = {task: 10 for task in TASKS}
IMAGE_COUNT_RANGES = {  # (min, max) images per item
    "caption": (1, 1),
    "report_long": (2, 8),
    "vqa_mc": (1, 3),
    "text_mc": (0, 0),
    "reasoning": (0, 3),
    "report": (1, 3),
    "trial": (0, 0),
    "impression": (2, 4),
}
MC_TASKS = ("vqa_mc", "text_mc", "reasoning", "trial")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "seed0"
    generate_corpus(out, seed=0, sizes=SMALL)
    return out


@pytest.fixture(scope="module")
def samples(corpus) -> dict[str, list]:
    return {task: list(read_jsonl(corpus / f"{task}.jsonl")) for task in TASKS}


def planned(task: str, n: int, seed: int = 0) -> list[synthetic.ItemPlan]:
    """Items built without drawing images: cheap enough for statistics over many items."""
    return [BUILDERS[task](ItemContext(seed, task, i)) for i in range(n)]


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- schema and files


def test_every_record_is_schema_valid_and_its_images_open(corpus, samples):
    for task, task_samples in samples.items():
        assert len(task_samples) == SMALL[task]
        for s in task_samples:
            assert s.meta["task"] == task and s.meta["split"] in ("train", "eval")
            assert s.meta["modality"] and "answer" in s.meta and "label" in s.meta
            assert s.messages[-1]["role"] == "assistant" and s.messages[-1]["content"]
            for path in s.images:
                with Image.open(corpus / path) as img:
                    img.load()
                    assert 96 <= min(img.size) and max(img.size) <= 256
                    assert img.mode in ("L", "RGB")


def test_every_item_names_its_modality_label_and_answer():
    for task in TASKS:
        for plan in planned(task, 60):
            assert {"modality", "label", "answer"} <= set(plan.meta), (task, plan.meta)


def test_manifest_lists_every_file_with_its_hash(corpus):
    manifest = load_manifest(corpus)
    assert manifest.seed == 0
    assert manifest.mismatches(corpus) == []
    assert {t: c["train"] + c["eval"] for t, c in manifest.counts.items()} == SMALL
    n_images = len(list((corpus / "images").iterdir()))
    assert sum(manifest.images.values()) == n_images


def test_images_are_small_and_vary_in_shape(corpus):
    paths = sorted((corpus / "images").iterdir())
    assert max(p.stat().st_size for p in paths) < 40_000
    shapes = {Image.open(p).size for p in paths}
    assert len(shapes) > len(paths) // 2
    assert any(w != h for w, h in shapes)


# --- determinism


def test_same_seed_gives_byte_and_pixel_identical_corpus(corpus, tmp_path):
    again = tmp_path / "again"
    generate_corpus(again, seed=0, sizes=SMALL)
    assert file_hashes(again) == file_hashes(corpus)
    for path in sorted((corpus / "images").iterdir()):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again / "images" / path.name)))


def test_images_drawn_in_worker_processes_equal_those_drawn_one_by_one(corpus, tmp_path, monkeypatch):
    # SMALL has over 64 images, so on a machine of 2+ cores the corpus fixture was drawn by workers.
    jobs = sum(len(s.images) for task in TASKS for s in read_jsonl(corpus / f"{task}.jsonl"))
    assert synthetic.render_workers(jobs) == min(2, len(os.sched_getaffinity(0)))
    monkeypatch.setattr(synthetic, "render_workers", lambda n: 1)
    serial = tmp_path / "serial"
    generate_corpus(serial, seed=0, sizes=SMALL)
    assert file_hashes(serial) == file_hashes(corpus)


def test_different_seed_gives_different_corpus(corpus, tmp_path):
    other = tmp_path / "other"
    generate_corpus(other, seed=1, sizes=SMALL)
    ours, theirs = file_hashes(corpus), file_hashes(other)
    for task in TASKS:
        assert ours[f"{task}.jsonl"] != theirs[f"{task}.jsonl"]
    shared_images = set(ours) & set(theirs) - {f"{t}.jsonl" for t in TASKS} - {"manifest.json"}
    assert sum(ours[p] == theirs[p] for p in shared_images) == 0


def test_an_item_does_not_depend_on_what_else_is_generated(corpus, tmp_path):
    alone = tmp_path / "alone"
    generate_corpus(alone, seed=0, sizes={"vqa_mc": 4})
    lines = (corpus / "vqa_mc.jsonl").read_text().splitlines()
    assert (alone / "vqa_mc.jsonl").read_text().splitlines() == lines[:4]


def test_corpus_texts_match_the_written_corpus(samples):
    written = set()
    for task_samples in samples.values():
        for s in task_samples:
            for m in s.messages:
                written.update(p["text"] for p in ([{"text": m["content"]}] if isinstance(m["content"], str)
                                                   else [p for p in m["content"] if p["type"] == "text"]))
                if "thinking" in m:
                    written.add(m["thinking"])
    assert set(iter_corpus_texts(seed=0, sizes=SMALL)) == written


# --- tasks, splits, image counts


def test_every_task_has_both_splits_about_80_20(samples):
    for task, task_samples in samples.items():
        splits = Counter(s.meta["split"] for s in task_samples)
        assert splits["train"] == 8 and splits["eval"] == 2, task


def test_images_per_item_lie_in_the_intended_ranges(samples):
    for task, (lo, hi) in IMAGE_COUNT_RANGES.items():
        counts = [len(s.images) for s in samples[task]]
        assert lo <= min(counts) and max(counts) <= hi, task
    report_long = [len(p.image_labels) for p in planned("report_long", 120)]
    assert 3.0 <= np.mean(report_long) <= 4.5
    assert sum(n >= 2 for n in (len(p.image_labels) for p in planned("vqa_mc", 120))) >= 20  # multi-frame questions


# --- the drawn signal


def xray(seed: int, finding: str, side: str | None = None, zone: str | None = None) -> np.ndarray:
    label = {"modality": "xray", "view": "PA", "finding": finding, "side": side, "zone": zone, "severity": 2,
             "anatomy": seed}
    return np.asarray(render(np.random.default_rng(seed), label), np.float32)


def box(img: np.ndarray, u: float, v: float, half: float) -> np.ndarray:
    h, w = img.shape[:2]
    return img[int((v - half) * h): int((v + half) * h), int((u - half) * w): int((u + half) * w)]


@pytest.mark.parametrize("side,zone", [("left", "lower"), ("right", "upper")])
def test_opacity_is_much_brighter_than_the_same_zone_without_finding(side, zone):
    u, v = zone_center(side, zone)
    for seed in range(6):
        opacity = box(xray(seed, "opacity", side, zone), u, v, 0.05).mean()
        clear = box(xray(seed, "none"), u, v, 0.05).mean()
        assert opacity > clear + 60, (seed, opacity, clear)


def test_effusion_whitens_the_lung_base_and_pneumothorax_blackens_the_lung():
    u, _ = zone_center("right", "lower")
    for seed in range(6):
        clear = xray(seed, "none")
        effusion = xray(seed, "effusion", "right", "lower")
        assert box(effusion, u, 0.68, 0.04).mean() > box(clear, u, 0.68, 0.04).mean() + 50
        dark = lambda img: (box(img, u, 0.45, 0.12) < 30).mean()  # noqa: E731
        assert dark(xray(seed, "pneumothorax", "right", "upper")) > dark(clear) + 0.1


def test_cardiomegaly_widens_the_heart_shadow():
    for seed in range(6):
        band = lambda img: (img[int(0.62 * img.shape[0]): int(0.70 * img.shape[0])] > 150).mean()  # noqa: E731
        assert band(xray(seed, "cardiomegaly")) > band(xray(seed, "none")) + 0.08


def test_nodule_is_a_bright_spot():
    u, v = zone_center("left", "upper")
    for seed in range(6):
        assert box(xray(seed, "nodule", "left", "upper"), u, v, 0.06).max() > 215
        assert box(xray(seed, "none"), u, v, 0.06).max() < 190


def test_ct_lesion_changes_the_liver_brightness():
    def liver_mean(seed: int, organ: str | None, density: str | None) -> float:
        label = {"modality": "ct", "region": "abdomen", "organ": organ, "density": density}
        return box(np.asarray(render(np.random.default_rng(seed), label), np.float32), 0.33, 0.44, 0.1).mean()

    for seed in range(6):
        normal = liver_mean(seed, None, None)
        assert liver_mean(seed, "liver", "hypodense") < normal - 15
        assert liver_mean(seed, "liver", "hyperdense") > normal + 15


def test_malignant_histology_has_far_more_nuclear_pixels_than_benign():
    def nuclear_fraction(seed: int, tissue: str, darker_than: int) -> float:
        rgb = np.asarray(histology_patch(np.random.default_rng(seed), {"tissue": tissue}))
        return float((rgb[..., 0] < darker_than).mean())  # stroma is red-rich, haematoxylin is not

    for seed in range(6):
        benign = nuclear_fraction(seed, "benign", 150)
        assert nuclear_fraction(seed, "malignant", 150) > 4 * benign
        assert nuclear_fraction(seed, "inflammation", 90) > nuclear_fraction(seed, "benign", 90) + 0.05


# --- answers and labels


def test_answer_letters_are_balanced():
    for task in MC_TASKS:
        letters = Counter(p.meta["answer"] for p in planned(task, 120))
        assert max(letters.values()) <= 0.4 * 120, (task, letters)
        assert set(letters) >= set("ABCD"), task


def test_mc_items_have_exactly_one_correct_option(samples):
    for task in MC_TASKS:
        for plan in planned(task, 60):
            options, answer = plan.meta["options"], plan.meta["answer"]
            assert len(set(options.values())) == len(options) in (4, 5)
            assert list(options) == list("ABCDE"[: len(options)])
            expected = plan.meta["label"] if task == "trial" else plan.meta["answer_text"]
            assert options[answer] == expected
            # the reply names the option by its text, which the strict scorer reads as exactly that option
            assert plan.messages[-1]["content"] == expected
            assert score_mc(plan.messages[-1]["content"], options, answer).correct
            assert all(f"{letter}. {text}" in message_text(plan.messages[1]) for letter, text in options.items())


def test_vqa_answers_follow_the_drawn_images():
    for plan in planned("vqa_mc", 200):
        kind, labels, correct = plan.meta["question_type"], plan.image_labels, plan.meta["answer_text"]
        if kind == "chest_finding":
            assert correct == synthetic.FINDING_OPTIONS[labels[0]["finding"]]
        elif kind == "chest_location":
            assert labels[0]["side"] in correct.lower()
        elif kind == "chest_which_frame":
            shown = [i + 1 for i, label in enumerate(labels) if label["finding"] != "none"]
            assert shown == plan.meta["shown_in"]
        elif kind == "chest_change":
            first, last = labels[0], labels[-1]
            before = 0 if first["finding"] == "none" else first["severity"]
            change = {0: "new"}.get(before) or ("stable" if before == last["severity"] else
                                                 "improved" if before > last["severity"] else "worsened")
            assert change == plan.meta["change"]
        elif kind == "ct_organ":
            assert correct.lower() == labels[0]["organ"]
        elif kind == "histology":
            assert labels[0]["tissue"] == plan.meta["label"]


def test_text_mc_answer_is_decided_by_its_cue_phrases():
    cue_owner = {cue: c.name for c in CONDITIONS for cue in c.cues}
    answers: dict[tuple[str, str], set[str]] = {}
    for plan in planned("text_mc", 200):
        text = message_text(plan.messages[1])
        present = {owner for cue, owner in cue_owner.items() if cue in text}
        assert present == {plan.meta["label"]}
        assert sum(cue in text for cue in plan.meta["cues"]) >= 2
        answers.setdefault((plan.meta["question_type"], plan.meta["label"]), set()).add(plan.meta["answer_text"])
    assert all(len(a) == 1 for a in answers.values())


def rule_label(patient: dict, trial: dict) -> str:
    """The eligibility rule, written out again independently of the generator."""
    def met(c: dict) -> bool:
        value = patient.get(c["fact"])
        if value is None:
            return False
        return value == c["equals"] if "equals" in c else c["min"] <= value <= c["max"]

    if not met(trial["inclusion"][0]) or any(met(c) for c in trial["exclusion"]):
        return "not eligible"
    return "eligible" if all(met(c) for c in trial["inclusion"]) else "partially eligible"


def test_trial_labels_follow_the_rule_and_are_balanced():
    plans = planned("trial", 120)
    for plan in plans:
        meta, text = plan.meta, message_text(plan.messages[1])
        assert meta["label"] == rule_label(meta["patient"], meta["trial"])
        assert set(meta["options"].values()) == set(TRIAL_OPTIONS)
        assert f"{meta['patient']['age']}-year-old" in text
        assert all(c["text"] in text for c in meta["trial"]["inclusion"] + meta["trial"]["exclusion"])
        numbers = [str(v) for v in meta["patient"].values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert all(re.fullmatch(r"\d+(\.\d)?", n) and n in text for n in numbers)  # as a chart writes them
    assert Counter(p.meta["label"] for p in plans) == {"eligible": 40, "partially eligible": 40, "not eligible": 40}


def test_reports_state_the_drawn_finding_and_its_change():
    change_words = {"new": "New ", "stable": "Stable ", "improved": "Improving ", "worsened": "Worsening "}
    for plan in planned("report_long", 80):
        meta, report = plan.meta, plan.messages[-1]["content"]
        findings, impression = report.split("\n\nIMPRESSION: ")
        assert findings.startswith("FINDINGS: ")
        current = [label for label in plan.image_labels[: len(meta["views"])]]
        assert all(label["finding"] == meta["finding"] for label in current)
        if meta["finding"] == "none":
            assert impression.startswith("No acute cardiopulmonary abnormality")
            continue
        assert meta["side"] is None or meta["side"] in impression
        if meta["priors"]:
            assert impression.startswith(change_words[meta["change"]])
        else:
            assert meta["change"] is None


def test_reasoning_items_carry_a_trace_that_ends_in_the_answer(samples):
    for s in samples["reasoning"]:
        assistant = s.messages[-1]
        assert assistant["thinking"].endswith(f"So the answer is {assistant['content']}.")
        assert assistant["content"] == s.meta["options"][s.meta["answer"]]
    assert {p.meta["source_task"] for p in planned("reasoning", 4)} == {"vqa_mc", "text_mc"}


# --- safe writing


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CorpusExistsError, match="overwrite"):
        generate_corpus(out, sizes={"text_mc": 5})
    assert (out / "keep.txt").read_text() == "mine"
    generate_corpus(out, sizes={"text_mc": 5}, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "text_mc.jsonl").is_file()
    with pytest.raises(SystemExit):
        synthetic.main([str(out)])


def test_a_failure_midway_leaves_no_partial_corpus(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_render = synthetic.render

    def failing_render(rng, label):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk on fire")
        return real_render(rng, label)

    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_corpus(tmp_path / "fresh", sizes={"caption": 10})
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(synthetic, "render", real_render)
    generate_corpus(tmp_path / "kept", sizes={"caption": 5})
    before = file_hashes(tmp_path / "kept")
    calls["n"] = 0
    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(RuntimeError):
        generate_corpus(tmp_path / "kept", sizes={"caption": 10}, overwrite=True)
    assert file_hashes(tmp_path / "kept") == before
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_manifest_json_is_deterministic_text(corpus):
    body = json.loads((corpus / "manifest.json").read_text())
    assert set(body) == {"seed", "counts", "images", "files"}
    assert "manifest.json" not in body["files"]


def test_ensure_corpus_reuses_a_matching_folder_and_refuses_one_of_other_sizes(tmp_path):
    out = tmp_path / "corpus"
    sizes = {"text_mc": 10, "trial": 5}
    synthetic.ensure_corpus(out, seed=0, sizes=sizes)
    before = (out / "manifest.json").read_text()
    assert synthetic.ensure_corpus(out, seed=0, sizes=dict(sizes)) == out
    assert (out / "manifest.json").read_text() == before  # reused, not regenerated
    with pytest.raises(ValueError, match=r"other task sizes: text_mc 10 \(wanted 20\)"):
        synthetic.ensure_corpus(out, seed=0, sizes={"text_mc": 20, "trial": 5})
    with pytest.raises(ValueError, match="seed 0, not 1"):
        synthetic.ensure_corpus(out, seed=1, sizes=sizes)


def test_smoke_corpus_still_gives_every_benchmark_a_few_items():
    from medkit.eval.benchmarks.synthetic import family_subset
    from medkit.eval.benchmarks.text_qa import TEXT_BENCHMARKS

    held_out = [synthetic.ItemContext(0, "text_mc", i).item_id for i in range(synthetic.SMOKE_SIZES["text_mc"])
                if synthetic.ItemContext(0, "text_mc", i).split == "eval"]

    class Item:  # family_subset reads only the id
        def __init__(self, item_id):
            self.id = item_id

    for benchmark in TEXT_BENCHMARKS:
        assert len(family_subset([Item(i) for i in held_out], benchmark, TEXT_BENCHMARKS)) >= 4  # smoke limit
