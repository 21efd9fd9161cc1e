"""Table 4: multiple-choice medical VQA benchmarks (strict exact-match accuracy).

Native layouts (``data_root/<data_dir>/...``); HF parquet image cells ``{"bytes", "path"}`` are written
once to ``<data_dir>/.medkit_images/`` (atomically; reused when the bytes are unchanged), image cells
holding a path are resolved against the benchmark folder. Every image, of either kind, must lie inside the
data root (symlinks followed; see ``base.data_roots``) and have a readable header within the pixel limit.

| benchmark        | data_dir    | files                                                                  | count |
|------------------|-------------|------------------------------------------------------------------------|-------|
| medxpertqa_mm    | medxpertqa  | HF: ``MM/test.jsonl`` {id, question, options{A..E}, label "A", images[names]}; or GitHub: ``input/medxpertqa_mm_input.jsonl`` (or ``medxpertqa_mm_input.jsonl``) {id, question with "Answer Choices: (A) ...", options [{letter, content}], label ["A"], images [{image_path}]}; ``images/<name>`` | 2,000 |
| slake            | slake       | ``test.json`` [{qid, img_name, question, answer, answer_type, q_lang, ...}]; ``imgs/<img_name>`` | 836 |
| medframeqa       | medframeqa  | ``test.parquet`` or ``test.jsonl`` or ``data/test-*.parquet`` {question, options, correct_answer, image_1..image_5} | 2,851 |
| mmmu_med         | mmmu        | ``<Subject>/dev-*.parquet`` + ``<Subject>/validation-*.parquet`` (or ``.jsonl``) for the 5 subjects | 175 |
| mmmu_pro_med_4   | mmmu_pro    | ``standard (4 options)/test-*.parquet`` (or ``.jsonl``)               | 286 |
| mmmu_pro_med_10  | mmmu_pro    | ``standard (10 options)/test-*.parquet`` (or ``.jsonl``)              | 286 |

MedXpertQA: the first layout present is read (HF before GitHub). The GitHub release's options may be a
list of {letter, content}, an object, or only inline after "Answer Choices:" in the question; its label
a one-letter list or a letter; its images {image_path} entries or names. The inline choices are always
cut from the question, since the options are listed once under it.

SLAKE: options ``languages`` (default ``("en", "zh")``) and ``answer_types`` (default ``("CLOSED",)``)
select records by ``q_lang`` and ``answer_type``. Table 3's 836 are test.json's closed questions in both
languages (416 English + 420 Chinese) although the paper labels the set "English";
``languages=("en",)`` gives the 416 English ones. Options of a closed question: a yes/no answer gets its
affirmative/negative pair (Yes/No; Chinese 是的/不是, 包含/不包含, 有/没有, ...); a question naming its
alternatives ("X or Y", "X, Y or Z"; Chinese 还是/或者/或, and 和 before 哪/谁) gets all of them, in
question order, and the gold answer must map to one (an answer the question names but the split missed
is an error); an answer the question does not offer at all (an annotation slip, 2 public records) is
added as the last option; any other question gets its answer and one other closed answer of the same
language and content_type, chosen deterministically and sorted.
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
    optional_id,
    parse_list_string,
    record_image,
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
# MedXpertQA (multimodal; the text loader in text_qa shares these readers)

# Per subset, the HF layout first, then the GitHub release's eval/data/medxpertqa/ (its input/ folder or
# the bare file): the first present is read.
MEDXPERTQA_FILES = {
    "MM": ("MM/test.jsonl", "input/medxpertqa_mm_input.jsonl", "medxpertqa_mm_input.jsonl"),
    "Text": ("Text/test.jsonl", "input/medxpertqa_text_input.jsonl", "medxpertqa_text_input.jsonl"),
}
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


def letter_content_options(entries: list[Any], where: str) -> dict[str, str]:
    """The GitHub release's ``[{"letter": "A", "content": "..."}, ...]`` as a lettered object."""
    options: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("letter"), str) or "content" not in entry:
            raise BenchmarkDataError(f"{where}: every entry of 'options' must be an object with 'letter' and 'content'")
        if entry["letter"] in options:
            raise BenchmarkDataError(f"{where}: option letter {entry['letter']!r} appears twice")
        options[entry["letter"]] = entry["content"]
    return options_dict(options, where)


