"""Reliability of the native benchmark converters and the image readers on hostile or malformed inputs.

Each ``test_finding_NN_*`` reproduces one finding of the reliability probe (it fails on the code before
the fix): 4 record paths leaving the data root, 5 gold answers and ids coerced, 6 decompression-bomb
images, 10 data files that are not UTF-8. The other tests pin what must keep working (numeric ids, a
benchmark folder linked in, an image folder shared under the data root) and what an empty file gives.
Bad inputs are built in tmp_path; bomb PNGs are written row by row, never held as pixel arrays.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medkit.eval.benchmarks import BenchmarkDataError, load_benchmark

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# ---------------------------------------------------------------------------------------------------
# Helpers: small images, bomb PNGs, minimal native layouts


def small_png(path: Path, size: tuple[int, int] = (4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(path, format="PNG")
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: a few KB on disk, compressed a row at a time
    (PIL's Image.new would hold a byte per pixel, 400 MB for 20000 x 20000)."""
    compressor, idat = zlib.compressobj(9), []
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + the packed bits
    for _ in range(height):
        idat.append(compressor.compress(row))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(idat))
            + png_chunk(b"IEND", b""))


def bomb_png(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bomb_png_bytes(width, height))
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path: Path, body) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def medxpertqa_mm(root: Path, image: str) -> Path:
    (root / "medxpertqa" / "images").mkdir(parents=True, exist_ok=True)  # so "../" can be walked through
    return write_jsonl(root / "medxpertqa" / "MM" / "test.jsonl", [
        {"id": "MM-1", "question": "Invented question?", "options": {"A": "One", "B": "Two"}, "label": "A",
         "images": [image]}])


def slake(root: Path, image: str, **extra) -> Path:
    (root / "slake" / "imgs").mkdir(parents=True, exist_ok=True)
    return write_json(root / "slake" / "test.json", [
        {"qid": 1, "img_name": image, "question": "Is there an invented lesion?", "answer": "Yes", "q_lang": "en",
         "answer_type": "CLOSED", "content_type": "Abnormality", **extra}])


def medframeqa(root: Path, image) -> Path:
    return write_jsonl(root / "medframeqa" / "test.jsonl", [
        {"question_id": "Q1", "question": "Invented frames question?", "options": ["One", "Two"],
         "correct_answer": "A", "image_1": image}])


def mimic(root: Path, name: str, image: str, **extra) -> Path:
    texts = {"report_test": {"findings": "Invented clear lungs.", "impression": "Invented normal."},
             "impression_test": {"impression": "Invented normal."}}[name]
    return write_json(root / "mimic_cxr" / f"{name}.json",
                      [{"study_id": "s1", "subject_id": "p1", "images": [image], **texts, **extra}])


def copy_fixture(root: Path, folder: str) -> Path:
    shutil.copytree(FIXTURES / folder, root / folder)
    return root / folder


def edit_jsonl_line(path: Path, index: int, change) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    change(records[index])
    write_jsonl(path, records)


def located(path: Path, record: str) -> str:
    """A regex for an error that starts with the file and the record."""
    return re.escape(f"{path} {record}: ")


# ---------------------------------------------------------------------------------------------------
# Finding 4: record paths must stay inside the data root

# (benchmark, writer of its data file naming ``image``, the record's location in that file, the image
# reference leading from its base folder to tmp_path/outside/secret.png)
ESCAPES = [
    ("medxpertqa_mm", medxpertqa_mm, "line 1", "../../../outside/secret.png"),
    ("slake", slake, "item 0", "../../../outside/secret.png"),
    ("medframeqa", medframeqa, "line 1", "../../outside/secret.png"),
    ("mimic_cxr_report", lambda root, image: mimic(root, "report_test", image), "item 0", "../../outside/secret.png"),
    ("impression_0shot", lambda root, image: mimic(root, "impression_test", image), "item 0",
     "../../outside/secret.png"),
]


