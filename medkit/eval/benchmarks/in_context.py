"""Table 6: in-context benchmarks, each 0-shot and 1-shot.

Patient-trial matching (strict MC accuracy). Native layout per cohort, as in TrialGPT's ``dataset/``::

    data_root/patient_trial/<cohort>/retrieved_trials.json   TrialGPT's matching input, a JSON list:
        {"patient_id": "trec-20211", "patient": "<patient note>",
         "0": [trial, ...], "1": [...], "2": [...]}      trials grouped by qrels grade (a missing grade: none)
        trial = {"NCTID", "brief_title", "diseases_list", "drugs_list", "brief_summary",
                 "inclusion_criteria", "exclusion_criteria", ...}

or, for a cohort without that file, the judged pairs of the TREC/BEIR release::

    data_root/patient_trial/<cohort>/queries.jsonl    {"_id": "trec-20211", "text": "<patient note>"}
    data_root/patient_trial/<cohort>/qrels/test.tsv   header query-id, corpus-id, score; score in {0, 1, 2}
    data_root/patient_trial/<cohort>/corpus.jsonl     {"_id": "NCT...", "title": ..., "text": ...,
        "metadata": {the trial fields above but NCTID, ...}}

with ``<cohort>`` among ``sigir``, ``trec_2021``, ``trec_2022`` (every one present is used; at least one
is required). The paper pairs each patient with the *retrieved* candidate trials that have a qrels grade,
which is what ``retrieved_trials.json`` holds (Table 3: 4,936 pairs); the fallback turns every judged
pair into an item (75,061 over the three cohorts), a larger set than the paper's, and the count note
says so. Each item meta's ``pairs_from`` names the file its pair came from. Grade 2/1/0 -> eligible /
partially eligible / not eligible. The patient note is split into sentences numbered ``0. ...`` (see
:func:`sentences`); the trial is rendered as title, target diseases, interventions, summary and cleaned
inclusion/exclusion criteria (headers, bullets, numbering and fragments under 3 characters removed). The
four fixed options are shuffled per pair by ``random.Random(stable_int("patient-trial-options", pair
key))``; 0- and 1-shot show the same order. A qrels row whose patient or trial is absent, or a trial
listed twice for one patient, is an error (no silent drops).

Impression generation (RaTEScore): ``data_root/mimic_cxr/impression_test.json`` (JSON list) or
``.jsonl``, one study per record: {"study_id", "subject_id"?, "images": [...], "views"?, "age"?, "sex"?,
"indication"?, "impression"}; image paths relative to ``mimic_cxr/``. As in the paper, studies with a
missing/empty impression or an unavailable image file are excluded (not errors); malformed fields, an
image path leading out of the data root and an image whose header is unreadable or over the pixel limit
are errors. Table 3 lists 1,564 studies.

1-shot: one exemplar is drawn per item under a fixed seed (``stable_int(<task>-exemplar, item key)``)
from a pool that never contains the item's own patient: natively another patient's pair *of the same
cohort* (so adding or removing a cohort never changes another cohort's prompts) or another subject's
study for impressions, synthetically the corpus's train split. The pool keeps only label-valid entries
(one of the three eligibility labels; a non-empty impression). The exemplar comes first as a
user/assistant turn pair, then the query. Exemplar images precede the query's images.

Synthetic counterparts: 0- and 1-shot variants of a task share the same items by design (the point of
the pair is comparing the same queries with and without a demonstration).
"""

from __future__ import annotations