def inline_choices(question: str, where: str) -> dict[str, str]:
    """Options written only into the question: '...\nAnswer Choices: (A) x (B) y ...'."""
    _, found, choices = question.partition("Answer Choices:")
    markers: list[re.Match[str]] = []
    # each letter is looked for after the previous one, so an option quoting a later one (a real option B
    # says "the added option (E) is ...") is not cut there
    for letter in LETTERS:
        marker = re.compile(rf"(?<!\S)\({letter}\)\s*").search(choices, markers[-1].end() if markers else 0)
        if marker is None:
            break
        markers.append(marker)
    if not found or len(markers) < 2:
        raise BenchmarkDataError(f"{where}: no 'options' field and no '(A) ... (B) ...' after 'Answer Choices:' "
                                 "in the question")
    ends = [m.start() for m in markers[1:]] + [len(choices)]
    return lettered([choices[m.end():end].strip() for m, end in zip(markers, ends)], where)


def medxpertqa_options(record: Record, where: str) -> dict[str, str]:
    value = record.get("options")
    if value in (None, [], {}):
        return inline_choices(get_str(record, "question", where), where)
    if isinstance(value, list):
        return letter_content_options(value, where)
    return options_dict(value, where)


def medxpertqa_label(record: Record, options: dict[str, str], where: str) -> str:
    value = record.get("label")
    if isinstance(value, list):  # the GitHub release wraps the letter in a list: ["C"]
        if len(value) != 1:
            raise BenchmarkDataError(f"{where}: field 'label' must hold exactly one letter, got {value!r}")
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: field 'label' must be an option letter, got {value!r}")
    return check_letter(value, options, where, "label")


def medxpertqa_item(record: Record, where: str) -> tuple[str, dict[str, str], str]:
    """(question without the inline choices, options, gold letter) of either layout's record."""
    options = medxpertqa_options(record, where)
    answer = medxpertqa_label(record, options, where)
    return strip_inline_choices(get_str(record, "question", where)), options, answer


def medxpertqa_file(folder: Path, subset: str) -> Path:
    return first_existing(folder, MEDXPERTQA_FILES[subset])


def medxpertqa_images(record: Record, folder: Path, where: str) -> list[PendingImage]:
    images = []
    for entry in get_list(record, "images", where):
        name = entry.get("image_path") if isinstance(entry, dict) else entry  # GitHub: {"image_path": name}
        if not isinstance(name, str) or not name:
            raise BenchmarkDataError(f"{where}: every entry of 'images' must be a file name or {{image_path}}")
        images.append(PendingImage(record_image(name, folder / "images", folder, where)))
    return images


def medxpertqa_record(record: Record, where: str, folder: Path) -> PendingItem:
    question, options, answer = medxpertqa_item(record, where)
    item_id = get_str(record, "id", where)
    images = medxpertqa_images(record, folder, where)
    if not images:
        raise BenchmarkDataError(f"{where}: multimodal item {item_id!r} lists no images")
    meta = {k: record.get(k) for k in ("medical_task", "body_system", "question_type") if k in record}
    return PendingItem(item_id, question, options, answer, images, None, {**meta, "source_id": item_id})


def load_medxpertqa_mm(folder: Path) -> list[Sample]:
    path = medxpertqa_file(folder, "MM")
    return finish("medxpertqa_mm", [medxpertqa_record(r, w, folder) for w, r in iter_records(path)])


# ---------------------------------------------------------------------------------------------------
# SLAKE (closed questions, English and Chinese; see the module docstring)

SLAKE_LANGUAGES = ("en", "zh")
SLAKE_ANSWER_TYPES = ("CLOSED", "OPEN")
SLAKE_OPTIONS = {"languages": ("en", "zh"), "answer_types": ("CLOSED",)}  # 416 + 420 = Table 3's 836

# A yes/no answer is shown as its pair, affirmative first ("A. Yes / B. No"). Chinese answers with the
# question's own verb (包含/不包含, 有/没有, ...), so each verb keeps its pair; both answers of a pair get
# the same options, so the options never hint at the gold.
POLAR_PAIRS = (("Yes", "No"), ("是的", "不是"), ("是", "否"), ("有", "没有"), ("包含", "不包含"),
               ("可以", "不可以"), ("存在", "不存在"), ("正常", "不正常"), ("健康", "不健康"))