@pytest.mark.parametrize("name, write, record, image", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_finding_04_dotdot_image_path_outside_the_data_root_is_refused(tmp_path, name, write, record, image):
    secret = small_png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "root"
    path = write(root, image)
    with pytest.raises(BenchmarkDataError, match=located(path, record) + rf"image path '{re.escape(image)}' "
                       rf"resolves to {re.escape(str(secret))}, outside the data root {re.escape(str(root))}"):
        load_benchmark(name, data_root=root)


@pytest.mark.parametrize("name, write, record", [(e[0], e[1], e[2]) for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_finding_04_absolute_image_path_outside_the_data_root_is_refused(tmp_path, name, write, record):
    secret = small_png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "root"
    path = write(root, str(secret))
    with pytest.raises(BenchmarkDataError, match=located(path, record) + r"image path .* outside the data root"):
        load_benchmark(name, data_root=root)


@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="needs /etc/passwd")
def test_finding_04_etc_passwd_as_image_is_refused_before_it_is_opened(tmp_path):
    path = slake(tmp_path, "/etc/passwd")
    with pytest.raises(BenchmarkDataError, match=located(path, "item 0") + r"image path '/etc/passwd' resolves to "
                       r"/etc/passwd, outside the data root"):
        load_benchmark("slake", data_root=tmp_path)


def test_finding_04_symlinked_image_folder_leading_out_is_refused(tmp_path):
    small_png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "root"
    path = slake(root, "secret.png")
    (root / "slake" / "imgs").rmdir()
    (root / "slake" / "imgs").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(BenchmarkDataError, match=located(path, "item 0") + r"image path 'secret.png' resolves to "
                       r".*outside/secret.png, outside the data root"):
        load_benchmark("slake", data_root=root)


def test_finding_04_symlinked_image_file_leading_out_is_refused(tmp_path):
    secret = small_png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "root"
    path = medxpertqa_mm(root, "a.png")
    (root / "medxpertqa" / "images" / "a.png").symlink_to(secret)
    with pytest.raises(BenchmarkDataError,
                       match=located(path, "line 1") + r"image path 'a.png' .*outside the data root"):
        load_benchmark("medxpertqa_mm", data_root=root)


def test_finding_04_parquet_image_cell_path_leading_out_is_refused(tmp_path):
    small_png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "root"
    path = root / "mmmu_pro" / "standard (4 options)" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "id": ["pro_1"], "question": ["Invented <image 1>?"], "options": [repr(["a", "b", "c", "d"])],
        "answer": ["A"], "subject": ["Pharmacy"],
        "image_1": [{"bytes": None, "path": "../../outside/secret.png"}]}), path)
    with pytest.raises(BenchmarkDataError, match=located(path, "row 0") + r"image path .*outside the data root"):
        load_benchmark("mmmu_pro_med_4", data_root=root)


