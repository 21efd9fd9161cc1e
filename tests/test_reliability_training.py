"""Training data that must stop a stage before any rank starts, or be reported: empty datasets (finding 8),
and records validated in the parent with errors naming file and line (or folder and row) and id (13)."""

import json
import os
import subprocess
from dataclasses import replace

import datasets
import pytest

from medkit.chat import load_tokenizer
from medkit.cli import main
from medkit.config import ConfigError
from medkit.data.mixture import MixtureError, check_stage_sources, dataset_folder, stage_dataset
from medkit.data.schema import SchemaError
from medkit.model.build import image_token_id, model_config
from medkit.model.image_processing import ImageLoadError
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import load_profile
from medkit.training.launch import prepare_stage, stage_command, stage_dry_run
from medkit.training.stages import load_stage, stage_for_profile

from test_mixture import ARROW_FEATURES, append_long_record, caption_record, png_bytes, write_jsonl_source

PRETRAIN = load_stage("pretrain")
ROCO, QUILT, PMC, BIOMEDICA = (dataset_folder(name) for name in (
    "ROCOv2 (filtered)", "Quilt-1M (filtered)", "PMC-OA (filtered)", "BIOMEDICA (dermatology and surgery subsets)"))


@pytest.fixture(scope="module")
def processor():
    profile, tokenizer = load_profile("tiny"), load_tokenizer("tiny")
    config = model_config(profile, vocab_size=len(tokenizer), img_token=image_token_id(tokenizer))
    return MedGPTOssProcessor.for_model(config, tokenizer, profile)


def jsonl_record(sample_id: str, image: str) -> dict:
    record = caption_record(sample_id, image, f"Axial CT slice {sample_id}, no acute finding.")
    record["messages"][0]["content"][0].pop("text")  # JSONL parts carry only their own keys
    return record


def write_records(folder, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def full_pt_root(root):
    """All four PT datasets present: ROCOv2 and PMC-OA as JSONL, Quilt-1M as a saved dataset, BIOMEDICA JSONL."""
    write_jsonl_source(root / ROCO, 2)
    write_jsonl_source(root / PMC, 1)
    write_jsonl_source(root / BIOMEDICA, 1)
    rows = [caption_record(f"quilt-{i}", {"bytes": png_bytes(100 + i), "path": None}, "H&E: benign glands.")
            for i in range(2)]
    datasets.Dataset.from_list(rows, features=ARROW_FEATURES).save_to_disk(str(root / QUILT))
    return root


def empty_pt_root(root, *, saved_quilt: bool = False):
    """ROCOv2 with records; the other three PT folders hold an empty train.jsonl (0 bytes or blank lines),
    Quilt-1M an empty saved dataset instead if ``saved_quilt``."""
    write_jsonl_source(root / ROCO, 3)
    for folder, text in ((PMC, ""), (BIOMEDICA, "\n  \n\n"), (QUILT, "\n")):
        (root / folder).mkdir(parents=True)
        (root / folder / "train.jsonl").write_text(text)
    if saved_quilt:
        (root / QUILT / "train.jsonl").unlink()
        empty = {name: [] for name in ARROW_FEATURES}
        datasets.Dataset.from_dict(empty, features=ARROW_FEATURES).save_to_disk(str(root / QUILT))
    return root


@pytest.fixture()
def no_launch(monkeypatch):
    """`medkit train` runs to the launch, which is recorded instead of started."""
    launched = []

    def record(cmd, *args, **kwargs):
        launched.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", record)
    return launched


# ---- finding 8: an empty dataset is a missing one ----

def test_finding_08_empty_train_jsonl_and_empty_saved_dataset_stop_the_stage(tmp_path):
    root = empty_pt_root(tmp_path / "table1", saved_quilt=True)
    with pytest.raises(MixtureError) as refused:
        check_stage_sources(PRETRAIN, data_root=root)
    message = str(refused.value)
    assert "no records in" in message and "--skip-missing" in message
    assert str(root / PMC / "train.jsonl") in message and str(root / BIOMEDICA / "train.jsonl") in message
    assert f"the saved dataset in {root / QUILT} has 0 rows" in message


def test_finding_08_empty_datasets_are_listed_missing_with_their_reason(tmp_path, processor):
    root = empty_pt_root(tmp_path / "table1")
    dataset, report = stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True)
    assert len(dataset) == 3
    written = report.to_dict()
    assert written["missing"] == ["Quilt-1M (filtered)", "PMC-OA (filtered)",
                                  "BIOMEDICA (dermatology and surgery subsets)"]
    assert all(why.startswith("empty: ") for why in written["missing_reasons"].values())
    assert written["missing_reasons"]["PMC-OA (filtered)"] == f"empty: {root / PMC / 'train.jsonl'} holds no records"
    # a saved dataset of 0 rows (save_to_disk writes no Arrow file for it, which load_from_disk fails on)
    root = empty_pt_root(tmp_path / "saved", saved_quilt=True)
    _, report = stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True)
    assert report.to_dict()["missing_reasons"]["Quilt-1M (filtered)"] == \
        f"empty: the saved dataset in {root / QUILT} has 0 rows"


