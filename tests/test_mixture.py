"""A stage's training data: the Table 1 mixture under a data root (JSONL and `datasets` folders), the
synthetic tasks on the tiny profile, leakage exclusions, and clear errors for missing or bad data."""

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from medkit.chat import load_tokenizer
from medkit.data.mixture import (MixtureError, check_stage_sources, dataset_folder, mixture_layout,
                                 stage_dataset)
from medkit.data.registry import load_table1
from medkit.data.schema import SchemaError, read_jsonl
from medkit.data.synthetic import generate_corpus
from medkit.model.build import image_token_id, model_config
from medkit.model.image_processing import ImageLoadError
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import load_profile
from medkit.training.stages import load_stage

PRETRAIN = load_stage("pretrain")
ARROW_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "images": datasets.List(datasets.Image()),
    "messages": datasets.List({"role": datasets.Value("string"),
                               "content": datasets.List({"type": datasets.Value("string"),
                                                         "text": datasets.Value("string")})}),
})


@pytest.fixture(scope="module")
def processor():
    profile, tokenizer = load_profile("tiny"), load_tokenizer("tiny")
    config = model_config(profile, vocab_size=len(tokenizer), img_token=image_token_id(tokenizer))
    return MedGPTOssProcessor.for_model(config, tokenizer, profile)