def test_benchmark_folder_linked_in_from_other_storage_still_loads(tmp_path):
    store = tmp_path / "store" / "slake"
    small_png(store / "imgs" / "x.png")
    slake(tmp_path / "store", "x.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "slake").symlink_to(store, target_is_directory=True)
    items = load_benchmark("slake", data_root=root).items
    assert items[0].images == [str((store / "imgs" / "x.png").resolve())]


def test_image_folder_shared_under_the_data_root_still_loads(tmp_path):
    shared = small_png(tmp_path / "shared" / "frame.png")
    medframeqa(tmp_path, "../shared/frame.png")
    assert load_benchmark("medframeqa", data_root=tmp_path).items[0].images == [str(shared.resolve())]


# ---------------------------------------------------------------------------------------------------
# Finding 5: gold answers, options and ids are never coerced


def set_field(key, value):
    def change(record):
        record[key] = value
    return change


MEDMCQA, MMLU = "medmcqa/validation.jsonl", "mmlu/anatomy/test.jsonl"
GOLD_COERCIONS = [
    ("medmcqa", MEDMCQA, set_field("cop", True), r"field 'cop' must be an integer index, got True"),
    ("medmcqa", MEDMCQA, set_field("cop", 2.9), r"field 'cop' must be an integer index, got 2.9"),
    ("medmcqa", MEDMCQA, set_field("cop", 1.0), r"field 'cop' must be an integer index, got 1.0"),
    ("medmcqa", MEDMCQA, set_field("cop", "1"), r"field 'cop' must be an integer index, got '1'"),
    ("medmcqa", MEDMCQA, set_field("id", True), r"field 'id' must be a non-empty string, got True"),
    ("mmlu_med", MMLU, set_field("answer", True), r"field 'answer' must be an integer index, got True"),
    ("mmlu_med", MMLU, set_field("answer", 1.5), r"field 'answer' must be an integer index, got 1.5"),
    ("mmlu_med", MMLU, set_field("answer", "1"), r"field 'answer' must be an integer index, got '1'"),
    ("mmlu_med", MMLU, set_field("choices", [True, "b", "c", "d"]),
     r"option 'choices\[0\]' must be a non-empty text, got True"),
    ("medqa", "medqa/test.jsonl", set_field("answer_idx", 2),
     r"field 'answer_idx' must be an option letter \(a string\), got 2 \(int\)"),
    ("medxpertqa_text", "medxpertqa/Text/test.jsonl", set_field("id", 3.0),
     r"field 'id' must be a non-empty string, got 3.0"),
]


@pytest.mark.parametrize("name, data_file, change, message", GOLD_COERCIONS,
                         ids=[f"{c[0]}-{c[3][:40]}" for c in GOLD_COERCIONS])
def test_finding_05_gold_and_ids_are_not_coerced(tmp_path, name, data_file, change, message):
    copy_fixture(tmp_path, data_file.split("/")[0])
    path = tmp_path / data_file
    edit_jsonl_line(path, 0, change)
    with pytest.raises(BenchmarkDataError, match=located(path, "line 1") + message):
        load_benchmark(name, data_root=tmp_path)


def test_finding_05_one_based_cop_out_of_range_names_the_value_read(tmp_path):
    folder = tmp_path / "medmcqa"
    path = write_jsonl(folder / "dev.json", [
        {"id": "x", "question": "Invented?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0}])
    with pytest.raises(BenchmarkDataError, match=located(path, "line 1") + r"field 'cop' = 0 is out of range 1..4"):
        load_benchmark("medmcqa", data_root=tmp_path)


def test_finding_05_slake_float_qid_refused(tmp_path):
    small_png(tmp_path / "slake" / "imgs" / "x.png")
    path = slake(tmp_path, "x.png", qid=7.0)
    with pytest.raises(BenchmarkDataError, match=located(path, "item 0") + r"field 'qid' must be a non-empty string, "
                       r"got 7.0"):
        load_benchmark("slake", data_root=tmp_path)


def test_finding_05_pubmedqa_decision_must_be_a_string(tmp_path):
    copy_fixture(tmp_path, "pubmedqa")
    truth = write_json(tmp_path / "pubmedqa" / "test_ground_truth.json", {"10000001": ["yes"]})
    with pytest.raises(BenchmarkDataError, match=re.escape(f"{truth} key '10000001'") + ": decision must be"):
        load_benchmark("pubmedqa", data_root=tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("age", 70.9, r"field 'age' must be a whole number of years, got 70.9"),
    ("subject_id", True, r"field 'subject_id' must be a string, got True"),
])
def test_finding_05_mimic_fields_not_coerced(tmp_path, field, value, message):
    small_png(tmp_path / "mimic_cxr" / "files" / "a.png")
    path = mimic(tmp_path, "report_test", "files/a.png", **{field: value})
    with pytest.raises(BenchmarkDataError, match=located(path, "item 0") + message):
        load_benchmark("mimic_cxr_report", data_root=tmp_path)


def test_finding_05_trial_title_must_be_a_string(tmp_path):
    folder = copy_fixture(tmp_path, "patient_trial")
    path = folder / "sigir" / "retrieved_trials.json"
    body = json.loads(path.read_text(encoding="utf-8"))
    body[0]["0"][0]["brief_title"] = ["Invented", "title"]
    write_json(path, body)
    with pytest.raises(BenchmarkDataError, match=re.escape(f"{path} item 0") + r".*'brief_title' must be a string"):
        load_benchmark("patient_trial_0shot", data_root=tmp_path)


def test_finding_05_embedded_image_bytes_must_be_bytes(tmp_path):
    path = medframeqa(tmp_path, {"bytes": "not bytes", "path": "x.png"})
    with pytest.raises(BenchmarkDataError, match=located(path, "line 1") + r"image cell 'bytes' must be bytes"):
        load_benchmark("medframeqa", data_root=tmp_path)


def test_finding_05_parquet_integers_stay_integers(tmp_path):
    # pandas reads an integer column holding a null as floats (7 -> 7.0); the ids must stay "7"
    folder = copy_fixture(tmp_path, "medframeqa")
    pq.write_table(pa.table({
        "question_id": pa.array([7, None], pa.int64()), "question": ["Invented one?", "Invented two?"],
        "options": [["x", "y"], ["x", "y"]], "correct_answer": ["A", "B"],
        "image_1": ["frames/q1_1.png", "frames/q2_1.png"]}), folder / "test.parquet")
    items = load_benchmark("medframeqa", data_root=tmp_path).items
    assert [i.id for i in items] == ["medframeqa-7", "medframeqa-row00001"]


def test_numeric_ids_and_option_texts_of_real_releases_still_load(tmp_path):
    folder = copy_fixture(tmp_path, "medframeqa")
    edit_jsonl_line(folder / "test.jsonl", 0, set_field("question_id", 7))
    assert load_benchmark("medframeqa", data_root=tmp_path).items[0].id == "medframeqa-7"
    copy_fixture(tmp_path, "medmcqa")
    edit_jsonl_line(tmp_path / "medmcqa" / "validation.jsonl", 0, set_field("opa", 5))
    assert load_benchmark("medmcqa", data_root=tmp_path).items[0].meta["options"]["A"] == "5"
    # SLAKE's qid and MIMIC's ids are integers in the releases
    assert load_benchmark("slake", data_root=FIXTURES).items[0].meta["source_id"] == "1"


# ---------------------------------------------------------------------------------------------------
# Finding 6: decompression bombs are refused from the header, naming file and record


@pytest.mark.parametrize("side", [8000, 10000, 20000])
def test_finding_06_image_size_refuses_a_bomb_naming_file_record_size_and_limit(tmp_path, side):
    path = bomb_png(tmp_path / "bomb.png", side, side)
    assert path.stat().st_size < 100_000
    size = rf"{side} x {side} = {side * side:,} pixels" if side < 20000 else rf"{side * side:,} pixels"
    with pytest.raises(Exception) as caught:
        from medkit.model.image_processing import image_size
        image_size(path, record="case-6")
    assert type(caught.value).__name__ == "ImageLoadError"
    assert re.search(rf"{re.escape(str(path))} \(record case-6\): image of {size} exceeds medkit's limit of "
                     rf"50,000,000 pixels", str(caught.value)), str(caught.value)


@pytest.mark.parametrize("side", [8000, 20000])
def test_finding_06_load_image_refuses_a_bomb_before_decoding(tmp_path, side):
    from medkit.model.image_processing import ImageLoadError, load_image

    path = bomb_png(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageLoadError, match=rf"bomb\.png \(record case-6\): image of .*{side * side:,} pixels "
                       rf"exceeds medkit's limit"):
        load_image(path, record="case-6")
    with pytest.raises(ImageLoadError, match=r"embedded.png \(record case-6\): image of"):
        load_image(io.BytesIO(path.read_bytes()), record="case-6", name="embedded.png")


def test_finding_06_limit_is_sized_for_real_medical_images(tmp_path):
    from medkit.model.image_processing import MAX_IMAGE_PIXELS, image_size

    assert 4096 * 3072 <= MAX_IMAGE_PIXELS < 10000 * 10000  # MIMIC-CXR's largest fit; a 10k square does not
    assert image_size(bomb_png(tmp_path / "cxr.png", 4096, 3072), record="cxr") == (4096, 3072)


def test_finding_06_benchmark_load_refuses_a_bomb_image_naming_file_and_record(tmp_path):
    bomb_png(tmp_path / "medxpertqa" / "images" / "bomb.png", 20000, 20000)
    path = medxpertqa_mm(tmp_path, "bomb.png")
    with pytest.raises(BenchmarkDataError, match=located(path, "line 1") + r".*bomb\.png: image of 400,000,000 "
                       r"pixels exceeds medkit's limit"):
        load_benchmark("medxpertqa_mm", data_root=tmp_path)


def test_finding_06_report_benchmark_refuses_an_oversized_image(tmp_path):
    bomb_png(tmp_path / "mimic_cxr" / "files" / "big.png", 8000, 8000)
    path = mimic(tmp_path, "impression_test", "files/big.png")  # impression excludes missing images, not bombs
    with pytest.raises(BenchmarkDataError, match=located(path, "item 0") + r".*big\.png: image of 8000 x 8000"):
        load_benchmark("impression_0shot", data_root=tmp_path)


def test_finding_06_embedded_parquet_bomb_refused_before_it_is_written(tmp_path):
    path = tmp_path / "mmmu_pro" / "standard (4 options)" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "id": ["pro_1"], "question": ["Invented <image 1>?"], "options": [repr(["a", "b", "c", "d"])],
        "answer": ["A"], "subject": ["Pharmacy"],
        "image_1": [{"bytes": bomb_png_bytes(20000, 20000), "path": "pro_1_1.png"}]}), path)
    with pytest.raises(BenchmarkDataError, match=located(path, "row 0") + r"embedded image 'pro_1_1.png'.*400,000,000"):
        load_benchmark("mmmu_pro_med_4", data_root=tmp_path)
    assert not (tmp_path / "mmmu_pro" / ".medkit_images").exists()


