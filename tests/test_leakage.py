"""Leakage audit finds planted train/eval overlaps by image and by text, and nothing else."""

import json

import numpy as np
import pytest
from PIL import Image

from medkit.data.curation import CurationError
from medkit.data.leakage import audit_leakage, qa_text, write_leakage_report
from medkit.data.schema import Sample

QUESTIONS = [
    "Which lobe of the right lung shows the consolidation on this frontal radiograph?",
    "What is the most likely diagnosis given the spiculated mass in the upper outer breast quadrant?",
    "Is there evidence of midline shift or mass effect on this non contrast head CT?",
    "Which organ contains the cystic lesion seen on this abdominal ultrasound image?",
]


def blob(seed: int, size: tuple[int, int] = (256, 256)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def vqa(sample_id: str, image: str | None, question: str, answer: str) -> Sample:
    user = [{"type": "image"}, {"type": "text", "text": question}] if image else question
    return Sample(id=sample_id, images=[image] if image else [],
                  messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


@pytest.fixture
def split(tmp_path):
    train_root, eval_root = tmp_path / "train", tmp_path / "eval"
    train_root.mkdir(), eval_root.mkdir()
    for i in range(4):
        blob(100 + i).save(eval_root / f"e{i}.png")
        blob(200 + i).save(train_root / f"t{i}.png")
    blob(101).resize((384, 384)).save(train_root / "leaked.jpg", quality=80)  # eval image e1, re-saved larger
    evaluation = [vqa(f"eval-{i}", f"e{i}.png", QUESTIONS[i], f"answer {i}") for i in range(4)]
    train = [
        vqa("train-0", "t0.png", "Describe the dominant finding in this image.", "A small left pneumothorax."),
        vqa("train-img", "leaked.jpg", "What imaging modality was used?", "Ultrasound."),
        vqa("train-1", "t1.png", "Where is the fracture located?", "Distal radius."),
        # eval-2's question and answer with other whitespace and case, on a different image
        vqa("train-txt", "t2.png", "  is THERE evidence of midline   shift or mass effect\non this NON contrast head ct? ",
            "ANSWER 2"),
        vqa("train-2", "t3.png", QUESTIONS[2].replace("head CT", "chest X-ray"), "Cardiomegaly is present."),
        vqa("train-text-only", None, "List three causes of microcytic anaemia.", "Iron deficiency, thalassaemia, "
            "anaemia of chronic disease."),
    ]
    return train, train_root, evaluation, eval_root


def test_qa_text_is_question_then_answer():
    assert qa_text(vqa("x", "a.png", "Q?", "A.")) == "Q? A."


def test_audit_finds_exactly_the_planted_overlaps(split):
    train, train_root, evaluation, eval_root = split
    clean, report = audit_leakage(train, train_root, evaluation, eval_root)
    found = {(p.train_id, p.eval_id, p.signal) for p in report.pairs}
    assert found == {("train-img", "eval-1", "image_phash"), ("train-txt", "eval-2", "text_minhash")}
    assert report.excluded_ids == ["train-img", "train-txt"]
    assert [s.id for s in clean] == ["train-0", "train-1", "train-2", "train-text-only"]
    text_pair = next(p for p in report.pairs if p.signal == "text_minhash")
    assert text_pair.score == 1.0
    assert report.counts() == {"image_phash": 1, "text_minhash": 1}


def test_no_false_positives_on_distinct_items(split):
    train, train_root, evaluation, eval_root = split
    distinct = [s for s in train if s.id not in ("train-img", "train-txt")]
    clean, report = audit_leakage(distinct, train_root, evaluation, eval_root)
    assert report.pairs == [] and clean == distinct


def test_report_written_as_json_and_markdown(split, tmp_path):
    _, report = audit_leakage(*split)
    json_path, md_path = write_leakage_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["excluded_train_ids"] == ["train-img", "train-txt"]
    assert data["pairs_by_signal"] == {"image_phash": 1, "text_minhash": 1}
    assert (data["n_train"], data["n_eval"]) == (6, 4)
    markdown = md_path.read_text()
    assert "| train-img | eval-1 | image_phash |" in markdown
    assert "| train-txt | eval-2 | text_minhash | 1 |" in markdown


def test_unreadable_eval_image_names_file_and_record(split):
    train, train_root, evaluation, eval_root = split
    (eval_root / "e3.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(CurationError, match=r"e3\.png.*'eval-3'"):
        audit_leakage(train, train_root, evaluation, eval_root)
