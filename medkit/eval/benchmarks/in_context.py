"""Table 6: in-context benchmarks, each 0-shot and 1-shot.

Patient-trial matching (strict MC accuracy), native layout per cohort, TrialGPT style::

    data_root/patient_trial/<cohort>/queries.jsonl    {"_id": "trec-20211", "text": "<patient note>"}
    data_root/patient_trial/<cohort>/qrels/test.tsv   header query-id, corpus-id, score; score in {0, 1, 2}
    data_root/patient_trial/<cohort>/corpus.jsonl     {"_id": "NCT...", "title": ..., "text": ...,
        "metadata": {"brief_title", "diseases_list", "drugs_list", "brief_summary",
                     "inclusion_criteria", "exclusion_criteria", ...}}

with ``<cohort>`` among ``sigir``, ``trec_2021``, ``trec_2022`` (every one present is used; at least one
is required). Every judged pair becomes one item: score 2/1/0 -> eligible / partially eligible / not
eligible. The patient note is split into sentences numbered ``0. ...``; the trial is rendered as title,
target diseases, interventions, summary and cleaned inclusion/exclusion criteria (headers, bullets,
numbering and fragments under 3 characters removed). The four fixed options are shuffled per pair by
``random.Random(stable_int("patient-trial-options", pair key))``; 0- and 1-shot show the same order.
A qrels row whose patient or trial is absent is an error (no silent drops). Table 3 lists 4,936 pairs.

Impression generation (RaTEScore): ``data_root/mimic_cxr/impression_test.json`` (JSON list) or
``.jsonl``, one study per record: {"study_id", "subject_id"?, "images": [...], "views"?, "age"?, "sex"?,
"indication"?, "impression"}; image paths relative to ``mimic_cxr/``. As in the paper, studies with a
missing/empty impression or an unavailable image file are excluded (not errors); malformed fields are
errors. Table 3 lists 1,564 studies.

1-shot: one exemplar is drawn per item under a fixed seed (``stable_int(<task>-exemplar, item key)``)
from a pool that never contains the item: natively the other items of another patient (qrels query
id, or subject_id / study_id for impressions), synthetically the corpus's train split. The exemplar is
label-valid (one of the three eligibility labels; a non-empty impression) and comes first as a
user/assistant turn pair, then the query. Exemplar images precede the query's images.

Synthetic counterparts: 0- and 1-shot variants of a task share the same items by design (the point of
the pair is comparing the same queries with and without a demonstration).
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from medkit.data.schema import Sample
from medkit.eval.benchmarks import synthetic as syn
from medkit.eval.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    MissingBenchmarkFile,
    Record,
    get_str,
    iter_records,
    register,
    require_file,
    stable_int,
)
from medkit.eval.benchmarks.prompts import (
    SYSTEM_RADIOLOGY,
    SYSTEM_TRIALS,
    TRIAL_QUESTION,
    PatientInfo,
    impression_user_turn,
    mc_user_turn,
    with_exemplar,
)
from medkit.eval.benchmarks.reports import MIMIC_DIR, iter_study_records, read_study

TRIAL_DIR = "patient_trial"
COHORTS = ("sigir", "trec_2021", "trec_2022")
TRIAL_LABELS = {2: "eligible", 1: "partially eligible", 0: "not eligible"}
TRIAL_OPTIONS = ("eligible", "partially eligible", "not eligible", "not enough information")
LETTERS = "ABCD"


# ---------------------------------------------------------------------------------------------------
# Rendering patients and trials

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def sentences(note: str) -> list[str]:
    # Released notes wrap lines mid-sentence, so line breaks are whitespace, not boundaries.
    return [s.strip() for s in SENTENCE_END.split(" ".join(note.split())) if s.strip()]


def numbered_note(note: str) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(sentences(note)))


CRITERIA_HEADER = re.compile(r"^(?:key\s+)?(?:inclusion|exclusion)(?:\s+criteria)?\s*:?\s*", re.I)
BULLET = re.compile(r"^(?:[-*\u2022\u00b7o]\s+|[-*\u2022\u00b7]+|\(?\d+[.)](?=\s|$)\s*|\(?[a-zA-Z]\)\s*|[a-zA-Z]\.\s+)")
MIN_CRITERION_CHARS = 3


def clean_criteria(text: str) -> list[str]:
    """Criteria one per entry: headers, bullet/number prefixes, blank lines and fragments removed."""
    cleaned = []
    for raw in (text or "").splitlines():
        line = CRITERIA_HEADER.sub("", raw.strip()).strip()
        previous = None
        while line != previous:  # prefixes may nest, e.g. "1. - criterion"
            previous, line = line, BULLET.sub("", line).strip()
        if len(re.sub(r"\W", "", line)) >= MIN_CRITERION_CHARS:
            cleaned.append(line)
    return cleaned


@dataclass(frozen=True)
class Trial:
    trial_id: str
    title: str
    diseases: tuple[str, ...]
    interventions: tuple[str, ...]
    summary: str
    inclusion: tuple[str, ...]
    exclusion: tuple[str, ...]

    def render(self) -> str:
        lines = [f"Title: {self.title}"]
        if self.diseases:
            lines.append(f"Target diseases: {', '.join(self.diseases)}")
        if self.interventions:
            lines.append(f"Interventions: {', '.join(self.interventions)}")
        if self.summary:
            lines.append(f"Summary: {self.summary}")
        lines += ["Inclusion criteria:", *self.inclusion] if self.inclusion else []
        lines += ["Exclusion criteria:", *self.exclusion] if self.exclusion else []
        return "\n".join(lines)


def str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchmarkDataError(f"{where}: metadata field {key!r} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def trial_from_record(record: Record, where: str) -> Trial:
    meta = record.get("metadata")
    if not isinstance(meta, dict):
        raise BenchmarkDataError(f"{where}: 'metadata' must be an object")
    title = str(meta.get("brief_title") or record.get("title") or "").strip()
    if not title:
        raise BenchmarkDataError(f"{where}: trial has neither metadata.brief_title nor title")
    for key in ("inclusion_criteria", "exclusion_criteria", "brief_summary"):
        if meta.get(key) is not None and not isinstance(meta.get(key), str):
            raise BenchmarkDataError(f"{where}: metadata field {key!r} must be a string")
    return Trial(get_str(record, "_id", where), title, str_list(meta.get("diseases_list"), "diseases_list", where),
                 str_list(meta.get("drugs_list"), "drugs_list", where),
                 " ".join((meta.get("brief_summary") or "").split()),
                 tuple(clean_criteria(meta.get("inclusion_criteria") or "")),
                 tuple(clean_criteria(meta.get("exclusion_criteria") or "")))


@dataclass(frozen=True)
class TrialPair:
    """One judged patient-trial pair; ``key`` is stable across 0-/1-shot and seeds its option order."""

    key: str
    patient_id: str
    note: str
    trial: Trial
    label: str

    def options(self) -> dict[str, str]:
        order = random.Random(stable_int("patient-trial-options", self.key)).sample(TRIAL_OPTIONS, len(TRIAL_OPTIONS))
        return {LETTERS[i]: text for i, text in enumerate(order)}

    def answer(self) -> str:
        return next(letter for letter, text in self.options().items() if text == self.label)

    def user_turn(self) -> dict[str, Any]:
        context = f"Patient note:\n{numbered_note(self.note)}\n\nClinical trial:\n{self.trial.render()}"
        return mc_user_turn(TRIAL_QUESTION, self.options(), context=context)


def pick_exemplar(key: str, pool: Sequence[Any], usable: Callable[[Any], bool], task: str) -> Any:
    """A seeded draw from ``pool`` among the entries ``usable`` accepts (never the item itself)."""
    candidates = [entry for entry in pool if usable(entry)]
    if not candidates:
        raise BenchmarkDataError(f"{task}: no valid 1-shot exemplar for item {key!r} (pool of {len(pool)})")
    return candidates[random.Random(stable_int(f"{task}-exemplar", key)).randrange(len(candidates))]


def trial_samples(benchmark: str, pairs: list[TrialPair], shots: int, exemplar_pool: Sequence[TrialPair],
                  extra_meta: Callable[[TrialPair], dict[str, Any]]) -> list[Sample]:
    samples = []
    for pair in pairs:
        meta = {"benchmark": benchmark, "answer": pair.answer(), "options": pair.options(), "label": pair.label,
                "trial_id": pair.trial.trial_id, "patient_id": pair.patient_id, **extra_meta(pair)}
        if shots == 0:
            messages = [{"role": "system", "content": SYSTEM_TRIALS}, pair.user_turn()]
        else:
            shot = pick_exemplar(pair.key, exemplar_pool, lambda e: e.patient_id != pair.patient_id
                                 and e.key != pair.key and e.label in TRIAL_LABELS.values(), "patient-trial")
            messages = with_exemplar(SYSTEM_TRIALS, shot.user_turn(), shot.answer(), pair.user_turn())
            meta.update(exemplar_key=shot.key, exemplar_label=shot.label, exemplar_answer=shot.answer())
        samples.append(Sample(f"{benchmark}-{pair.key}", messages, [], meta))
    return samples


# ---------------------------------------------------------------------------------------------------
# Native patient-trial pairs


def read_qrels(path: Path) -> list[tuple[str, str, int, str]]:
    require_file(path)
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for line_no, row in enumerate(reader, start=1):
            where = f"{path} line {line_no}"
            if not row or not "".join(row).strip():
                continue
            if line_no == 1 and row[0].strip().lower() == "query-id":
                continue
            if len(row) != 3:
                raise BenchmarkDataError(f"{where}: expected 3 tab-separated fields (query-id, corpus-id, score)")
            qid, nct, score = (c.strip() for c in row)
            if score not in ("0", "1", "2") or not qid or not nct:
                raise BenchmarkDataError(f"{where}: score must be 0, 1 or 2 and ids non-empty, got {row!r}")
            rows.append((qid, nct, int(score), where))
    return rows


def cohort_pairs(folder: Path, cohort: str) -> list[TrialPair]:
    queries_path, corpus_path = folder / "queries.jsonl", folder / "corpus.jsonl"
    qrels_path = folder / "qrels" / "test.tsv"
    notes = {get_str(r, "_id", w): get_str(r, "text", w) for w, r in iter_records(require_file(queries_path))}
    trials = {t.trial_id: t for t in (trial_from_record(r, w) for w, r in iter_records(require_file(corpus_path)))}
    pairs = []
    for qid, nct, score, where in read_qrels(qrels_path):
        if qid not in notes:
            raise BenchmarkDataError(f"{where}: patient {qid!r} is not in {queries_path}")
        if nct not in trials:
            raise BenchmarkDataError(f"{where}: trial {nct!r} is not in {corpus_path}")
        pairs.append(TrialPair(f"{cohort}-{qid}-{nct}", f"{cohort}/{qid}", notes[qid], trials[nct],
                               TRIAL_LABELS[score]))
    return pairs


def native_trial_loader(shots: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"patient_trial_{shots}shot"

    def load(folder: Path) -> list[Sample]:
        present = [c for c in COHORTS if (folder / c).is_dir()]
        if not present:
            raise MissingBenchmarkFile(f"expected at least one cohort folder among "
                                       f"{', '.join(str(folder / c) for c in COHORTS)}")
        pairs = [p for cohort in present for p in cohort_pairs(folder / cohort, cohort)]
        return trial_samples(benchmark, pairs, shots, pairs, lambda p: {"cohort": p.key.split("-", 1)[0]})

    return load


# ---------------------------------------------------------------------------------------------------
# Synthetic patient-trial pairs

SYNTH_NOTE = re.compile(r"Patient note:\n(.*?)\n\nClinical trial:", re.S)
SYNTH_DRUG = re.compile(r"study of (\S+) in")


def synthetic_pair(sample: Sample) -> TrialPair:
    _, text = syn.image_captions_and_text(sample)
    note = SYNTH_NOTE.search(text)
    if not note:
        raise BenchmarkDataError(f"synthetic item {sample.id}: no patient note in the prompt")
    info = sample.meta["trial"]
    drug = SYNTH_DRUG.search(info["title"])
    trial = Trial(f"{sample.id}-trial", info["title"], (info["condition"],), (drug.group(1),) if drug else (), "",
                  tuple(c["text"] for c in info["inclusion"]), tuple(c["text"] for c in info["exclusion"]))
    return TrialPair(sample.id, sample.id, note.group(1), trial, sample.meta["label"])


def synthetic_trial_loader(shots: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"patient_trial_{shots}shot"

    def load(corpus_dir: Path) -> list[Sample]:
        items = syn.family_subset(syn.corpus_items(corpus_dir, "trial", "eval"), "patient_trial", ("patient_trial",))
        pool = [synthetic_pair(s) for s in syn.corpus_items(corpus_dir, "trial", "train")] if shots else []
        return trial_samples(benchmark, [synthetic_pair(s) for s in items], shots, pool,
                             lambda p: {"source": syn.SOURCE, "source_id": p.key})

    return load


# ---------------------------------------------------------------------------------------------------
# Impression generation


@dataclass(frozen=True)
class ImpressionStudy:
    key: str
    patient_key: str
    images: tuple[str, ...]
    views: tuple[str, ...] | None
    patient: PatientInfo | None
    impression: str

    def user_turn(self) -> dict[str, Any]:
        return impression_user_turn(len(self.images), patient=self.patient, views=self.views)


def impression_samples(benchmark: str, studies: list[ImpressionStudy], shots: int,
                       pool: Sequence[ImpressionStudy], extra_meta: dict[str, Any]) -> list[Sample]:
    samples = []
    for study in studies:
        meta = {"benchmark": benchmark, "answer": study.impression, "study_key": study.key, **extra_meta}
        if shots == 0:
            messages = [{"role": "system", "content": SYSTEM_RADIOLOGY}, study.user_turn()]
            images = list(study.images)
        else:
            shot = pick_exemplar(study.key, pool, lambda e: e.patient_key != study.patient_key
                                 and e.key != study.key and bool(e.impression.strip()), "impression")
            messages = with_exemplar(SYSTEM_RADIOLOGY, shot.user_turn(), shot.impression, study.user_turn())
            images = [*shot.images, *study.images]
            meta.update(exemplar_key=shot.key, n_exemplar_images=len(shot.images))
        samples.append(Sample(f"{benchmark}-{study.key}", messages, images, meta))
    return samples


def native_impression_studies(folder: Path) -> list[ImpressionStudy]:
    studies = []
    for where, record in iter_study_records(folder, "impression_test"):
        study = read_study(record, where, folder, ("impression",), must_exist=False)
        if study is None:  # the paper excludes missing impressions and unavailable images
            continue
        studies.append(ImpressionStudy(study.study_id, study.subject_id or study.study_id, tuple(study.images),
                                       tuple(study.views) if study.views else None, study.patient,
                                       study.texts["impression"]))
    return studies


def native_impression_loader(shots: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"impression_{shots}shot"

    def load(folder: Path) -> list[Sample]:
        studies = native_impression_studies(folder)
        return impression_samples(benchmark, studies, shots, studies, {})

    return load


def synthetic_impression(sample: Sample, corpus_dir: Path) -> ImpressionStudy:
    views = sample.meta.get("views")
    return ImpressionStudy(sample.id, sample.id, tuple(syn.absolute_images(sample, corpus_dir)),
                           tuple(views) if views else None, syn.patient_info(sample), sample.meta["answer"])


def synthetic_impression_loader(shots: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"impression_{shots}shot"

    def load(corpus_dir: Path) -> list[Sample]:
        items = syn.family_subset(syn.corpus_items(corpus_dir, "impression", "eval"), "impression", ("impression",))
        pool = [synthetic_impression(s, corpus_dir) for s in syn.corpus_items(corpus_dir, "impression", "train")]
        return impression_samples(benchmark, [synthetic_impression(s, corpus_dir) for s in items], shots,
                                  pool if shots else [], {"source": syn.SOURCE})

    return load


for _shots in (0, 1):
    register(Benchmark(
        name=f"patient_trial_{_shots}shot", title=f"Patient-trial ({_shots}-shot)", table="6", kind="mc",
        source="SIGIR 2016 + TREC CT 2021/2022 qrels, TrialGPT corpus.jsonl", split="test (judged pairs)",
        expected_count=4936, data_dir=TRIAL_DIR,
        native_files=tuple(f"{c}/{{queries.jsonl,corpus.jsonl,qrels/test.tsv}}" for c in COHORTS),
        native=native_trial_loader(_shots), synthetic=synthetic_trial_loader(_shots), scorer="strict_mc",
        shots=_shots, count_explanation="only the cohorts present are used, or a subset",
    ))
for _shots in (0, 1):
    register(Benchmark(
        name=f"impression_{_shots}shot", title=f"Impression ({_shots}-shot)", table="6", kind="impression",
        source="MIMIC-CXR (PhysioNet, credentialed); medkit study JSON", split="test", expected_count=1564,
        data_dir=MIMIC_DIR, native_files=("impression_test.json | impression_test.jsonl", "<image paths listed there>"),
        native=native_impression_loader(_shots), synthetic=synthetic_impression_loader(_shots), scorer="ratescore",
        shots=_shots,
        count_explanation="studies without an impression or with a missing image are excluded, or a subset",
    ))