def png_bytes(seed: int, size=(96, 64)) -> bytes:
    """A seeded blocky image: distinct seeds give distinct perceptual hashes."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def caption_record(sample_id: str, image, caption: str) -> dict:
    return {"id": sample_id, "images": [image],
            "messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                                      {"type": "text", "text": "Describe the image."}]},
                         {"role": "assistant", "content": [{"type": "text", "text": caption}]}]}


def write_jsonl_source(folder, n: int) -> list[str]:
    (folder / "img").mkdir(parents=True)
    ids = []
    with (folder / "train.jsonl").open("w") as f:
        for i in range(n):
            (folder / "img" / f"{i}.png").write_bytes(png_bytes(i))
            record = caption_record(f"roco-{i}", f"img/{i}.png", f"Axial CT slice {i}, no acute finding.")
            record["messages"][0]["content"][0].pop("text")  # JSONL parts carry only their own keys
            f.write(json.dumps(record) + "\n")
            ids.append(record["id"])
    return ids


def write_arrow_source(folder, n: int, *, prefix="quilt", bytes_images=True) -> list[str]:
    rows = []
    for i in range(n):
        image = {"bytes": png_bytes(100 + i), "path": None} if bytes_images else {"bytes": None, "path": None}
        rows.append(caption_record(f"{prefix}-{i}", image, f"H&E section {i}: benign glands."))
    datasets.Dataset.from_list(rows, features=ARROW_FEATURES).save_to_disk(str(folder))
    return [r["id"] for r in rows]


@pytest.fixture()
def data_root(tmp_path):
    """The PT mixture with two of its four datasets present: ROCOv2 as JSONL, Quilt-1M as a `datasets` folder."""
    root = tmp_path / "table1"
    write_jsonl_source(root / dataset_folder("ROCOv2 (filtered)"), 5)
    write_arrow_source(root / dataset_folder("Quilt-1M (filtered)"), 4)
    return root


def test_every_table1_dataset_has_its_own_folder():
    names = [d.name for d in load_table1()]
    folders = [dataset_folder(n) for n in names]
    assert len(set(folders)) == len(names) == 31
    assert dataset_folder("ROCOv2 (filtered)") == "rocov2_filtered"
    assert dataset_folder("MIMIC-CXR (multi-view & longitudinal)") == "mimic_cxr_multi_view_longitudinal"
    assert set(mixture_layout("PT")) == {"ROCOv2 (filtered)", "Quilt-1M (filtered)", "PMC-OA (filtered)",
                                         "BIOMEDICA (dermatology and surgery subsets)"}


def test_missing_datasets_are_named_before_training(data_root):
    with pytest.raises(MixtureError, match=r"PMC-OA \(filtered\) at .*pmc_oa_filtered.*BIOMEDICA.*--skip-missing"):
        check_stage_sources(PRETRAIN, data_root=data_root)
    with pytest.raises(MixtureError, match="is not a folder"):
        check_stage_sources(PRETRAIN, data_root=data_root / "nope")
    with pytest.raises(ValueError, match="exactly one of corpus"):
        check_stage_sources(PRETRAIN)
    empty = data_root.parent / "empty"
    empty.mkdir()
    with pytest.raises(MixtureError, match="no train.jsonl or saved dataset"):  # skip_missing needs one present
        check_stage_sources(PRETRAIN, data_root=empty, skip_missing=True)


def test_task_weights_are_refused_for_a_table1_mixture(data_root):
    # the weights act on synthetic tasks only; on a data root they would silently do nothing
    from dataclasses import replace

    weighted_stage = replace(PRETRAIN, synthetic_weights={"caption": 2.0})
    with pytest.raises(MixtureError, match=r"task_weights\.pretrain \(caption\).*Table 1 mixture"):
        check_stage_sources(weighted_stage, data_root=data_root, skip_missing=True)
    check_stage_sources(PRETRAIN, data_root=data_root, skip_missing=True)  # unweighted: fine


def test_mixture_reads_jsonl_and_saved_datasets(data_root, processor):
    dataset, report = stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True)
    assert len(dataset) == 9 and report.records == 9
    assert report.missing == ["PMC-OA (filtered)", "BIOMEDICA (dermatology and surgery subsets)"]
    formats = {s.name: (s.format, s.records, s.table1_examples) for s in report.sources}
    assert formats["ROCOv2 (filtered)"] == ("jsonl", 5, 38861)
    assert formats["Quilt-1M (filtered)"] == ("arrow", 4, 359725)
    ids = [dataset[i].sample_id for i in range(len(dataset))]
    assert ids == [f"roco-{i}" for i in range(5)] + [f"quilt-{i}" for i in range(4)]
    arrow_item = dataset[5]
    assert arrow_item.pixel_values.shape[0] == sum(arrow_item.tiles_per_image) > 0
    supervised = arrow_item.input_ids[arrow_item.labels != -100]
    assert "H&E section 0: benign glands." in processor.tokenizer.decode(supervised)


def test_image_bytes_in_a_dataset_encode_like_the_same_file(tmp_path, processor):
    """The same record as JSONL (image file) and as a saved dataset (image bytes): identical model inputs."""
    folder = tmp_path / "rocov2_filtered"
    write_jsonl_source(folder, 1)
    sample = next(read_jsonl(folder / "train.jsonl"))
    from_file = processor.encode(sample, folder)
    row = caption_record(sample.id, {"bytes": (folder / "img" / "0.png").read_bytes(), "path": None},
                         "Axial CT slice 0, no acute finding.")
    datasets.Dataset.from_list([row], features=ARROW_FEATURES).save_to_disk(str(tmp_path / "arrow" / "rocov2_filtered"))
    stage_data, _ = stage_dataset(PRETRAIN, processor, data_root=tmp_path / "arrow", skip_missing=True)
    from_bytes = stage_data[0]
    assert torch.equal(from_file.input_ids, from_bytes.input_ids)
    assert torch.equal(from_file.labels, from_bytes.labels)
    assert torch.equal(from_file.pixel_values, from_bytes.pixel_values)


def test_leakage_report_excludes_training_ids(data_root, processor, tmp_path):
    report_path = tmp_path / "leakage.json"
    # ids are unique only within a dataset: exclusions name the folder too ("quilt-1" exists in ROCOv2 as well)
    write_arrow_source(data_root / dataset_folder("PMC-OA (filtered)"), 2, prefix="quilt")
    report_path.write_text(json.dumps({"excluded_train_ids": ["rocov2_filtered/roco-1",
                                                              "quilt_1m_filtered/quilt-3",
                                                              "pmc_oa_filtered/quilt-1", "roco-2"]}))
    dataset, report = stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True,
                                    leakage_report=report_path)
    ids = [dataset[i].sample_id for i in range(len(dataset))]
    assert ids == ["roco-0", "roco-2", "roco-3", "roco-4", "quilt-0", "quilt-1", "quilt-2", "quilt-0"]
    assert {s.name: s.excluded for s in report.sources if s.format != "missing"} == {
        "ROCOv2 (filtered)": 1, "Quilt-1M (filtered)": 1, "PMC-OA (filtered)": 1}
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SchemaError, match="bad.json: not a leakage report"):
        stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True, leakage_report=bad)


def test_bad_rows_name_folder_row_and_record(tmp_path, processor):
    folder = tmp_path / "root" / "rocov2_filtered"
    rows = [caption_record("ok-0", {"bytes": png_bytes(0), "path": None}, "fine"),
            caption_record("corrupt-1", {"bytes": b"not a png", "path": None}, "broken image")]
    no_image = caption_record("noimg-2", {"bytes": png_bytes(2), "path": None}, "placeholder without image")
    no_image["images"] = []
    datasets.Dataset.from_list(rows + [no_image], features=ARROW_FEATURES).save_to_disk(str(folder))
    dataset, _ = stage_dataset(PRETRAIN, processor, data_root=tmp_path / "root", skip_missing=True)
    dataset[0]
    with pytest.raises(ImageLoadError, match=r"row 1 image 0 \(record corrupt-1\): corrupt or unreadable"):
        dataset[1]
    with pytest.raises(SchemaError, match=r"rocov2_filtered row 2 \(id 'noimg-2'\): 1 image placeholder"):
        dataset[2]
    lacking = tmp_path / "lacking" / "rocov2_filtered"
    datasets.Dataset.from_list([{"id": "x", "text": "no messages"}]).save_to_disk(str(lacking))
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['messages'\]"):
        stage_dataset(PRETRAIN, processor, data_root=tmp_path / "lacking", skip_missing=True)


def test_tiny_profile_reads_the_stage_synthetic_tasks(tmp_path, processor):
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=0, sizes={"caption": 12, "report_long": 2, "report": 2, "vqa_mc": 2,
                                           "text_mc": 2, "reasoning": 2, "trial": 2, "impression": 2})
    dataset, report = stage_dataset(load_stage("midtrain"), processor, corpus=corpus)
    expected = [s.id for task in ("report_long", "report") for s in read_jsonl(corpus / f"{task}.jsonl")
                if s.meta["split"] == "train"]
    assert [dataset[i].sample_id for i in range(len(dataset))] == expected
    assert report.mixture == "synthetic" and [s.name for s in report.sources] == ["report_long", "report"]


def test_task_weights_draw_each_record_that_many_times_per_epoch(tmp_path, processor):
    """trial x 2.5: every training record twice and a seeded half once more; text_mc x 0.5: a seeded half;
    the report counts records and draws, and the dry run's count (no processor) is the same."""
    from dataclasses import replace
    from collections import Counter

    from medkit.data.mixture import stage_record_counts

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=0, sizes={"caption": 2, "report_long": 2, "report": 2, "vqa_mc": 10,
                                           "text_mc": 20, "reasoning": 5, "trial": 20, "impression": 5})
    stage = replace(load_stage("instruct"), synthetic_weights={"trial": 2.5, "text_mc": 0.5})
    dataset, report = stage_dataset(stage, processor, corpus=corpus)
    drawn = Counter(dataset[i].sample_id for i in range(len(dataset)))
    train = {task: [s.id for s in read_jsonl(corpus / f"{task}.jsonl") if s.meta["split"] == "train"]
             for task in ("trial", "text_mc", "vqa_mc")}
    assert sorted(drawn[i] for i in train["trial"]) == [2] * 8 + [3] * 8
    assert sorted(drawn[i] for i in train["text_mc"]) == [0] * 8 + [1] * 8
    assert all(drawn[i] == 1 for i in train["vqa_mc"])
    by_name = {s.name: s for s in report.sources}
    assert (by_name["trial"].records, by_name["trial"].samples, by_name["trial"].weight) == (16, 40, 2.5)
    assert (by_name["text_mc"].samples, by_name["vqa_mc"].samples) == (8, None)
    assert report.samples == len(dataset) == report.records + 24 - 8
    assert report.to_dict()["samples_per_epoch"] == len(dataset)
    again, _ = stage_dataset(stage, processor, corpus=corpus)
    assert [again[i].sample_id for i in range(len(again))] == [dataset[i].sample_id for i in range(len(dataset))]
    assert stage_record_counts(stage, corpus=corpus).samples == len(dataset)


