"""Table 4: multiple-choice medical VQA benchmarks (strict exact-match accuracy).

Native layouts (``data_root/<data_dir>/...``); HF parquet image cells ``{"bytes", "path"}`` are written
once to ``<data_dir>/.medkit_images/`` (atomically; reused when the bytes are unchanged), image cells
holding a path are resolved against the benchmark folder.

| benchmark        | data_dir    | files                                                                  | count |
|------------------|-------------|------------------------------------------------------------------------|-------|
| medxpertqa_mm    | medxpertqa  | ``MM/test.jsonl`` {id, question, options{A..E}, label, images[names]}; ``images/<name>`` | 2,000 |
| slake            | slake       | ``test.json`` [{qid, img_name, question, answer, answer_type, q_lang, ...}]; ``imgs/<img_name>`` | 836 |
| medframeqa       | medframeqa  | ``test.parquet`` or ``test.jsonl`` or ``data/test-*.parquet`` {question, options, correct_answer, image_1..image_5} | 2,851 |
| mmmu_med         | mmmu        | ``<Subject>/dev-*.parquet`` + ``<Subject>/validation-*.parquet`` (or ``.jsonl``) for the 5 subjects | 175 |
| mmmu_pro_med_4   | mmmu_pro    | ``standard (4 options)/test-*.parquet`` (or ``.jsonl``)               | 286 |
| mmmu_pro_med_10  | mmmu_pro    | ``standard (10 options)/test-*.parquet`` (or ``.jsonl``)              | 286 |
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from medkit.data.schema import Sample
from medkit.eval.benchmarks import synthetic as syn
from medkit.eval.benchmarks.base import (
    LETTERS,
    Benchmark,
    BenchmarkDataError,
    MissingBenchmarkFile,
    PendingImage,
    Record,
    check_letter,
    first_existing,
    get_list,
    get_str,
    image_reference,
    iter_records,
    lettered,
    materialize,
    parse_list_string,
    register,
    stable_int,
)
from medkit.eval.benchmarks.prompts import SYSTEM_VQA, mc_messages

VQA_BENCHMARKS = ("medxpertqa_mm", "slake", "medframeqa", "mmmu_med", "mmmu_pro_med_4", "mmmu_pro_med_10")
MEDICAL_SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                    "Pharmacy", "Public_Health")
MAX_IMAGE_SLOTS = 7  # MMMU and MMMU-Pro carry image_1 .. image_7


@dataclass
class PendingItem:
    """One converted question whose images are written only after every record converted."""

    item_id: str
    question: str
    options: dict[str, str]
    answer: str
    images: list[PendingImage]
    captions: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)
    context: str | None = None


def finish(benchmark: str, pending: list[PendingItem]) -> list[Sample]:
    samples = []
    for item in pending:
        paths = materialize(item.images)
        messages = mc_messages(item.question, item.options, system=SYSTEM_VQA, context=item.context,
                               n_images=len(paths), image_captions=item.captions)
        meta = {"benchmark": benchmark, "answer": item.answer, "options": item.options, **item.meta}
        samples.append(Sample(item.item_id, messages, paths, meta))
    return samples


# ---------------------------------------------------------------------------------------------------
# MedXpertQA (multimodal)

ANSWER_CHOICES = re.compile(r"\s*Answer Choices:.*\Z", re.S)


def strip_inline_choices(question: str) -> str:
    """MedXpertQA repeats the options inside ``question`` after 'Answer Choices:'; we list them once."""
    return ANSWER_CHOICES.sub("", question).strip() or question


def options_dict(value: Any, where: str, key: str = "options") -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise BenchmarkDataError(f"{where}: field {key!r} must be an object of lettered options")
    letters = sorted(value)
    if letters != list(LETTERS[: len(letters)]):
        raise BenchmarkDataError(f"{where}: option letters {letters} are not A, B, C, ... in sequence")
    texts = [value[letter] for letter in letters]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise BenchmarkDataError(f"{where}: every option must be a non-empty string")
    return {letter: value[letter].strip() for letter in letters}


def medxpertqa_record(record: Record, where: str, folder: Path, benchmark: str) -> PendingItem:
    options = options_dict(record.get("options"), where)
    answer = check_letter(get_str(record, "label", where), options, where)
    item_id = get_str(record, "id", where)
    images = []
    for name in get_list(record, "images", where):
        if not isinstance(name, str) or not name:
            raise BenchmarkDataError(f"{where}: every entry of 'images' must be a file name")
        path = folder / "images" / name
        if not path.is_file():
            raise MissingBenchmarkFile(f"{where}: image file {path} is missing")
        images.append(PendingImage(path.resolve()))
    meta = {k: record.get(k) for k in ("medical_task", "body_system", "question_type") if k in record}
    return PendingItem(item_id, strip_inline_choices(get_str(record, "question", where)), options, answer,
                       images, None, {**meta, "source_id": item_id})


def load_medxpertqa_mm(folder: Path) -> list[Sample]:
    path = folder / "MM" / "test.jsonl"
    pending = [medxpertqa_record(r, w, folder, "medxpertqa_mm") for w, r in iter_records(path)]
    for item in pending:
        if not item.images:
            raise BenchmarkDataError(f"{path}: multimodal item {item.item_id!r} lists no images")
    return finish("medxpertqa_mm", pending)


# ---------------------------------------------------------------------------------------------------
# SLAKE (English, closed-form)

YES_NO = {"A": "Yes", "B": "No"}


def normalize(text: str) -> str:
    text = re.sub(r"[^\w\s/-]", " ", text.lower())
    words = [w for w in text.split() if w not in ("the", "a", "an")]
    return " ".join(words)


def question_alternatives(question: str) -> tuple[str, str] | None:
    """The two alternatives of an 'X or Y?' question, in question order, or None if there are none."""
    body = question.strip().rstrip("?").strip()
    if " or " not in body:
        return None
    left, right = body.rsplit(" or ", 1)
    left = left.rsplit(",", 1)[-1].strip()
    right = right.split(",")[0].strip()
    n_words = len(right.split())
    left_tail = " ".join(left.split()[-n_words:])
    if not left_tail or not right:
        return None
    return left_tail, right


def slake_options(record: Record, where: str, pool: dict[str, list[str]]) -> tuple[dict[str, str], str, str]:
    """Options, gold letter and how the options were built (see the SLAKE section of the README)."""
    answer = get_str(record, "answer", where)
    if normalize(answer) in ("yes", "no"):
        return YES_NO, "A" if normalize(answer) == "yes" else "B", "yes_no"
    alternatives = question_alternatives(get_str(record, "question", where))
    if alternatives:
        normalized = [normalize(a) for a in alternatives]
        if normalize(answer) in normalized and normalized[0] != normalized[1]:
            gold = normalized.index(normalize(answer))
            bare = [re.sub(r"^(?:the|an?)\s+", "", alt, flags=re.I) for alt in alternatives]
            texts = [answer if i == gold else alt[:1].upper() + alt[1:] for i, alt in enumerate(bare)]
            return {"A": texts[0], "B": texts[1]}, "AB"[gold], "question"
    others = [a for a in pool.get(str(record.get("content_type")), []) if normalize(a) != normalize(answer)]
    if not others:
        raise BenchmarkDataError(f"{where}: closed question with answer {answer!r} offers no alternative in the "
                                 "question and no other closed answer of its content_type to use as distractor")
    distractor = others[stable_int("slake", record.get("qid"), answer) % len(others)]
    texts = sorted([answer, distractor], key=str.lower)
    return {"A": texts[0], "B": texts[1]}, "AB"[texts.index(answer)], "answer_pool"


def load_slake(folder: Path) -> list[Sample]:
    path = folder / "test.json"
    records = list(iter_records(path))
    kept = []
    for where, record in records:
        if get_str(record, "q_lang", where) != "en" or get_str(record, "answer_type", where).upper() != "CLOSED":
            continue
        kept.append((where, record))
    pool: dict[str, list[str]] = {}
    for where, record in kept:
        answer = get_str(record, "answer", where)
        if normalize(answer) not in ("yes", "no"):
            bucket = pool.setdefault(str(record.get("content_type")), [])
            if normalize(answer) not in {normalize(a) for a in bucket}:
                bucket.append(answer)
    for bucket in pool.values():
        bucket.sort(key=str.lower)
    pending = []
    for where, record in kept:
        options, answer, how = slake_options(record, where, pool)
        qid = get_str(record, "qid", where)
        image = folder / "imgs" / get_str(record, "img_name", where)
        if not image.is_file():
            raise MissingBenchmarkFile(f"{where}: image file {image} is missing")
        meta = {"options_source": how, "answer_text": get_str(record, "answer", where), "source_id": qid,
                **{k: record.get(k) for k in ("img_name", "content_type", "modality", "location") if k in record}}
        pending.append(PendingItem(f"slake-{qid}", get_str(record, "question", where), options, answer,
                                   [PendingImage(image.resolve())], None, meta))
    return finish("slake", pending)


# ---------------------------------------------------------------------------------------------------
# MedFrameQA

LETTER_PREFIX = re.compile(r"^\(?([A-J])[.):]\s*")


def option_texts(value: Any, where: str) -> list[str]:
    """A list of option texts from a list, a lettered object or the string of a Python list."""
    if isinstance(value, dict):
        return list(options_dict(value, where).values())
    texts = parse_list_string(value, "options", where)
    stripped = [LETTER_PREFIX.sub("", t) for t in texts]
    matches = [LETTER_PREFIX.match(t) for t in texts]
    prefixed = all(m is not None and m.group(1) == LETTERS[i] for i, m in enumerate(matches))
    return stripped if prefixed else texts


def answer_letter(value: Any, options: dict[str, str], where: str, key: str) -> str:
    text = str(value or "").strip()
    match = re.match(r"^\(?([A-J])\b", text)
    if not match:
        raise BenchmarkDataError(f"{where}: field {key!r} must be an option letter, got {value!r}")
    return check_letter(match.group(1), options, where)


def frame_images(record: Record, folder: Path, stem: str, where: str, slots: int) -> list[tuple[int, PendingImage]]:
    frames = []
    for k in range(1, slots + 1):
        image = image_reference(record.get(f"image_{k}"), folder, f"{stem}_{k}", where)
        if image is not None:
            frames.append((k, image))
    return frames


def load_medframeqa(folder: Path) -> list[Sample]:
    path = first_existing(folder, ("test.parquet", "test.jsonl", "data/test-*.parquet"))
    pending = []
    for i, (where, record) in enumerate(iter_records(path)):
        options = lettered(option_texts(record.get("options"), where), where)
        answer = answer_letter(record.get("correct_answer"), options, where, "correct_answer")
        item_id = str(record.get("question_id") or f"row{i:05d}")
        frames = frame_images(record, folder, f"medframeqa_{item_id}", where, 5)
        if not frames:
            raise BenchmarkDataError(f"{where}: no image in image_1..image_5")
        meta = {"source_id": item_id, "frames": [k for k, _ in frames],
                **{k: record.get(k) for k in ("modality", "organ", "keyword") if k in record}}
        pending.append(PendingItem(f"medframeqa-{item_id}", get_str(record, "question", where), options, answer,
                                   [img for _, img in frames], [f"Frame {k}" for k, _ in frames], meta))
    return finish("medframeqa", pending)


# ---------------------------------------------------------------------------------------------------
# MMMU-Med and MMMU-Pro-Med

IMAGE_TAG = re.compile(r"<image (\d+)>")


def tagged_images(
    record: Record, texts: list[str], folder: Path, stem: str, where: str
) -> tuple[list[PendingImage], list[str]]:
    """Images in the order their ``<image k>`` tags first appear; untagged items take every image slot."""
    order = list(dict.fromkeys(int(k) for text in texts for k in IMAGE_TAG.findall(text)))
    if not order:
        frames = frame_images(record, folder, stem, where, MAX_IMAGE_SLOTS)
        return [img for _, img in frames], [f"<image {k}>" for k, _ in frames]
    images = []
    for k in order:
        image = image_reference(record.get(f"image_{k}"), folder, f"{stem}_{k}", where)
        if image is None:
            raise BenchmarkDataError(f"{where}: the text refers to <image {k}> but image_{k} is empty")
        images.append(image)
    return images, [f"<image {k}>" for k in order]


def mmmu_item(benchmark: str, record: Record, where: str, folder: Path, extra: dict[str, Any]) -> PendingItem:
    item_id = get_str(record, "id", where)
    question = get_str(record, "question", where)
    texts = parse_list_string(record.get("options"), "options", where)
    options = lettered(texts, where)
    answer = answer_letter(record.get("answer"), options, where, "answer")
    images, captions = tagged_images(record, [question, *texts], folder, f"{benchmark}_{item_id}", where)
    meta = {"source_id": item_id, **extra,
            **{k: record.get(k) for k in ("subfield", "img_type", "topic_difficulty") if record.get(k) is not None}}
    return PendingItem(f"{benchmark}-{item_id}", question, options, answer, images, captions, meta)


def split_files(folder: Path, split: str) -> list[Path]:
    patterns = (f"{split}-*.parquet", f"{split}.parquet", f"{split}.jsonl")
    return sorted(path for pattern in patterns for path in folder.glob(pattern))


def load_mmmu_med(folder: Path) -> list[Sample]:
    pending = []
    for subject in MEDICAL_SUBJECTS:
        for split in ("dev", "validation"):
            files = split_files(folder / subject, split)
            if not files:
                raise MissingBenchmarkFile(f"expected {folder / subject}/{split}-*.parquet (or {split}.jsonl)")
            for path in files:
                for where, record in iter_records(path):
                    if record.get("question_type", "multiple-choice") != "multiple-choice":
                        continue
                    pending.append(mmmu_item("mmmu_med", record, where, folder, {"subject": subject, "split": split}))
    return finish("mmmu_med", pending)


def subject_key(subject: Any) -> str:
    return re.sub(r"[\s_]+", "_", str(subject or "")).strip("_").lower()


def mmmu_pro_loader(n_options: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"mmmu_pro_med_{n_options}"
    medical = {subject_key(s) for s in MEDICAL_SUBJECTS}

    def load(folder: Path) -> list[Sample]:
        sub = folder / f"standard ({n_options} options)"
        files = split_files(sub, "test")
        if not files:
            raise MissingBenchmarkFile(f"expected {sub}/test-*.parquet (or test.jsonl)")
        pending = []
        for path in files:
            for where, record in iter_records(path):
                if subject_key(record.get("subject")) in medical:
                    pending.append(mmmu_item(benchmark, record, where, folder, {"subject": record.get("subject")}))
        return finish(benchmark, pending)

    return load


# ---------------------------------------------------------------------------------------------------
# Synthetic counterparts


def synthetic_vqa_pool(corpus_dir: Path) -> Iterator[Sample]:
    yield from syn.corpus_items(corpus_dir, "vqa_mc", "eval")
    yield from (s for s in syn.corpus_items(corpus_dir, "reasoning", "eval") if s.meta.get("source_task") == "vqa_mc")


def synthetic_vqa_loader(benchmark: str) -> Callable[[Path], list[Sample]]:
    def load(corpus_dir: Path) -> list[Sample]:
        samples = []
        for sample in syn.family_subset(list(synthetic_vqa_pool(corpus_dir)), benchmark, VQA_BENCHMARKS):
            options = dict(sample.meta["options"])
            captions, text = syn.image_captions_and_text(sample)
            question = syn.split_mc_text(text, options, sample.id)
            messages = mc_messages(question, options, system=SYSTEM_VQA, n_images=len(sample.images),
                                   image_captions=captions)
            meta = syn.base_meta(benchmark, sample, sample.meta["answer"], options=options,
                                 question_type=sample.meta.get("question_type"))
            samples.append(Sample(f"{benchmark}-{sample.id}", messages, syn.absolute_images(sample, corpus_dir), meta))
        return samples

    return load


def vqa_benchmark(name: str, title: str, source: str, split: str, count: int, data_dir: str,
                  files: tuple[str, ...], native: Callable[..., list[Sample]], explanation: str = "",
                  options: dict | None = None) -> Benchmark:
    return register(Benchmark(name=name, title=title, table="4", kind="mc", source=source, split=split,
                              expected_count=count, data_dir=data_dir, native_files=files, native=native,
                              synthetic=synthetic_vqa_loader(name), scorer="strict_mc", count_explanation=explanation,
                              options=options or {}))


vqa_benchmark("medxpertqa_mm", "MedXQA (multimodal)", "TsinghuaC3I/MedXpertQA (MM)", "test", 2000, "medxpertqa",
              ("MM/test.jsonl", "images/<file>"), load_medxpertqa_mm)
vqa_benchmark("slake", "SLAKE (English)", "BoKelvin/SLAKE", "test (English, CLOSED)", 836, "slake",
              ("test.json", "imgs/<img_name>"), load_slake)
vqa_benchmark("medframeqa", "MedFrameQA", "SuhaoYu1020/MedFrameQA", "test", 2851, "medframeqa",
              ("test.parquet | test.jsonl | data/test-*.parquet",), load_medframeqa)
vqa_benchmark("mmmu_med", "MMMU-Med (dev)", "MMMU/MMMU (5 medical subjects)", "dev+validation", 175, "mmmu",
              tuple(f"{s}/{{dev,validation}}-*.parquet" for s in MEDICAL_SUBJECTS), load_mmmu_med,
              "only multiple-choice questions are kept (open questions dropped), or a subset")
vqa_benchmark("mmmu_pro_med_4", "MMMU-Med-Pro (4 opt)", "MMMU/MMMU_Pro standard (4 options)", "test", 286, "mmmu_pro",
              ("standard (4 options)/test-*.parquet",), mmmu_pro_loader(4))
vqa_benchmark("mmmu_pro_med_10", "MMMU-Med-Pro (10 opt)", "MMMU/MMMU_Pro standard (10 options)", "test", 286,
              "mmmu_pro", ("standard (10 options)/test-*.parquet",), mmmu_pro_loader(10))