EN_OR = re.compile(r"(?:,\s*|\s+)or\s+", re.I)  # "X or Y", "X, or Y"
QUESTION_WORDS = frozenset("which what where who how is are was were does do did can".split())
# "Is this (a) small bowel or colon": after a demonstrative subject, all the rest is the left alternative
DEMONSTRATIVE_SUBJECT = re.compile(r"^(?:is|are|was|were)\s+(?:this|that|it|these|those)\s+(?:(?:a|an|the)\s+)?(.+)$",
                                   re.I)
LEADING_ARTICLE = re.compile(r"^(?:the|an?)\s+", re.I)

ZH_OR = re.compile(r"还是|或者|或")
ZH_AND_WHICH = re.compile(r"[和与](?=[^和与]*[哪谁])")  # 和 names alternatives only in a "which" question
# the last alternative ends where the question goes on: "心脏哪个是异常的", "T2加权的核磁共振图像", "灰色的"
ZH_RIGHT_END = re.compile(r"[哪谁的,，]")
# the first starts after the last comma or 是: "扫描的是图像的哪个平面,横断面", "这是T1加权", "脑肿瘤是白色的"
ZH_LEFT_START = re.compile(r"^.*[,，是]")
ZH_LOCATIVE = re.compile(r"^在?(?:这个|这张|这幅)?(?:图像|图片|图)中")  # "in the image": "图中肺", "在这个图像中左肺"


def normalize(text: str) -> str:
    text = re.sub(r"[^\w\s/-]", " ", text.lower())
    words = [w for w in text.split() if w not in ("the", "a", "an")]
    return " ".join(words)


def starts_with_word(text: str, prefix: str) -> bool:
    """``prefix`` opens ``text`` and is not cut from a longer Latin word ("t2" opens "t2 weighted", "t2加权")."""
    return re.match(rf"{re.escape(prefix)}(?![a-z0-9])", text) is not None


def polar_options(answer: str) -> tuple[dict[str, str], str] | None:
    """The yes/no pair of a polar answer and its letter, or None for any other answer."""
    for pair in POLAR_PAIRS:
        for letter, word in zip("AB", pair):
            if normalize(answer) == normalize(word):
                return dict(zip("AB", pair)), letter
    return None


def is_question_stem(piece: str) -> bool:
    return any(word in QUESTION_WORDS for word in piece.lower().split())


def clause_alternatives(clause: str, right: str) -> list[str]:
    """Both alternatives of 'Is <subject> X or Y ...' where no comma sets X off from the question."""
    words, right_words = clause.split(), right.split()
    shared = [w.lower() for w in right_words[1:]]
    if words and words[-1].lower() in shared:  # "T1 weighted or T2 weighted MRI image": the shared word ends Y
        right_words = right_words[: shared.index(words[-1].lower()) + 2]
    subject = DEMONSTRATIVE_SUBJECT.match(clause)
    # "Is the abnormality hyperdense or hypodense": X is as long as Y
    left = subject.group(1) if subject else " ".join(words[max(0, len(words) - len(right_words)):])
    return [left, " ".join(right_words)]


def english_alternatives(body: str) -> list[str] | None:
    """'..., lung, liver or heart' -> [lung, liver, heart]; None when the question has no 'or'."""
    joints = list(EN_OR.finditer(body))
    if not joints:
        return None
    left, right = body[: joints[-1].start()], body[joints[-1].end():].split(",")[0]
    right = LEADING_ARTICLE.sub("", right.strip())
    pieces = [piece.strip() for piece in left.split(",")]
    listed: list[str] = []
    for piece in reversed(pieces):  # the comma-separated alternatives end at the question's own words
        if is_question_stem(piece):
            break
        if piece:
            listed.insert(0, LEADING_ARTICLE.sub("", piece))
    return listed + [right] if listed else clause_alternatives(pieces[-1], right)