def test_leakage_audit_over_the_mixture_feeds_the_stage_exclusions(data_root, processor, tmp_path):
    """An evaluation image equal to one embedded in a saved dataset, and an evaluation question repeated
    by a JSONL record: both training records are flagged, and the stage then trains without them."""
    from medkit.data.leakage import audit_leakage, write_leakage_report
    from medkit.data.mixture import mixture_samples
    from medkit.data.schema import Sample

    train, images_of = mixture_samples(data_root)
    assert [s.id for s in train] == ([f"rocov2_filtered/roco-{i}" for i in range(5)]
                                     + [f"quilt_1m_filtered/quilt-{i}" for i in range(4)])
    eval_root = tmp_path / "eval"
    eval_root.mkdir()
    (eval_root / "leaked.png").write_bytes(png_bytes(102))  # the image embedded in quilt-2
    (eval_root / "other.png").write_bytes(png_bytes(7, size=(80, 80)))
    user = [{"type": "image"}, {"type": "text", "text": "Describe the image."}]
    evaluation = [
        Sample("eval-img", [{"role": "user", "content": user}, {"role": "assistant", "content": "glands"}],
               ["leaked.png"]),
        Sample("eval-txt", [{"role": "user", "content": user},
                            {"role": "assistant", "content": "Axial CT slice 3, no acute finding."}], ["other.png"]),
    ]
    _, report = audit_leakage(train, tmp_path, evaluation, eval_root, train_images=images_of)
    assert report.excluded_ids == ["quilt_1m_filtered/quilt-2", "rocov2_filtered/roco-3"]
    json_path, _ = write_leakage_report(report, tmp_path / "leakage")
    dataset, data_report = stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True,
                                         leakage_report=json_path)
    assert len(dataset) == 7 and data_report.to_dict()["excluded"] == 2