def test_finding_08_train_refuses_empty_datasets_before_launching(tmp_path, capsys, no_launch):
    root = empty_pt_root(tmp_path / "table1")
    argv = ["train", "--stage", "pretrain", "--data-root", str(root), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "medkit train: error: stage pretrain:" in err and str(root / PMC / "train.jsonl") in err
    assert no_launch == []
    assert main(argv + ["--skip-missing"]) == 0  # trains on ROCOv2, and says what it has nothing from
    out = capsys.readouterr().out
    assert "nothing from Quilt-1M (filtered) (empty: " in out and len(no_launch) == 1


def test_finding_08_a_dataset_emptied_by_exclusions_or_lengths_is_reported(tmp_path, processor):
    root = full_pt_root(tmp_path / "table1")
    leakage = tmp_path / "leakage.json"
    leakage.write_text(json.dumps({"excluded_train_ids": [f"{ROCO}/roco-0", f"{ROCO}/roco-1"]}))
    with pytest.raises(MixtureError, match=r"nothing to train on from ROCOv2 \(filtered\) at .*rocov2_filtered "
                                           r"\(emptied: all 2 records left out \(2 excluded by the leakage report\)\)"):
        stage_dataset(PRETRAIN, processor, data_root=root, leakage_report=leakage)
    dry = stage_dry_run("pretrain", profile="tiny", out=tmp_path / "out", data_root=root, leakage_report=leakage)
    assert "NOT READY: stage pretrain: nothing to train on from ROCOv2 (filtered)" in dry
    _, report = stage_dataset(PRETRAIN, processor, data_root=root, leakage_report=leakage, skip_missing=True)
    assert report.missing == ["ROCOv2 (filtered)"] and report.records == 4
    # every record of a dataset over the length limit: dropped, counted, and the dataset named as emptied
    append_long_record(root / BIOMEDICA, "bio-long", 400)
    short = replace(PRETRAIN, max_length=300)
    (root / BIOMEDICA / "train.jsonl").write_text((root / BIOMEDICA / "train.jsonl").read_text().splitlines()[1] + "\n")
    _, report = stage_dataset(short, processor, data_root=root, skip_missing=True, max_position_embeddings=8192)
    reasons = report.to_dict()["missing_reasons"]
    assert reasons == {"BIOMEDICA (dermatology and surgery subsets)":
                       "emptied: all 1 records left out (1 longer than 300 tokens)"}


# ---- finding 13: every record validated in the parent, errors naming file and line and id ----

def test_finding_13_non_utf8_bytes_name_file_and_line(tmp_path, processor):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 2)
    with (root / ROCO / "train.jsonl").open("ab") as f:
        f.write(b'{"id": "bad-\xff", "messages": []}\n')
    with pytest.raises(SchemaError, match=r"rocov2_filtered/train\.jsonl line 3: not UTF-8 text \(byte 0xff"):
        stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True)


def escaping_image(root, kind: str) -> str:
    """An image path in a record of ROCOv2 that leads outside the data root, one way or another."""
    outside = root.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "x.png").write_bytes(png_bytes(9))
    if kind == "dotdot":
        return "../../elsewhere/x.png"
    if kind == "absolute":
        return str(outside / "x.png")
    os.symlink(outside / "x.png", root / ROCO / "img" / "link.png")
    return "img/link.png"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_finding_13_image_paths_leading_out_of_the_data_root_are_refused(tmp_path, processor, kind):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 2)
    image = escaping_image(root, kind)
    with (root / ROCO / "train.jsonl").open("a") as f:
        f.write(json.dumps(jsonl_record("roco-out", image)) + "\n")
    with pytest.raises(SchemaError, match=r"rocov2_filtered/train\.jsonl line 3 \(id 'roco-out'\): image .* "
                                             r"is outside .*table1"):
        stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True)


def test_finding_13_images_elsewhere_in_the_data_root_or_a_linked_dataset_folder_are_fine(tmp_path, processor):
    disk = tmp_path / "other_disk" / "rocov2"
    write_jsonl_source(disk, 2)  # the dataset lives on another disk, linked into the data root
    root = tmp_path / "table1"
    root.mkdir()
    os.symlink(disk, root / ROCO)
    write_jsonl_source(root / PMC, 1)
    (root / "shared").mkdir()
    (root / "shared" / "a.png").write_bytes(png_bytes(5))
    with (root / PMC / "train.jsonl").open("a") as f:  # an image elsewhere in the same data root
        f.write(json.dumps(jsonl_record("pmc-shared", "../shared/a.png")) + "\n")
    (root / PMC / "img" / "0.png").unlink()
    with pytest.raises(SchemaError, match=r"pmc_oa_filtered/train\.jsonl line 1 \(id 'roco-0'\): image file "
                                             r".*pmc_oa_filtered/img/0\.png not found"):
        stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True)
    (root / PMC / "img" / "0.png").write_bytes(png_bytes(3))
    _, report = stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True)
    assert report.records == 4