def test_finding_06_unreadable_image_fails_the_load_naming_file_and_record(tmp_path):
    (tmp_path / "slake" / "imgs").mkdir(parents=True)
    (tmp_path / "slake" / "imgs" / "x.png").write_bytes(b"not an image")
    path = slake(tmp_path, "x.png")
    with pytest.raises(BenchmarkDataError, match=located(path, "item 0") + r".*x\.png: corrupt or unreadable image"):
        load_benchmark("slake", data_root=tmp_path)


# ---------------------------------------------------------------------------------------------------
# Finding 10: bytes that are not UTF-8 name the file and the line


def insert_bad_byte(path: Path, line_no: int) -> None:
    """A 0xff byte (never valid UTF-8) inside the text of line ``line_no``."""
    lines = path.read_bytes().split(b"\n")
    quote = lines[line_no - 1].index(b'"') + 1
    lines[line_no - 1] = lines[line_no - 1][:quote] + b"\xff" + lines[line_no - 1][quote:]
    path.write_bytes(b"\n".join(lines))


NOT_UTF8 = [
    ("medqa", "medqa/test.jsonl", 2),                       # jsonl
    ("medmcqa", "medmcqa/validation.jsonl", 2),
    ("slake", "slake/test.json", 5),                        # json
    ("pubmedqa", "pubmedqa/ori_pqal.json", 3),
    ("medbullets", "medbullets/medbullets_op4.csv", 4),     # csv (line 4: inside a record spanning lines)
    ("patient_trial_0shot", "patient_trial/sigir/retrieved_trials.json", 4),
]