# ---- samples that cannot fit: lengths as the processor makes them, dropped or refused before training ----

def append_long_record(folder, sample_id: str, words: int) -> None:
    """A caption record of about ``words`` tokens (one per word in the tiny tokenizer) to a JSONL folder."""
    (folder / "img" / "long.png").write_bytes(png_bytes(77, size=(200, 90)))  # a multi-tile image
    record = caption_record(sample_id, "img/long.png", "finding " * words)
    record["messages"][0]["content"][0].pop("text")
    with (folder / "train.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def test_record_lengths_are_the_processor_s_token_counts(data_root, processor, tmp_path):
    from medkit.data.mixture import _arrow_length, _jsonl_length, read_source

    append_long_record(data_root / "rocov2_filtered", "roco-long", 300)
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, seed=0, sizes={"caption": 2, "report_long": 3, "report": 2, "vqa_mc": 4,
                                           "text_mc": 2, "reasoning": 2, "trial": 2, "impression": 2})
    roco, _ = read_source("r", data_root / "rocov2_filtered", processor, set(), None)
    quilt, _ = read_source("q", data_root / "quilt_1m_filtered", processor, set(), None)
    vqa, _ = read_source("v", corpus / "vqa_mc.jsonl", processor, set(), None, "train")
    measured = ([_jsonl_length(roco, i) for i in range(len(roco))] + [_arrow_length(quilt, i) for i in range(len(quilt))]
                + [_jsonl_length(vqa, i) for i in range(len(vqa))])
    encoded = [len(d[i].input_ids) for d in (roco, quilt, vqa) for i in range(len(d))]
    assert measured == encoded and max(measured) > 300
    assert any(sum(roco[i].tiles_per_image) > 1 for i in range(len(roco)))  # a tiled image is counted right