def chinese_alternatives(body: str) -> list[str] | None:
    """'核磁共振、CT还是X光' -> [核磁共振, CT, X光]; None when the question names no alternatives."""
    joints = list(ZH_OR.finditer(body)) or list(ZH_AND_WHICH.finditer(body))
    if not joints:
        return None
    left, right = body[: joints[-1].start()], body[joints[-1].end():]
    listed = ZH_LEFT_START.sub("", left).split("、")
    return [ZH_LOCATIVE.sub("", piece).strip().removesuffix("的") for piece in listed] + \
        [ZH_RIGHT_END.split(right, maxsplit=1)[0].strip()]


def question_alternatives(question: str, language: str) -> list[str] | None:
    body = question.strip().rstrip("?？").strip()
    return chinese_alternatives(body) if language == "zh" else english_alternatives(body)


def gold_alternative(answer: str, alternatives: list[str]) -> int | None:
    """Index of the alternative the gold answer names ("T2" names "T2 weighted"), None if none or several."""
    target, keys = normalize(answer), [normalize(a) for a in alternatives]
    if target in keys:
        return keys.index(target)
    prefixed = [i for i, key in enumerate(keys) if starts_with_word(key, target)]
    return prefixed[0] if len(prefixed) == 1 else None


def names(question: str, answer: str) -> bool:
    """Whether the question mentions the answer (as whole words where they are Latin)."""
    return re.search(rf"(?<![a-z0-9]){re.escape(normalize(answer))}(?![a-z0-9])", normalize(question)) is not None


def alternative_options(question: str, answer: str, alternatives: list[str],
                        where: str) -> tuple[dict[str, str], str, str]:
    keys = [normalize(a) for a in alternatives]
    if "" in keys or len(set(keys)) < len(keys):
        raise BenchmarkDataError(f"{where}: cannot tell apart the alternatives {alternatives} of {question!r}")
    # first letter up, the rest as the question writes it: taking the gold's own casing would mark it
    texts = [a[:1].upper() + a[1:] for a in alternatives]
    gold = gold_alternative(answer, alternatives)
    if gold is not None:
        return lettered(texts, where), LETTERS[gold], "question"
    if names(question, answer):
        raise BenchmarkDataError(f"{where}: the answer {answer!r} is named in {question!r} but is none of the "
                                 f"alternatives {alternatives} read from it")
    # the annotation names what the question does not offer ("kidney or spleen?" -> "Liver"): the item
    # stays in (Table 3 counts it) with the annotated answer as the last option
    return lettered(texts + [answer], where), LETTERS[len(texts)], "question+answer"


def pool_key(record: Record) -> tuple[str, str]:
    return str(record.get("q_lang")), str(record.get("content_type"))


def answer_pool(records: list[tuple[str, Record]]) -> dict[tuple[str, str], list[str]]:
    """The distinct non-polar answers per language and content_type, sorted: distractors for the rest."""
    pool: dict[tuple[str, str], list[str]] = {}
    for where, record in records:
        answer = get_str(record, "answer", where)
        bucket = pool.setdefault(pool_key(record), [])
        if polar_options(answer) is None and normalize(answer) not in {normalize(a) for a in bucket}:
            bucket.append(answer)
    return {key: sorted(bucket, key=str.lower) for key, bucket in pool.items()}


def pool_options(record: Record, answer: str, where: str,
                 pool: dict[tuple[str, str], list[str]]) -> tuple[dict[str, str], str, str]:
    others = [a for a in pool.get(pool_key(record), []) if normalize(a) != normalize(answer)]
    if not others:
        raise BenchmarkDataError(f"{where}: closed question with answer {answer!r} offers no alternative in the "
                                 "question and no other closed answer of its language and content_type to use as "
                                 "distractor")
    distractor = others[stable_int("slake", record.get("qid"), answer) % len(others)]
    texts = sorted([answer, distractor], key=str.lower)
    return {"A": texts[0], "B": texts[1]}, "AB"[texts.index(answer)], "answer_pool"


def slake_options(record: Record, where: str,
                  pool: dict[tuple[str, str], list[str]]) -> tuple[dict[str, str], str, str]:
    """Options, gold letter and how the options were built (see the module docstring)."""
    answer = get_str(record, "answer", where)
    polar = polar_options(answer)
    if polar is not None:
        return *polar, "yes_no"
    question = get_str(record, "question", where)
    alternatives = question_alternatives(question, get_str(record, "q_lang", where))
    if alternatives is not None:
        return alternative_options(question, answer, alternatives, where)
    return pool_options(record, answer, where, pool)