import csv
import io
import random
import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from medkit.data.schema import Sample
from medkit.eval.benchmarks import synthetic as syn
from medkit.eval.benchmarks.base import (
    Benchmark,
    NativeItems,
    BenchmarkDataError,
    MissingBenchmarkFile,
    Record,
    expect_object,
    get_str,
    iter_records,
    read_json,
    read_text,
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
RETRIEVED_FILE = "retrieved_trials.json"
QRELS_FILE = "qrels/test.tsv"
TRIAL_LABELS = {2: "eligible", 1: "partially eligible", 0: "not eligible"}
TRIAL_OPTIONS = ("eligible", "partially eligible", "not eligible", "not enough information")
LETTERS = "ABCD"


# ---------------------------------------------------------------------------------------------------
# Rendering patients and trials

# A sentence ends at . ! or ? followed by whitespace and a capital, a digit, a bracket or a quote. A
# regex, not nltk's punkt (TrialGPT's splitter): nltk is not a dependency and punkt needs a data download.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
# "1. Rare migraines" / "(2) HTN" / "a. ..." at the start of a line: an enumerator, not a sentence end
LIST_MARKER = re.compile(r"^\(?(?:\d{1,3}|[A-Za-z])[.)]\s+")


def line_sentences(line: str) -> list[str]:
    """The sentences of one line; a leading list enumerator stays with the text it numbers."""
    line = " ".join(line.split())
    marker = LIST_MARKER.match(line)
    head = marker.group(0) if marker else ""
    parts = [s.strip() for s in SENTENCE_END.split(line[len(head):]) if s.strip()]
    return [head + parts[0], *parts[1:]] if parts else []


def sentences(note: str) -> list[str]:
    """Lines first, then sentences within each line.

    In the released notes a line break ends a paragraph, a list item ("1. Rare migraines") or a lab
    value (one of the 184 notes of the three cohorts wraps mid-sentence). Flattening the lines first, as
    before, ran sentences across line breaks in 28 notes and split numbered lists as "History: 1." /
    "Rare migraines 2.". Enumerators in the middle of a line ("History: 1. HTN 2. Gout") still split.
    TrialGPT's own numbering (nltk's sent_tokenize on the raw note) does not split at line breaks either.
    """
    return [s for line in note.splitlines() for s in line_sentences(line)]


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
        raise BenchmarkDataError(f"{where}: field {key!r} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def trial_from_fields(trial_id: str, fields: Record, where: str, title_fallback: Any = None) -> Trial:
    """A trial from TrialGPT's fields (a retrieved_trials.json trial, or a corpus record's metadata)."""
    title = fields.get("brief_title") or title_fallback or ""
    if not isinstance(title, str):  # str() would render a list or number as the title
        raise BenchmarkDataError(f"{where}: trial {trial_id!r}: 'brief_title' must be a string, got {title!r}")
    title = title.strip()
    if not title:
        raise BenchmarkDataError(f"{where}: trial {trial_id!r} has no brief_title")
    for key in ("inclusion_criteria", "exclusion_criteria", "brief_summary"):
        if fields.get(key) is not None and not isinstance(fields.get(key), str):
            raise BenchmarkDataError(f"{where}: field {key!r} must be a string")
    return Trial(trial_id, title, str_list(fields.get("diseases_list"), "diseases_list", where),
                 str_list(fields.get("drugs_list"), "drugs_list", where),
                 " ".join((fields.get("brief_summary") or "").split()),
                 tuple(clean_criteria(fields.get("inclusion_criteria") or "")),
                 tuple(clean_criteria(fields.get("exclusion_criteria") or "")))


def trial_from_corpus_record(record: Record, where: str) -> Trial:
    meta = record.get("metadata")
    if not isinstance(meta, dict):
        raise BenchmarkDataError(f"{where}: 'metadata' must be an object")
    return trial_from_fields(get_str(record, "_id", where), meta, where, title_fallback=record.get("title"))


@dataclass(frozen=True)
class TrialPair:
    """One graded patient-trial pair; ``key`` is stable across 0-/1-shot and seeds its option order."""

    key: str
    cohort: str
    patient_id: str
    note: str
    trial: Trial
    label: str
    pairs_from: str = ""  # native pairs: the file read, relative to the cohort folder

    def options(self) -> dict[str, str]:
        order = random.Random(stable_int("patient-trial-options", self.key)).sample(TRIAL_OPTIONS, len(TRIAL_OPTIONS))
        return {LETTERS[i]: text for i, text in enumerate(order)}

    def answer(self) -> str:
        return next(letter for letter, text in self.options().items() if text == self.label)

    def user_turn(self) -> dict[str, Any]:
        context = f"Patient note:\n{numbered_note(self.note)}\n\nClinical trial:\n{self.trial.render()}"
        return mc_user_turn(TRIAL_QUESTION, self.options(), context=context)


# ---------------------------------------------------------------------------------------------------
# 1-shot exemplars

Entry = TypeVar("Entry")


class ExemplarPool(Generic[Entry]):
    """Exemplar candidates indexed once by group (the patient), so a draw costs O(log n), not a scan.

    A draw for item ``key`` of group ``group`` is uniform, under ``random.Random(stable_int(f"{task}-
    exemplar", key))``, over the pool's entries of *other* groups in pool order: the pick depends only on
    the item and this pool, never on what else is loaded.
    """

    def __init__(self, entries: Sequence[Entry], group_of: Callable[[Entry], str], task: str, where: str):
        self.entries = list(entries)
        self.task, self.where = task, where
        positions: dict[str, list[int]] = {}
        for position, entry in enumerate(self.entries):
            positions.setdefault(group_of(entry), []).append(position)
        # for the i-th entry of a group, at position p, p - i entries of other groups come before it
        self.others_before = {group: [p - i for i, p in enumerate(ps)] for group, ps in positions.items()}

    def draw(self, key: str, group: str) -> Entry:
        own = self.others_before.get(group, [])
        candidates = len(self.entries) - len(own)
        if candidates == 0:
            raise BenchmarkDataError(f"{self.where}: no 1-shot exemplar for item {key!r}: all {len(self.entries)} "
                                     f"entries of the pool belong to its own patient {group!r}")
        nth = random.Random(stable_int(f"{self.task}-exemplar", key)).randrange(candidates)
        # the nth entry outside the item's group: skip the own-group entries that precede it
        return self.entries[nth + bisect_right(own, nth)]


def trial_samples(benchmark: str, pairs: list[TrialPair], shots: int, pools: Mapping[str, ExemplarPool[TrialPair]],
                  extra_meta: Callable[[TrialPair], dict[str, Any]]) -> list[Sample]:
    """Items in ``pairs`` order; a 1-shot item's exemplar comes from ``pools[pair.cohort]``."""
    samples = []
    for pair in pairs:
        meta = {"benchmark": benchmark, "answer": pair.answer(), "options": pair.options(), "label": pair.label,
                "trial_id": pair.trial.trial_id, "patient_id": pair.patient_id, **extra_meta(pair)}
        if shots == 0:
            messages = [{"role": "system", "content": SYSTEM_TRIALS}, pair.user_turn()]
        else:
            shot = pools[pair.cohort].draw(pair.key, pair.patient_id)
            messages = with_exemplar(SYSTEM_TRIALS, shot.user_turn(), shot.answer(), pair.user_turn())
            meta.update(exemplar_key=shot.key, exemplar_label=shot.label, exemplar_answer=shot.answer())
        samples.append(Sample(f"{benchmark}-{pair.key}", messages, [], meta))
    return samples


def trial_pool(pairs: Sequence[TrialPair], where: str) -> ExemplarPool[TrialPair]:
    valid = [p for p in pairs if p.label in TRIAL_LABELS.values()]
    return ExemplarPool(valid, lambda p: p.patient_id, "patient-trial", where)


def cohort_pools(pairs: list[TrialPair], folder: Path) -> dict[str, ExemplarPool[TrialPair]]:
    """One exemplar pool per cohort, so an item's exemplar never depends on the other cohorts."""
    by_cohort: dict[str, list[TrialPair]] = {}
    for pair in pairs:
        by_cohort.setdefault(pair.cohort, []).append(pair)
    return {cohort: trial_pool(members, str(folder / cohort)) for cohort, members in by_cohort.items()}


# ---------------------------------------------------------------------------------------------------
# Native patient-trial pairs: TrialGPT's retrieved candidates, or every judged pair


def make_pair(cohort: str, patient: str, note: str, trial: Trial, grade: int, pairs_from: str) -> TrialPair:
    return TrialPair(f"{cohort}-{patient}-{trial.trial_id}", cohort, f"{cohort}/{patient}", note, trial,
                     TRIAL_LABELS[grade], pairs_from)


def retrieved_patient_pairs(entry: Record, patient: str, where: str, cohort: str) -> list[TrialPair]:
    """One retrieved_trials.json entry: its trials under grades "2", "1", "0" (a missing grade has none)."""
    note = get_str(entry, "patient", where)
    pairs, seen = [], set()
    for grade in sorted(TRIAL_LABELS, reverse=True):
        trials = entry.get(str(grade), [])
        if not isinstance(trials, list):
            raise BenchmarkDataError(f"{where} (patient {patient!r}): grade {grade} must be a list of trials")
        for j, trial in enumerate(trials):
            trial_where = f"{where} (patient {patient!r}) grade {grade} trial {j}"
            trial = expect_object(trial, trial_where)
            nct = get_str(trial, "NCTID", trial_where)
            if nct in seen:
                raise BenchmarkDataError(f"{trial_where}: trial {nct!r} is listed twice for patient {patient!r}")
            seen.add(nct)
            pairs.append(make_pair(cohort, patient, note, trial_from_fields(nct, trial, trial_where), grade,
                                   RETRIEVED_FILE))
    return pairs


def retrieved_pairs(path: Path, cohort: str) -> list[TrialPair]:
    body = read_json(path)
    if not isinstance(body, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of patients")
    pairs, patients = [], set()
    for i, entry in enumerate(body):
        where = f"{path} item {i}"
        entry = expect_object(entry, where)
        patient = get_str(entry, "patient_id", where)
        if patient in patients:
            raise BenchmarkDataError(f"{where}: patient {patient!r} is listed twice")
        patients.add(patient)
        pairs += retrieved_patient_pairs(entry, patient, where, cohort)
    return pairs


def read_qrels(path: Path) -> list[tuple[str, str, int, str]]:
    rows = []
    # read_text: a byte that is not UTF-8 is an error naming the line, not a bare codec error
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t")
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


def judged_pairs(folder: Path, cohort: str) -> list[TrialPair]:
    """Every qrels-judged pair of a cohort: the fallback when retrieved_trials.json is absent."""
    queries_path, corpus_path, qrels_path = folder / "queries.jsonl", folder / "corpus.jsonl", folder / QRELS_FILE
    notes = {get_str(r, "_id", w): get_str(r, "text", w) for w, r in iter_records(require_file(queries_path))}
    trials = {t.trial_id: t for t in (trial_from_corpus_record(r, w)
                                      for w, r in iter_records(require_file(corpus_path)))}
    pairs = []
    for qid, nct, score, where in read_qrels(qrels_path):
        if qid not in notes:
            raise BenchmarkDataError(f"{where}: patient {qid!r} is not in {queries_path}")
        if nct not in trials:
            raise BenchmarkDataError(f"{where}: trial {nct!r} is not in {corpus_path}")
        pairs.append(make_pair(cohort, qid, notes[qid], trials[nct], score, QRELS_FILE))
    return pairs


def cohort_pairs(folder: Path, cohort: str) -> list[TrialPair]:
    retrieved = folder / RETRIEVED_FILE
    if retrieved.is_file():
        return retrieved_pairs(retrieved, cohort)
    if not (folder / "queries.jsonl").is_file():  # neither layout: name both, not just the fallback's file
        raise MissingBenchmarkFile(f"{folder}: expected {RETRIEVED_FILE} (TrialGPT's matching input), or "
                                   f"queries.jsonl, {QRELS_FILE} and corpus.jsonl (every judged pair)")
    return judged_pairs(folder, cohort)


def pairs_read(pairs: Sequence[TrialPair]) -> str:
    """Which file each cohort's pairs came from, for the count note (the fallback is not the paper's set)."""
    files: dict[str, set[str]] = {}
    for pair in pairs:
        files.setdefault(pair.cohort, set()).add(pair.pairs_from)
    parts = []
    for cohort, names in files.items():
        count = sum(p.cohort == cohort for p in pairs)
        source = "retrieved candidates" if names == {RETRIEVED_FILE} else "all judged pairs, not the paper's set"
        parts.append(f"{cohort}: {count:,} from {' + '.join(sorted(names))} ({source})")
    return "; ".join(parts)


def native_trial_loader(shots: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"patient_trial_{shots}shot"

    def load(folder: Path) -> list[Sample]:
        present = [c for c in COHORTS if (folder / c).is_dir()]
        if not present:
            raise MissingBenchmarkFile(f"expected at least one cohort folder among "
                                       f"{', '.join(str(folder / c) for c in COHORTS)}")
        pairs = [p for cohort in present for p in cohort_pairs(folder / cohort, cohort)]
        pools = cohort_pools(pairs, folder) if shots else {}
        samples = trial_samples(benchmark, pairs, shots, pools,
                                lambda p: {"cohort": p.cohort, "pairs_from": p.pairs_from})
        return NativeItems(samples, pairs_read(pairs))

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
    return TrialPair(sample.id, syn.SOURCE, sample.id, note.group(1), trial, sample.meta["label"])


def synthetic_trial_loader(shots: int) -> Callable[[Path], list[Sample]]:
    benchmark = f"patient_trial_{shots}shot"

    def load(corpus_dir: Path) -> list[Sample]:
        items = syn.family_subset(syn.corpus_items(corpus_dir, "trial", "eval"), "patient_trial", ("patient_trial",))
        pools = {}
        if shots:
            train = [synthetic_pair(s) for s in syn.corpus_items(corpus_dir, "trial", "train")]
            pools = {syn.SOURCE: trial_pool(train, f"{corpus_dir} (train split)")}
        return trial_samples(benchmark, [synthetic_pair(s) for s in items], shots, pools,
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
                       pool: Sequence[ImpressionStudy], extra_meta: dict[str, Any], where: str) -> list[Sample]:
    exemplars = ExemplarPool([s for s in pool if s.impression.strip()], lambda s: s.patient_key, "impression", where)
    samples = []
    for study in studies:
        meta = {"benchmark": benchmark, "answer": study.impression, "study_key": study.key, **extra_meta}
        if shots == 0:
            messages = [{"role": "system", "content": SYSTEM_RADIOLOGY}, study.user_turn()]
            images = list(study.images)
        else:
            shot = exemplars.draw(study.key, study.patient_key)
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
        return impression_samples(benchmark, studies, shots, studies, {}, str(folder))

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
                                  pool if shots else [], {"source": syn.SOURCE}, f"{corpus_dir} (train split)")

    return load


# base.count_note adds this fixed text to any count other than 4,936; it cannot see which files a load
# read, so it states the rule, and each item's meta "pairs_from" records the file actually used
TRIAL_COUNT_EXPLANATION = (
    f"pairs come from each cohort's {RETRIEVED_FILE} (TrialGPT's retrieved candidate trials with a qrels "
    f"grade, the paper's set); a cohort without that file falls back to all its judged pairs (queries.jsonl + "
    f"{QRELS_FILE} + corpus.jsonl: 75,061 over the three cohorts, a larger set than Table 3's, so counts "
    f"and accuracy differ from the paper; items' meta pairs_from says which file each pair came from); "
    f"only the cohorts present are used, or a subset")

for _shots in (0, 1):
    register(Benchmark(
        name=f"patient_trial_{_shots}shot", title=f"Patient-trial ({_shots}-shot)", table="6", kind="mc",
        source="SIGIR 2016 + TREC CT 2021/2022: TrialGPT retrieved_trials.json (else qrels + corpus.jsonl)",
        split="test (retrieved candidate trials with a qrels grade)", expected_count=4936, data_dir=TRIAL_DIR,
        native_files=tuple(f"{c}/{RETRIEVED_FILE} | {c}/{{queries.jsonl,corpus.jsonl,{QRELS_FILE}}}"
                           for c in COHORTS),
        native=native_trial_loader(_shots), synthetic=synthetic_trial_loader(_shots), scorer="strict_mc",
        shots=_shots, count_explanation=TRIAL_COUNT_EXPLANATION,
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