def test_overlong_records_are_dropped_counted_and_the_rest_keeps_its_order(data_root, processor, tmp_path):
    from dataclasses import replace

    from medkit.training.packing import PackingCollator

    append_long_record(data_root / "rocov2_filtered", "roco-long", 400)
    rows = [caption_record(f"pmc-{i}", {"bytes": png_bytes(40 + i), "path": None}, "finding " * words)
            for i, words in enumerate([5, 400, 6])]  # a saved table with a long row between short ones
    datasets.Dataset.from_list(rows, features=ARROW_FEATURES).save_to_disk(str(data_root / "pmc_oa_filtered"))
    stage = replace(PRETRAIN, max_length=300)
    lengths_dir = tmp_path / "lengths"
    dataset, report = stage_dataset(stage, processor, data_root=data_root, skip_missing=True,
                                    max_position_embeddings=8192, lengths_dir=lengths_dir)
    ids = [dataset[i].sample_id for i in range(len(dataset))]
    assert ids == [f"roco-{i}" for i in range(5)] + [f"quilt-{i}" for i in range(4)] + ["pmc-0", "pmc-2"]
    counts = {s.name: (s.records, s.overlong) for s in report.sources if s.format != "missing"}
    assert counts == {"ROCOv2 (filtered)": (5, 1), "Quilt-1M (filtered)": (4, 0), "PMC-OA (filtered)": (2, 1)}
    assert report.to_dict()["overlong"] == 2 and report.length_limit == 300
    # what is left always fits a row: the stage cannot die on one sample
    PackingCollator(processor.tokenizer.pad_token_id, stage.max_length)([dataset[i] for i in range(len(dataset))])
    # the model's max_position_embeddings bounds a sample too, when it is below the row length
    _, by_positions = stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True,
                                    max_position_embeddings=300, lengths_dir=lengths_dir)
    assert by_positions.length_limit == 300 and by_positions.to_dict()["overlong"] == 2
    # a saved table drops by row as well, and the filter is the same on every call (a resume's order)
    shorter = replace(PRETRAIN, max_length=174)  # the JSONL captions are 174 tokens, the table's 175
    first, arrow_report = stage_dataset(shorter, processor, data_root=data_root, skip_missing=True,
                                        max_position_embeddings=8192, lengths_dir=lengths_dir)
    arrow = next(s for s in arrow_report.sources if s.format == "arrow")
    assert arrow.overlong == 4 and arrow.records == 0 and arrow.longest == 175
    again, _ = stage_dataset(shorter, processor, data_root=data_root, skip_missing=True,
                             max_position_embeddings=8192, lengths_dir=lengths_dir)
    assert [first[i].sample_id for i in range(len(first))] == [again[i].sample_id for i in range(len(again))]


def test_lengths_are_cached_and_remeasured_when_the_data_changes(data_root, processor, tmp_path, monkeypatch):
    from medkit.data import mixture

    lengths_dir = tmp_path / "lengths"
    stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True, max_position_embeddings=8192,
                  lengths_dir=lengths_dir)
    cached = sorted(p.name for p in lengths_dir.iterdir())
    assert [name.split("-")[0] for name in cached] == ["quilt_1m_filtered", "rocov2_filtered"]

    def no_measuring(*args):
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(mixture, "record_length", no_measuring)
    stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True, max_position_embeddings=8192,
                  lengths_dir=lengths_dir)  # served from the cache
    monkeypatch.undo()
    append_long_record(data_root / "rocov2_filtered", "roco-new", 20)
    _, report = stage_dataset(PRETRAIN, processor, data_root=data_root, skip_missing=True,
                              max_position_embeddings=8192, lengths_dir=lengths_dir)
    assert report.records == 10 and len(list(lengths_dir.iterdir())) == 3  # new key for the changed file


def test_overlong_error_policy_names_the_records(data_root, processor):
    from dataclasses import replace

    append_long_record(data_root / "rocov2_filtered", "roco-long", 400)
    with pytest.raises(MixtureError, match=r"records longer than 300 tokens \(overlong: error.*"
                                           r"rocov2_filtered/roco-long \([\d,]+ tokens\)"):
        stage_dataset(replace(PRETRAIN, max_length=300, overlong="error"), processor, data_root=data_root,
                      skip_missing=True, max_position_embeddings=8192)


def test_lengths_measured_on_several_processes_equal_one(data_root, processor):
    from medkit.data.mixture import _jsonl_length, measure_lengths, read_source

    roco, _ = read_source("r", data_root / "rocov2_filtered", processor, set(), None)
    serial = measure_lengths(lambda i: _jsonl_length(roco, i), len(roco))
    assert measure_lengths(lambda i: _jsonl_length(roco, i), len(roco), workers=2, chunk=2).tolist() == serial.tolist()


def test_record_counts_report_missing_data_instead_of_failing(data_root):
    from medkit.data.mixture import stage_record_counts

    report = stage_record_counts(PRETRAIN, data_root=data_root)
    assert report.records == 9 and report.missing == ["PMC-OA (filtered)", "BIOMEDICA (dermatology and surgery subsets)"]
    assert stage_record_counts(PRETRAIN, data_root=data_root.parent / "nowhere").records == 0
