"""Figure 2: MIMIC-CXR multi-view and longitudinal report generation (RadGraph-F1, RaTEScore, 1/RadCliQ).

MIMIC-CXR is credentialed (PhysioNet), so there is no single public file to mirror; medkit defines one
input format close to common derived releases (one record per test study, priors inlined):

``data_root/mimic_cxr/report_test.json`` (a JSON list) or ``report_test.jsonl`` (one study a line)::

    {"study_id": "s5xxxxxxx",                     # required, unique
     "subject_id": "p1xxxxxxx",                   # optional (used to keep 1-shot exemplars off the patient)
     "images": ["files/p10/.../view1.jpg", ...],  # required, current study, relative to mimic_cxr/
     "views": ["PA", "LATERAL"],                  # optional, one per image
     "age": 67, "sex": "female", "indication": "...",   # optional metadata
     "priors": [{"study_id": "...", "images": [...], "views": [...],
                 "months_ago": 7 | "study_date": "2150-03-02"}],     # optional, most recent last
     "findings": "...", "impression": "..."}        # required, non-empty

The reference is ``FINDINGS: <findings>\\n\\nIMPRESSION: <impression>`` (the synthetic corpus's layout).
Every image must exist (a missing one is an error naming the path), resolve inside the data root (an
absolute path or "../" leading out of it, or a symlink that does, is an error) and have a readable header
within the pixel limit. Table 3 lists 2,231 studies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from medkit.data.schema import Sample
from medkit.eval.benchmarks import synthetic as syn
from medkit.eval.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    Record,
    contained_path,
    first_existing,
    get_list,
    get_str,
    is_int,
    iter_records,
    readable_image,
    register,
)
from medkit.eval.benchmarks.prompts import PatientInfo, PriorStudy, report_messages, report_reference

MIMIC_DIR = "mimic_cxr"


@dataclass
class Study:
    """One chest radiograph study as read from the MIMIC-CXR input file."""

    study_id: str
    subject_id: str | None
    images: list[str]
    views: list[str] | None
    patient: PatientInfo | None
    where: str
    priors: list["Study"] = field(default_factory=list)
    when: str = ""
    texts: dict[str, str] = field(default_factory=dict)


def optional_str(record: Record, key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) and not is_int(value):  # MIMIC's subject ids are integers; True is not one
        raise BenchmarkDataError(f"{where}: field {key!r} must be a string, got {value!r} ({type(value).__name__})")
    return str(value).strip()


def patient_of(record: Record, where: str) -> PatientInfo | None:
    age = record.get("age")
    # whole years: int() would silently truncate 67.9, and MIMIC's anchor_age is an integer
    if age is not None and not is_int(age):
        raise BenchmarkDataError(f"{where}: field 'age' must be a whole number of years, got {age!r}")
    info = PatientInfo(age, optional_str(record, "sex", where),
                       optional_str(record, "indication", where))
    return info if info.line() else None


def image_paths(record: Record, folder: Path, where: str, *, must_exist: bool = True) -> list[str] | None:
    """Absolute image paths, each inside the data root with a readable header; None when an image is
    missing and ``must_exist`` is False. A path leading out of the data root is an error either way."""
    names = get_list(record, "images", where)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise BenchmarkDataError(f"{where}: 'images' must be a non-empty list of paths")
    paths = [contained_path(n, folder, folder, where) for n in names]
    if not must_exist and not all(p.is_file() for p in paths):
        return None
    return [str(readable_image(p, where)) for p in paths]


def views_of(record: Record, n_images: int, where: str) -> list[str] | None:
    views = record.get("views")
    if views is None:
        return None
    if not isinstance(views, list) or len(views) != n_images or not all(isinstance(v, str) for v in views):
        raise BenchmarkDataError(f"{where}: 'views' must list one view name per image")
    return views


def prior_when(record: Record, where: str) -> str:
    months = record.get("months_ago")
    if months is not None:
        if not isinstance(months, int) or isinstance(months, bool) or months < 0:
            raise BenchmarkDataError(f"{where}: 'months_ago' must be a non-negative integer")
        return f"{months} months earlier"
    date = optional_str(record, "study_date", where)
    return f"dated {date}" if date else "earlier"


def read_study(record: Record, where: str, folder: Path, text_fields: tuple[str, ...],
               *, must_exist: bool = True) -> Study | None:
    images = image_paths(record, folder, where, must_exist=must_exist)
    if images is None:
        return None
    texts = {}
    for key in text_fields:
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            if must_exist:
                raise BenchmarkDataError(f"{where}: field {key!r} must be a non-empty string")
            return None
        texts[key] = value.strip()
    return Study(get_str(record, "study_id", where), optional_str(record, "subject_id", where), images,
                 views_of(record, len(images), where), patient_of(record, where), where, texts=texts)


def read_priors(record: Record, where: str, folder: Path) -> list[Study]:
    priors = record.get("priors") or []
    if not isinstance(priors, list):
        raise BenchmarkDataError(f"{where}: 'priors' must be a list of studies")
    studies = []
    for k, prior in enumerate(priors):
        prior_where = f"{where} prior {k}"
        if not isinstance(prior, dict):
            raise BenchmarkDataError(f"{prior_where}: expected an object")
        study = read_study(prior, prior_where, folder, ())
        study.when = prior_when(prior, prior_where)
        studies.append(study)
    return studies


def iter_study_records(folder: Path, stem: str) -> Iterator[tuple[str, Record]]:
    yield from iter_records(first_existing(folder, (f"{stem}.json", f"{stem}.jsonl")))


def report_sample(benchmark: str, item_id: str, study: Study, reference: str, **meta: Any) -> Sample:
    priors = [PriorStudy(len(p.images), p.when) for p in study.priors]
    messages = report_messages(len(study.images), priors, patient=study.patient, views=study.views)
    images = [*study.images, *(path for p in study.priors for path in p.images)]
    return Sample(f"{benchmark}-{item_id}", messages, images,
                  {"benchmark": benchmark, "answer": reference, "n_current_images": len(study.images),
                   "n_priors": len(study.priors), "views": study.views, **meta})


def load_mimic_cxr_report(folder: Path) -> list[Sample]:
    samples = []
    for where, record in iter_study_records(folder, "report_test"):
        study = read_study(record, where, folder, ("findings", "impression"))
        study.priors = read_priors(record, where, folder)
        reference = report_reference(study.texts["findings"], study.texts["impression"])
        samples.append(report_sample("mimic_cxr_report", study.study_id, study, reference, study_id=study.study_id,
                                     subject_id=study.subject_id, findings=study.texts["findings"],
                                     impression=study.texts["impression"]))
    return samples


# ---------------------------------------------------------------------------------------------------
# Synthetic counterpart: report_long (longitudinal, multi-view) and report (multi-view) eval items


def synthetic_study(sample: Any, corpus_dir: Path) -> Study:
    images = syn.absolute_images(sample, corpus_dir)
    views = list(sample.meta.get("views") or [])
    priors_meta = sample.meta.get("priors") or []
    n_current = len(views)
    study = Study(sample.id, None, images[:n_current], views, syn.patient_info(sample), sample.id)
    offset = n_current
    for prior in priors_meta:
        n = len(prior["views"])
        study.priors.append(Study(f"{sample.id}-prior", None, images[offset:offset + n], prior["views"], None,
                                  sample.id, when=f"{prior['months_ago']} months earlier"))
        offset += n
    if offset != len(images):
        raise BenchmarkDataError(f"synthetic item {sample.id}: views and priors account for {offset} of "
                                 f"{len(images)} images")
    return study


def load_synthetic_report(corpus_dir: Path) -> list[Sample]:
    pool = [*syn.corpus_items(corpus_dir, "report_long", "eval"), *syn.corpus_items(corpus_dir, "report", "eval")]
    samples = []
    for sample in syn.family_subset(pool, "mimic_cxr_report", ("mimic_cxr_report",)):
        study = synthetic_study(sample, corpus_dir)
        meta = syn.base_meta("mimic_cxr_report", sample, sample.meta["answer"], change=sample.meta.get("change"))
        meta.pop("benchmark"), meta.pop("answer")
        samples.append(report_sample("mimic_cxr_report", sample.id, study, sample.meta["answer"], **meta))
    return samples


register(Benchmark(
    name="mimic_cxr_report", title="MIMIC-CXR (multi-view & longitudinal)", table="figure2", kind="report",
    source="MIMIC-CXR (PhysioNet, credentialed); medkit study JSON", split="test", expected_count=2231,
    data_dir=MIMIC_DIR, native_files=("report_test.json | report_test.jsonl", "<image paths listed there>"),
    native=load_mimic_cxr_report, synthetic=load_synthetic_report, scorer="report_metrics",
))