@pytest.mark.parametrize("name, data_file, line", NOT_UTF8, ids=[n[1] for n in NOT_UTF8])
def test_finding_10_non_utf8_data_file_names_file_and_line(tmp_path, name, data_file, line):
    copy_fixture(tmp_path, data_file.split("/")[0])
    path = tmp_path / data_file
    insert_bad_byte(path, line)
    with pytest.raises(BenchmarkDataError, match=rf"{re.escape(str(path))} line {line}: not UTF-8 text \(byte 0xff "
                       rf"at column \d+\)"):
        load_benchmark(name, data_root=tmp_path)


@pytest.mark.parametrize("data_file", ["queries.jsonl", "corpus.jsonl", "qrels/test.tsv"])
def test_finding_10_non_utf8_trial_fallback_files_name_file_and_line(tmp_path, data_file):
    folder = copy_fixture(tmp_path, "patient_trial")
    (folder / "sigir" / "retrieved_trials.json").unlink()  # the fallback files are read only without it
    path = folder / "sigir" / data_file
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:3] + b"\xff" + lines[1][3:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(BenchmarkDataError, match=rf"{re.escape(str(path))} line 2: not UTF-8 text \(byte 0xff at "
                       r"column 4\)"):
        load_benchmark("patient_trial_0shot", data_root=tmp_path)


def test_csv_with_a_byte_order_mark_loads(tmp_path):
    path = copy_fixture(tmp_path, "medbullets") / "medbullets_op4.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(load_benchmark("medbullets", data_root=tmp_path).items) == 2


# ---------------------------------------------------------------------------------------------------
# Empty data files: no items with a note saying where, or an error naming the file; never a bare traceback

EMPTY = [
    ("medqa", "medqa/test.jsonl"), ("medqa", "medqa/test.parquet"), ("medmcqa", "medmcqa/validation.jsonl"),
    ("medbullets", "medbullets/medbullets_op4.csv"), ("pubmedqa", "pubmedqa/test_ground_truth.json"),
    ("slake", "slake/test.json"), ("medframeqa", "medframeqa/test.jsonl"),
    ("medxpertqa_mm", "medxpertqa/MM/test.jsonl"), ("mimic_cxr_report", "mimic_cxr/report_test.jsonl"),
    ("impression_1shot", "mimic_cxr/impression_test.jsonl"),
    ("patient_trial_1shot", "patient_trial/sigir/retrieved_trials.json"),
    ("patient_trial_0shot", "patient_trial/sigir/queries.jsonl"),
]


@pytest.mark.parametrize("name, data_file", EMPTY, ids=[e[1] for e in EMPTY])
def test_empty_data_file_gives_no_items_or_an_error_naming_it(tmp_path, name, data_file):
    path = tmp_path / data_file
    if name == "pubmedqa":
        copy_fixture(tmp_path, "pubmedqa")
    if name.startswith("patient_trial"):
        (tmp_path / "patient_trial" / "sigir" / "qrels").mkdir(parents=True)
        (tmp_path / "patient_trial" / "sigir" / "qrels" / "test.tsv").write_text("")
        (tmp_path / "patient_trial" / "sigir" / "corpus.jsonl").write_text("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    try:
        loaded = load_benchmark(name, data_root=tmp_path)
    except BenchmarkDataError as e:
        assert str(path) in str(e)
    else:
        assert loaded.items == []
        assert path.name in loaded.count_note or str(tmp_path / data_file.split("/")[0]) in loaded.count_note