def selection(value: Any, option: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """A loader option naming a subset of ``known`` (a list arrives from JSON, a bare string is one value)."""
    values = (value,) if isinstance(value, str) else tuple(value)
    if not values or not set(values) <= set(known):
        raise ValueError(f"slake option {option!r} must name some of {known}, got {value!r}")
    return values


def load_slake(folder: Path, *, languages: Any, answer_types: Any) -> list[Sample]:
    languages = selection(languages, "languages", SLAKE_LANGUAGES)
    answer_types = selection(answer_types, "answer_types", SLAKE_ANSWER_TYPES)
    kept = [(where, record) for where, record in iter_records(folder / "test.json")
            if get_str(record, "q_lang", where) in languages
            and get_str(record, "answer_type", where).upper() in answer_types]
    pool = answer_pool(kept)
    pending = []
    for where, record in kept:
        options, answer, how = slake_options(record, where, pool)
        qid = get_str(record, "qid", where)
        image = record_image(get_str(record, "img_name", where), folder / "imgs", folder, where)
        meta = {"options_source": how, "answer_text": get_str(record, "answer", where), "source_id": qid,
                **{k: record.get(k) for k in ("q_lang", "img_name", "content_type", "modality", "location")
                   if k in record}}
        pending.append(PendingItem(f"slake-{qid}", get_str(record, "question", where), options, answer,
                                   [PendingImage(image)], None, meta))
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
    """The gold letter of a text that starts with it ("B", "(B)", "B. Femur"); a non-string is refused
    rather than str()-ed (a bare 1 or True names no option)."""
    match = re.match(r"^\(?([A-J])\b", value.strip()) if isinstance(value, str) else None
    if not match:
        raise BenchmarkDataError(f"{where}: field {key!r} must be an option letter, got {value!r}")
    return check_letter(match.group(1), options, where, key)


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
        item_id = optional_id(record, "question_id", where, f"row{i:05d}")
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


vqa_benchmark("medxpertqa_mm", "MedXQA (multimodal)", "TsinghuaC3I/MedXpertQA (MM; HF or GitHub layout)", "test",
              2000, "medxpertqa", (" | ".join(MEDXPERTQA_FILES["MM"]), "images/<file>"), load_medxpertqa_mm)
vqa_benchmark("slake", "SLAKE (English)", "BoKelvin/SLAKE", "test (CLOSED, English + Chinese)", 836, "slake",
              ("test.json", "imgs/<img_name>"), load_slake,
              "Table 3's 836 are test.json's closed questions in English and Chinese (416 + 420) although the "
              "paper labels SLAKE 'English'; the default options (languages en+zh, answer_types CLOSED) select "
              "them, so a different count means other options (languages=('en',) gives 416), a subset or a "
              "fixture", options=SLAKE_OPTIONS)
vqa_benchmark("medframeqa", "MedFrameQA", "SuhaoYu1020/MedFrameQA", "test", 2851, "medframeqa",
              ("test.parquet | test.jsonl | data/test-*.parquet",), load_medframeqa)
vqa_benchmark("mmmu_med", "MMMU-Med (dev)", "MMMU/MMMU (5 medical subjects)", "dev+validation", 175, "mmmu",
              tuple(f"{s}/{{dev,validation}}-*.parquet" for s in MEDICAL_SUBJECTS), load_mmmu_med,
              "only multiple-choice questions are kept (open questions dropped), or a subset")
vqa_benchmark("mmmu_pro_med_4", "MMMU-Med-Pro (4 opt)", "MMMU/MMMU_Pro standard (4 options)", "test", 286, "mmmu_pro",
              ("standard (4 options)/test-*.parquet",), mmmu_pro_loader(4))
vqa_benchmark("mmmu_pro_med_10", "MMMU-Med-Pro (10 opt)", "MMMU/MMMU_Pro standard (10 options)", "test", 286,
              "mmmu_pro", ("standard (10 options)/test-*.parquet",), mmmu_pro_loader(10))