def test_finding_13_train_validates_records_before_any_rank_starts(tmp_path, capsys, no_launch):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 2)
    with (root / ROCO / "train.jsonl").open("a") as f:
        f.write(json.dumps(jsonl_record("roco-out", escaping_image(root, "dotdot"))) + "\n")
    argv = ["train", "--stage", "pretrain", "--data-root", str(root), "--skip-missing", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"medkit train: error: {root / ROCO / 'train.jsonl'} line 3 (id 'roco-out'): image" in err
    assert "is outside" in err and no_launch == []
    assert main(argv + ["--dry-run"]) == 0  # the dry run reports it
    assert f"data         unreadable: {root / ROCO / 'train.jsonl'} line 3 (id 'roco-out')" in capsys.readouterr().out


def test_finding_13_dry_run_reports_missing_images_and_bad_rows_of_saved_datasets(tmp_path):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 3)
    (root / ROCO / "img" / "2.png").unlink()
    report = stage_dry_run("pretrain", profile="tiny", out=tmp_path / "out", data_root=root, skip_missing=True)
    assert (f"unreadable: {root / ROCO / 'train.jsonl'} line 3 (id 'roco-2'): image file "
            f"{root / ROCO / 'img' / '2.png'} not found") in report
    (root / ROCO / "img" / "2.png").write_bytes(png_bytes(2))
    features = datasets.Features({**ARROW_FEATURES, "images": datasets.List(datasets.Value("string"))})
    rows = [caption_record(f"quilt-{i}", image, "H&E: benign glands.")
            for i, image in enumerate(["../rocov2_filtered/img/0.png", "/etc/hostname"])]
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(root / QUILT))
    report = stage_dry_run("pretrain", profile="tiny", out=tmp_path / "out", data_root=root, skip_missing=True)
    assert f"unreadable: {root / QUILT} row 1 (id 'quilt-1'): image /etc/hostname is outside" in report


def test_finding_13_unreadable_images_name_file_and_line(tmp_path):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 3)
    (root / ROCO / "img" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match=r"rocov2_filtered/train\.jsonl line 2 \(id 'roco-1'\): .*1\.png "
                                             r"\(record roco-1\): corrupt or unreadable"):
        prepare_stage("pretrain", profile="tiny", out=tmp_path / "out", data_root=root, skip_missing=True)


def test_finding_13_a_rank_s_image_error_names_file_and_line(tmp_path, processor):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 2)
    whole = (root / ROCO / "img" / "1.png").read_bytes()
    (root / ROCO / "img" / "1.png").write_bytes(whole[:len(whole) // 2])  # header intact, pixels cut short
    dataset, _ = stage_dataset(PRETRAIN, processor, data_root=root, skip_missing=True, max_position_embeddings=8192)
    with pytest.raises(ImageLoadError, match=r"rocov2_filtered/train\.jsonl line 2 \(id 'roco-1'\): "):
        dataset[1]


def test_finding_13_overlong_errors_name_file_and_line(tmp_path, processor):
    root = tmp_path / "table1"
    write_jsonl_source(root / ROCO, 3)
    append_long_record(root / ROCO, "roco-long", 400)
    rows = [caption_record(f"quilt-{i}", {"bytes": png_bytes(40 + i), "path": None}, "finding " * words)
            for i, words in enumerate([5, 400])]
    datasets.Dataset.from_list(rows, features=ARROW_FEATURES).save_to_disk(str(root / QUILT))
    refusing = replace(PRETRAIN, max_length=300, overlong="error")
    with pytest.raises(MixtureError) as refused:
        stage_dataset(refusing, processor, data_root=root, skip_missing=True, max_position_embeddings=8192)
    message = str(refused.value)
    assert f"rocov2_filtered/roco-long (" in message and f"at {root / ROCO / 'train.jsonl'} line 4" in message
    assert f"quilt_1m_filtered/quilt-1 (" in message and f"at {root / QUILT} row 1" in message


def test_finding_13_a_max_length_beyond_the_model_s_positions_is_refused_at_plan_time(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "init" / "model").mkdir(parents=True)
    (out / "init" / "model" / "config.json").write_text(json.dumps(
        {"text_config": {"max_position_embeddings": 16384, "router_aux_loss_coef": 0.9}}))
    with pytest.raises(ConfigError, match=r"stage pretrain: max_length 32,768 tokens exceeds the model's "
                                          r"max_position_embeddings 16,384"):
        stage_command("pretrain", profile="paper", out=out, data_root=tmp_path)
    argv = ["train", "--stage", "pretrain", "--profile", "paper", "--data-root", str(tmp_path), "--out", str(out),
            "--dry-run"]
    assert main(argv) == 2 and "max_position_embeddings 16,384" in capsys.readouterr().err
    # the paper's GPT-oss-20b has 131,072 positions: Table 2's rows fit; the tiny model's rows are its 8,192
    stage_command("pretrain", profile="paper", out=tmp_path / "fresh", data_root=tmp_path)
    assert stage_for_profile(PRETRAIN, load_profile("tiny")).max_length == 8192
    assert "a sample may have 8,192 tokens (stage max_length 8,192, model max_position_embeddings 8,192)" in \
        stage_dry_run("pretrain", profile="tiny", out=out, data_root=tmp_path, skip_missing=True)
