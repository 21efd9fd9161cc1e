"""Table 5: text-only multiple-choice medical QA benchmarks (strict exact-match accuracy).

Native layouts (``data_root/<data_dir>/...``):

| benchmark        | data_dir   | files                                                                         | count |
|------------------|------------|-------------------------------------------------------------------------------|-------|
| medqa            | medqa      | ``test.jsonl`` or ``test.parquet`` or ``data/test-*.parquet`` {question, options{A..D}, answer_idx} | 1,273 |
| medmcqa          | medmcqa    | ``validation.jsonl`` / ``validation.parquet`` / ``data/validation-*.parquet`` (HF: ``cop`` 0-based) or the original ``dev.json`` (JSON lines, ``cop`` 1-based) {question, opa..opd, cop} | 4,183 |
| pubmedqa         | pubmedqa   | ``ori_pqal.json`` {PMID: {QUESTION, CONTEXTS, LABELS, ...}} + ``test_ground_truth.json`` {PMID: yes/no/maybe} | 500 |
| mmlu_med         | mmlu       | ``<subject>/test-*.parquet`` or ``<subject>/test.jsonl`` for the 7 subjects {question, choices[4], answer 0-based} | 1,395 |
| medxpertqa_text  | medxpertqa | HF: ``Text/test.jsonl`` {id, question, options{A..J}, label "A"}; or GitHub: ``input/medxpertqa_text_input.jsonl`` (or ``medxpertqa_text_input.jsonl``) {id, question with "Answer Choices: (A) ...", options [{letter, content}], label ["A"]} | 2,450 |
| medbullets       | medbullets | ``medbullets_op4.csv`` {question, opa..opd, answer_idx A-D, ...} or, with ``n_options=5``, ``medbullets_op5.csv`` (adds ``ope``, answer_idx A-E) | 298 |

PubMedQA: the 500 PMIDs of ``test_ground_truth.json`` in file order; options A. yes, B. no, C. maybe;
context = each CONTEXTS paragraph prefixed by its LABELS entry (``BACKGROUND: ...``), one per line.
MedXpertQA: the first layout present is read (HF before GitHub); the GitHub release's options may be a
list of {letter, content}, an object, or only inline after "Answer Choices:" in the question, which is
cut from the question either way (see ``vqa``).
Medbullets: option ``n_options`` (4, the default of public harnesses, or 5) picks ``medbullets_op4.csv``
or ``medbullets_op5.csv``. Each public CSV (HanjieChen/ChallengeClinicalQA) has 308 rows of which 10
repeat an earlier question stem (op4: 4 copies differing only in ``link``, 6 with other distractors;
op5: 10 copies with the same options): a repeat is the same question asked twice, so only its first
row is kept, and 308 - 10 = 298 = Table 3 for either file. Item ids stay the 0-based row numbers; a
kept item's ``dropped_repeat_rows`` lists the rows of its dropped repeats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from medkit.data.schema import Sample
from medkit.eval.benchmarks import synthetic as syn
from medkit.eval.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    NativeItems,
    Record,
    check_letter,
    first_existing,
    get_list,
    get_str,
    iter_jsonl,
    iter_records,
    letter_from_index,
    lettered,
    option_text,
    optional_id,
    read_json,
    register,
    require_file,
)
from medkit.eval.benchmarks.prompts import SYSTEM_TEXT_QA, mc_messages
from medkit.eval.benchmarks.vqa import MEDXPERTQA_FILES, medxpertqa_file, medxpertqa_item, options_dict

TEXT_BENCHMARKS = ("medqa", "medmcqa", "pubmedqa", "mmlu_med", "medxpertqa_text", "medbullets")
MMLU_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                 "nutrition", "professional_medicine")
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}
MEDBULLETS_COLUMNS = {4: "abcd", 5: "abcde"}  # n_options -> option columns op<x> of medbullets_op<n>.csv


def text_sample(benchmark: str, item_id: str, question: str, options: dict[str, str], answer: str,
                context: str | None = None, **meta: Any) -> Sample:
    messages = mc_messages(question, options, system=SYSTEM_TEXT_QA, context=context)
    return Sample(f"{benchmark}-{item_id}", messages, [], {"benchmark": benchmark, "answer": answer,
                                                          "options": options, "source_id": item_id, **meta})


def column_options(record: Record, where: str, columns: str) -> dict[str, str]:
    texts = []
    for column in columns:
        key = f"op{column}"
        if record.get(key) in (None, ""):
            raise BenchmarkDataError(f"{where}: option column {key!r} is missing or empty")
        texts.append(option_text(record[key], where, key))
    return lettered(texts, where)


def load_medqa(folder: Path) -> list[Sample]:
    path = first_existing(folder, ("test.jsonl", "test.parquet", "data/test-*.parquet"))
    samples = []
    for i, (where, record) in enumerate(iter_records(path)):
        options = options_dict(record.get("options"), where)
        answer = check_letter(record.get("answer_idx"), options, where, "answer_idx")
        samples.append(text_sample("medqa", f"{i:05d}", get_str(record, "question", where), options, answer,
                                   meta_info=record.get("meta_info")))
    return samples


def load_medmcqa(folder: Path) -> list[Sample]:
    path = first_existing(folder, ("validation.jsonl", "validation.parquet", "data/validation-*.parquet", "dev.json"))
    # The original release's dev.json is JSON lines with a 1-based cop; the HF copy's cop is 0-based.
    records = iter_jsonl(path) if path.name == "dev.json" else iter_records(path)
    first = 1 if path.name == "dev.json" else 0
    samples = []
    for i, (where, record) in enumerate(records):
        options = column_options(record, where, "abcd")
        answer = letter_from_index(record.get("cop"), options, where, "cop", first=first)
        item_id = optional_id(record, "id", where, f"{i:05d}")
        samples.append(text_sample("medmcqa", item_id, get_str(record, "question", where), options, answer,
                                   subject=record.get("subject_name"), choice_type=record.get("choice_type")))
    return samples


def pubmedqa_context(record: Record, where: str) -> str:
    contexts = get_list(record, "CONTEXTS", where)
    labels = record.get("LABELS") or [""] * len(contexts)
    if not isinstance(labels, list) or len(labels) != len(contexts):
        raise BenchmarkDataError(f"{where}: LABELS must list one label per CONTEXTS paragraph")
    if not contexts or not all(isinstance(c, str) and c.strip() for c in contexts):
        raise BenchmarkDataError(f"{where}: CONTEXTS must be a non-empty list of paragraphs")
    if not all(isinstance(label, str) for label in labels):
        raise BenchmarkDataError(f"{where}: LABELS must be strings")
    return "\n".join(f"{label.strip()}: {text.strip()}" if label.strip() else text.strip()
                     for label, text in zip(labels, contexts))


def load_pubmedqa(folder: Path) -> list[Sample]:
    pqal_path, truth_path = folder / "ori_pqal.json", folder / "test_ground_truth.json"
    pqal, truth = read_json(require_file(pqal_path)), read_json(require_file(truth_path))
    if not isinstance(pqal, dict) or not isinstance(truth, dict):
        raise BenchmarkDataError(f"{pqal_path} and {truth_path} must each hold a JSON object keyed by PMID")
    letter_of = {text: letter for letter, text in PUBMEDQA_OPTIONS.items()}
    samples = []
    for pmid, decision in truth.items():
        where = f"{pqal_path} key {pmid!r}"
        if not isinstance(decision, str) or decision not in letter_of:  # a list or object is no decision
            raise BenchmarkDataError(f"{truth_path} key {pmid!r}: decision must be yes/no/maybe, got {decision!r}")
        record = pqal.get(pmid)
        if not isinstance(record, dict):
            raise BenchmarkDataError(f"{where}: test PMID missing from ori_pqal.json (or not an object)")
        samples.append(text_sample("pubmedqa", pmid, get_str(record, "QUESTION", where), dict(PUBMEDQA_OPTIONS),
                                   letter_of[decision], context=pubmedqa_context(record, where),
                                   year=record.get("YEAR")))
    return samples


def load_mmlu_med(folder: Path) -> list[Sample]:
    samples = []
    for subject in MMLU_SUBJECTS:
        path = first_existing(folder / subject, ("test-*.parquet", "test.parquet", "test.jsonl"))
        for i, (where, record) in enumerate(iter_records(path)):
            choices = get_list(record, "choices", where)
            options = lettered([option_text(c, where, f"choices[{k}]") for k, c in enumerate(choices)], where)
            answer = letter_from_index(record.get("answer"), options, where, "answer")
            samples.append(text_sample("mmlu_med", f"{subject}-{i:04d}", get_str(record, "question", where),
                                       options, answer, subject=subject))
    return samples


def load_medxpertqa_text(folder: Path) -> list[Sample]:
    samples = []
    for where, record in iter_records(medxpertqa_file(folder, "Text")):
        question, options, answer = medxpertqa_item(record, where)
        samples.append(text_sample("medxpertqa_text", get_str(record, "id", where), question, options, answer,
                                   **{k: record.get(k) for k in ("medical_task", "body_system", "question_type")}))
    return samples


def first_rows_by_stem(path: Path) -> Iterator[tuple[int, str, Record, list[int]]]:
    """(row, location, record, rows repeating its stem) for the first row of each question stem: a repeat
    asks the same question again (10 of the public CSVs' 308 rows; Table 3 counts 298)."""
    first: dict[str, tuple[int, str, Record, list[int]]] = {}
    for row, (where, record) in enumerate(iter_records(path)):
        stem = get_str(record, "question", where)
        if stem in first:
            first[stem][3].append(row)
        else:
            first[stem] = (row, where, record, [])
    yield from first.values()


def load_medbullets(folder: Path, *, n_options: int) -> list[Sample]:
    if n_options not in MEDBULLETS_COLUMNS:
        raise ValueError(f"medbullets option 'n_options' must be one of {sorted(MEDBULLETS_COLUMNS)}, "
                         f"got {n_options!r}")
    samples = []
    path = folder / f"medbullets_op{n_options}.csv"
    for row, where, record, repeats in first_rows_by_stem(path):
        options = column_options(record, where, MEDBULLETS_COLUMNS[n_options])
        answer = check_letter(record.get("answer_idx"), options, where, "answer_idx")
        samples.append(text_sample("medbullets", f"{row:04d}", get_str(record, "question", where), options, answer,
                                   link=record.get("link"), dropped_repeat_rows=repeats))
    dropped = sum(len(s.meta["dropped_repeat_rows"]) for s in samples)
    return NativeItems(samples, f"{path.name}: {len(samples) + dropped} rows, {dropped} repeating an earlier "
                                f"question stem dropped")


# ---------------------------------------------------------------------------------------------------
# Synthetic counterparts


def synthetic_text_pool(corpus_dir: Path) -> Iterator[Sample]:
    yield from syn.corpus_items(corpus_dir, "text_mc", "eval")
    yield from (s for s in syn.corpus_items(corpus_dir, "reasoning", "eval") if s.meta.get("source_task") == "text_mc")


def synthetic_text_loader(benchmark: str) -> Callable[[Path], list[Sample]]:
    def load(corpus_dir: Path) -> list[Sample]:
        samples = []
        for sample in syn.family_subset(list(synthetic_text_pool(corpus_dir)), benchmark, TEXT_BENCHMARKS):
            options = dict(sample.meta["options"])
            _, text = syn.image_captions_and_text(sample)
            *case, question = syn.split_mc_text(text, options, sample.id).split("\n")
            messages = mc_messages(question, options, system=SYSTEM_TEXT_QA, context="\n".join(case) or None)
            meta = syn.base_meta(benchmark, sample, sample.meta["answer"], options=options,
                                 question_type=sample.meta.get("question_type"))
            samples.append(Sample(f"{benchmark}-{sample.id}", messages, [], meta))
        return samples

    return load


def text_benchmark(name: str, title: str, source: str, split: str, count: int, data_dir: str,
                   files: tuple[str, ...], native: Callable[..., list[Sample]], explanation: str = "",
                   options: dict | None = None) -> Benchmark:
    return register(Benchmark(name=name, title=title, table="5", kind="mc", source=source, split=split,
                              expected_count=count, data_dir=data_dir, native_files=files, native=native,
                              synthetic=synthetic_text_loader(name), scorer="strict_mc", count_explanation=explanation,
                              options=options or {}))


text_benchmark("medqa", "MedQA", "GBaker/MedQA-USMLE-4-options", "test", 1273, "medqa",
               ("test.jsonl | test.parquet | data/test-*.parquet",), load_medqa)
text_benchmark("medmcqa", "MedMCQA", "openlifescienceai/medmcqa", "validation", 4183, "medmcqa",
               ("validation.jsonl | validation.parquet | data/validation-*.parquet | dev.json",), load_medmcqa)
text_benchmark("pubmedqa", "PubMedQA", "PubMedQA PQA-L (ori_pqal.json + test_ground_truth.json)", "test", 500,
               "pubmedqa", ("ori_pqal.json", "test_ground_truth.json"), load_pubmedqa)
text_benchmark("mmlu_med", "MMLU-Med", "cais/mmlu (7 medical subjects)", "test", 1395, "mmlu",
               tuple(f"{s}/test-*.parquet" for s in MMLU_SUBJECTS), load_mmlu_med)
text_benchmark("medxpertqa_text", "MedXQA (text)", "TsinghuaC3I/MedXpertQA (Text; HF or GitHub layout)", "test", 2450,
               "medxpertqa", (" | ".join(MEDXPERTQA_FILES["Text"]),), load_medxpertqa_text)
text_benchmark("medbullets", "Medbullets", "HanjieChen/ChallengeClinicalQA medbullets_op4.csv (or op5)", "test", 298,
               "medbullets", ("medbullets_op4.csv | medbullets_op5.csv (n_options=5)",), load_medbullets,
               "each public CSV (op4, op5) has 308 rows, 10 of which repeat an earlier question stem; repeats are "
               "dropped (first row kept), 308 - 10 = 298, so a different count means a subset or a fixture",
               options={"n_options": 4})
