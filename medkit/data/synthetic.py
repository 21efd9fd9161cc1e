"""The seeded synthetic corpus: eight tasks of medical conversations over procedural images.

Owns what each task asks and answers (invented clinical language whose ground truth is fixed by the
drawn images or by a deterministic rule), per-item determinism, the train/eval split, and writing
``images/*.png`` + ``<task>.jsonl`` + ``manifest.json`` into a folder in one atomic step.

Determinism: item ``index`` of ``task`` draws all its randomness from ``SeedSequence((seed, task, index,
stream))``, stream 0 for text and labels and stream 1+k for image k, so an item never depends on
generation order and the texts can be produced without drawing any image. Answer letters and trial
labels are exactly balanced within blocks of 60 items.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import uuid
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from medkit.data.procedural import (
    CT_ORGANS,
    LATERALIZED_FINDINGS,
    TISSUES,
    XRAY_FINDINGS,
    ZONED_FINDINGS,
    Label,
    render,
)
from medkit.data.schema import validate_sample

TASKS = ("caption", "report_long", "vqa_mc", "text_mc", "reasoning", "report", "trial", "impression")
# Sized so that every benchmark counterpart gets at least 100 held-out items (MAX_ITEMS in
# medkit.eval.benchmarks.synthetic): text_mc and vqa_mc are each shared by 6 benchmarks, whose
# hash-split shares of the 720 held-out items are 101-133; reports, trials and impressions feed one each.
# trial has 2,600 (520 held out, the counterpart reads 100): the language-model stand-in needs its 2,080
# training conversations to learn the eligibility rule (medkit/configs/profiles/tiny.yaml).
DEFAULT_SIZES = {
    "caption": 240,
    "report_long": 320,
    "vqa_mc": 3600,
    "text_mc": 3600,
    "reasoning": 80,
    "report": 200,
    "trial": 2600,
    "impression": 520,
}
# A smoke run's corpus (notebooks with MEDKIT_SMOKE=1): a tenth of each task, still a few held-out items
# per benchmark counterpart.
SMOKE_SIZES = {task: max(10, n // 10) for task, n in DEFAULT_SIZES.items()}
LETTERS = "ABCDE"
EVAL_EVERY = 5  # every 5th item is held out: an exact 80/20 split present in any task of >= 5 items
BALANCE_BLOCK = 60  # divisible by 3, 4 and 5, so 3-way labels and 4/5-way letters balance exactly
MANIFEST_NAME = "manifest.json"

Message = dict[str, Any]


class CorpusExistsError(ValueError):
    """The output folder already holds files and overwriting was not asked for."""


# ---------------------------------------------------------------------------------------------------
# Per-item determinism


def task_key(task: str) -> int:
    """A stable integer for a task name (Python's hash() is salted per process)."""
    return zlib.crc32(task.encode("utf-8"))


@dataclass(frozen=True)
class ItemContext:
    """Where one item sits in the corpus; everything random about it derives from these three numbers."""

    seed: int
    task: str
    index: int

    @property
    def item_id(self) -> str:
        return f"synth-{self.task}-{self.index:06d}"

    @property
    def split(self) -> str:
        return "eval" if self.index % EVAL_EVERY == EVAL_EVERY - 1 else "train"

    def rng(self, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, task_key(self.task), self.index, stream]))

    def balanced_slot(self, n: int, salt: int) -> int:
        """A slot in 0..n-1 that looks random per item but is exactly balanced within each block of items."""
        block = self.index // BALANCE_BLOCK
        order = np.random.default_rng(np.random.SeedSequence([self.seed, task_key(self.task), block, 1000 + salt]))
        return int(order.permutation(BALANCE_BLOCK)[self.index % BALANCE_BLOCK]) % n


@dataclass
class ItemPlan:
    """One item before its images are drawn: the conversation, its meta and a label per image."""

    messages: list[Message]
    meta: dict[str, Any]
    image_labels: list[Label] = field(default_factory=list)


def pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------
# Multiple choice


def arrange_options(
    ctx: ItemContext, rng: np.random.Generator, correct: str, distractors: Sequence[str], n: int
) -> tuple[dict[str, str], str]:
    """``n`` lettered options holding ``correct`` exactly once, at a balanced slot, other options shuffled."""
    pool = list(dict.fromkeys(d for d in distractors if d != correct))
    if len(pool) < n - 1:
        raise ValueError(f"{ctx.item_id}: need {n - 1} distinct distractors, have {len(pool)}")
    chosen = [pool[i] for i in rng.permutation(len(pool))[: n - 1]]
    slot = ctx.balanced_slot(n, salt=0)
    texts = chosen[:slot] + [correct] + chosen[slot:]
    return {LETTERS[i]: text for i, text in enumerate(texts)}, LETTERS[slot]


def mc_reply(options: dict[str, str], answer: str) -> str:
    """The assistant's reply to a multiple-choice item: the correct option's text, which the strict
    scorer reads as that option (``medkit.eval.scoring``, rule 4: an output that is exactly one option's
    text), not its letter.

    Why not the letter: looking a letter up from the option that holds a known answer is a skill a
    pretrained LLM brings, and the toy model, trained from random weights for minutes, does not acquire it.
    Measured on this corpus (benchmarks/README.md, "What the toy model learns"): the tiny model names the
    right option text on every held-out text_mc item after 300 steps, but picks letters at chance after
    4,000 steps, and after 1,000 even with the answer's text stated in the prompt."""
    return options[answer]


def mc_prompt(question: str, options: dict[str, str]) -> str:
    listed = "\n".join(f"{letter}. {text}" for letter, text in options.items())
    return f"{question}\n{listed}\nAnswer with the letter of the correct option only."


def image_parts(n: int) -> list[dict[str, str]]:
    return [{"type": "image"} for _ in range(n)]


def text_part(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


SYSTEM_IMAGING = "You are a careful medical imaging assistant."
SYSTEM_CLINICAL = "You are a knowledgeable clinical assistant."
SYSTEM_TRIALS = "You are a clinical research coordinator who screens patients for trials."


def conversation(
    system: str, user: str | list[dict[str, str]], answer: str, thinking: str | None = None
) -> list[Message]:
    assistant: Message = {"role": "assistant", "content": answer}
    if thinking is not None:
        assistant["thinking"] = thinking
    return [{"role": "system", "content": system}, {"role": "user", "content": user}, assistant]


# ---------------------------------------------------------------------------------------------------
# Chest radiograph language: one finding per study, described consistently with what is drawn


@dataclass(frozen=True)
class ChestState:
    finding: str
    side: str | None = None
    zone: str | None = None
    severity: int = 2

    def with_severity(self, severity: int | None) -> "ChestState":
        """The same finding at another severity; None means the finding is absent (a normal study)."""
        if severity is None:
            return ChestState("none")
        return ChestState(self.finding, self.side, self.zone, severity)

    def label(self, view: str, anatomy: int) -> Label:
        return {
            "modality": "xray",
            "view": view,
            "finding": self.finding,
            "side": self.side,
            "zone": self.zone,
            "severity": self.severity,
            "anatomy": anatomy,
        }


SIZE_WORDS = {1: "small", 2: "moderate", 3: "large"}
DEGREE_WORDS = {1: "mild", 2: "moderate", 3: "marked"}
NODULE_MM = {1: 6, 2: 9, 3: 13}


def random_chest_state(rng: np.random.Generator, findings: Sequence[str] = XRAY_FINDINGS) -> ChestState:
    finding = pick(rng, findings)
    side = pick(rng, ("right", "left")) if finding in LATERALIZED_FINDINGS else None
    zone = pick(rng, ("upper", "lower")) if finding in ZONED_FINDINGS else None
    zone = {"effusion": "lower", "pneumothorax": "upper"}.get(finding, zone)
    return ChestState(finding, side, zone, int(rng.integers(1, 4)))


def finding_noun(state: ChestState) -> str:
    """The finding named without its size, e.g. 'left lower zone consolidation'."""
    return {
        "none": "no acute abnormality",
        "opacity": f"{state.side} {state.zone} zone consolidation",
        "nodule": f"{state.side} {state.zone} zone nodule",
        "effusion": f"{state.side} pleural effusion",
        "pneumothorax": f"{state.side} pneumothorax",
        "cardiomegaly": "cardiac enlargement",
    }[state.finding]


def finding_core(state: ChestState) -> str:
    """The finding with its size, as an impression names it."""
    size, degree = SIZE_WORDS[state.severity], DEGREE_WORDS[state.severity]
    return {
        "none": "no acute cardiopulmonary abnormality",
        "opacity": f"{size} {state.side} {state.zone} zone consolidation",
        "nodule": f"{NODULE_MM[state.severity]} mm {state.side} {state.zone} zone pulmonary nodule",
        "effusion": f"{size} {state.side} pleural effusion",
        "pneumothorax": f"{size} {state.side} pneumothorax",
        "cardiomegaly": f"{degree} cardiomegaly",
    }[state.finding]


def severity_word(state: ChestState) -> str:
    """How big the finding is, in the words a comparison uses."""
    if state.finding == "nodule":
        return f"{NODULE_MM[state.severity]} mm"
    return (DEGREE_WORDS if state.finding == "cardiomegaly" else SIZE_WORDS)[state.severity]


def with_article(core: str) -> str:
    return core if core.endswith("cardiomegaly") else f"a {core}"


def heart_sentence(rng: np.random.Generator, state: ChestState) -> str:
    if state.finding == "cardiomegaly":
        degree = DEGREE_WORDS[state.severity]
        return pick(rng, (f"The cardiac silhouette is {degree}ly enlarged, spanning more than half of the chest width.",
                          f"There is {degree} enlargement of the cardiac silhouette."))
    return pick(rng, ("Heart size is normal.", "The cardiac silhouette is not enlarged.",
                      "The cardiomediastinal silhouette is within normal limits."))


def lung_sentence(rng: np.random.Generator, state: ChestState) -> str:
    size, s, z = SIZE_WORDS[state.severity], state.side, state.zone
    if state.finding == "opacity":
        return pick(rng, (
            f"There is a {size} area of airspace opacity in the {s} {z} zone, in keeping with consolidation.",
            f"{capitalize(size)} patchy consolidation occupies the {s} {z} zone.",
            f"A {size} ill-defined opacity is present in the {s} {z} zone.",
        ))
    if state.finding == "nodule":
        mm = NODULE_MM[state.severity]
        return pick(rng, (f"A well-circumscribed {mm} mm nodule projects over the {s} {z} zone.",
                          f"There is a {mm} mm round nodule with smooth margins in the {s} {z} zone."))
    if state.finding == "pneumothorax":
        return pick(rng, (
            f"There is a {size} {s} apical pneumothorax with a visible pleural edge and no lung markings beyond it.",
            f"A {size} {s} pneumothorax is present; the lung edge is separated from the chest wall at the apex.",
        ))
    if state.finding == "effusion":
        return pick(rng, ("The aerated lungs are clear.", "No focal consolidation in the aerated lung."))
    return pick(rng, ("The lungs are clear.", "Both lungs are well expanded and clear.",
                      "No focal airspace opacity is seen."))


def pleura_sentence(rng: np.random.Generator, state: ChestState) -> str:
    if state.finding == "effusion":
        size, s = SIZE_WORDS[state.severity], state.side
        effusion = pick(rng, (
            f"There is a {size} {s} pleural effusion with a meniscus and blunting of the costophrenic angle.",
            f"A {size} {s} pleural effusion fills the lung base.",
        ))
        return f"{effusion} No pneumothorax."
    if state.finding == "pneumothorax":
        return "No pleural effusion."
    return pick(rng, ("No pleural effusion or pneumothorax.", "There is no pleural effusion and no pneumothorax."))


def bones_sentence(rng: np.random.Generator) -> str:
    return pick(rng, ("No acute osseous abnormality.", "The visualized bones are intact."))


IMPRESSION_TAILS = {
    "opacity": " This may represent pneumonia in the appropriate clinical context.",
    "nodule": " A dedicated chest CT is recommended for characterisation.",
    "pneumothorax": " Urgent clinical review is advised.",
}
CHANGES = ("new", "stable", "improved", "worsened")


def impression_text(state: ChestState, change: str | None = None) -> str:
    """The impression; with ``change`` it also says how the finding compares with the prior study."""
    if state.finding == "none":
        return "No acute cardiopulmonary abnormality." + (" No interval change." if change else "")
    core = finding_core(state)
    lead = {
        None: f"{capitalize(core)}.",
        "new": f"New {core}.",
        "stable": f"Stable {core}.",
        "improved": f"Improving {core}, smaller than on the prior study.",
        "worsened": f"Worsening {core}, larger than on the prior study.",
    }[change]
    return lead + IMPRESSION_TAILS.get(state.finding, "")


def comparison_sentence(state: ChestState, change: str, prior: ChestState, months: int) -> str:
    """How the current finding relates to the most recent prior study."""
    when = f"the prior study from {months} months earlier"
    if state.finding == "none":
        return f"No interval change compared with {when}."
    noun = finding_noun(state)
    if change == "new":
        return f"The {noun} is new compared with {when}, which was normal."
    if change == "stable":
        return f"The {noun} is unchanged compared with {when}."
    verb = "decreased" if change == "improved" else "increased"
    return f"The {noun} has {verb} compared with {when}, when it was {severity_word(prior)}."


def findings_text(rng: np.random.Generator, state: ChestState, extra: Sequence[str] = ()) -> str:
    sentences = [heart_sentence(rng, state), lung_sentence(rng, state), pleura_sentence(rng, state), *extra,
                 bones_sentence(rng)]
    return " ".join(sentences)


def views_phrase(views: Sequence[str]) -> str:
    return ", ".join(views[:-1]) + (" and " if len(views) > 1 else "") + views[-1]


def study_views(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` views of one study: always a frontal view first (sides are read from it), then lateral, extras."""
    frontal = "PA" if rng.random() < 0.75 else "AP"
    extras = ["AP" if frontal == "PA" else "PA", "PA expiratory"]
    return ([frontal, "lateral"] + extras)[:n]


def severity_timeline(rng: np.random.Generator, change: str, n_priors: int, current: int) -> list[int | None]:
    """Severities oldest prior first, current last; None = finding absent. Monotone for improved/worsened."""
    if change == "stable":
        return [current] * (n_priors + 1)
    if change == "new":
        return [None] * n_priors + [current]
    timeline = [current]
    for step in range(n_priors):
        strict = int(step == 0)  # the latest prior differs from the current study; older ones may plateau
        previous = timeline[0]
        if change == "improved":
            timeline.insert(0, int(rng.integers(previous + strict, 4)))
        else:
            timeline.insert(0, int(rng.integers(1, previous - strict + 1)))
    return timeline


def random_change(rng: np.random.Generator, state: ChestState) -> tuple[str, int]:
    """A change vs prior and the current severity that makes it drawable (improving needs room to shrink)."""
    change = pick(rng, CHANGES)
    severity = {"improved": int(rng.integers(1, 3)), "worsened": int(rng.integers(2, 4))}.get(change, state.severity)
    return change, severity


INDICATIONS = {
    "none": ("Routine preoperative assessment.", "Chest pain, rule out acute process."),
    "opacity": ("Fever and productive cough.", "Cough and shortness of breath."),
    "nodule": ("Follow-up of an incidental finding.", "Chronic cough in a former smoker."),
    "effusion": ("Increasing breathlessness.", "Dullness at the lung base on examination."),
    "pneumothorax": ("Sudden pleuritic chest pain.", "Acute shortness of breath after a fall."),
    "cardiomegaly": ("Ankle swelling and fatigue.", "Breathlessness on exertion."),
}


def patient_line(rng: np.random.Generator, state: ChestState) -> str:
    """Optional clinical metadata; the indication is only loosely linked to the finding."""
    findings = list(INDICATIONS)
    source = state.finding if rng.random() < 0.6 else pick(rng, findings)
    age, sex = int(rng.integers(25, 90)), pick(rng, ("female", "male"))
    return f"Patient: {age}-year-old {sex}. Indication: {pick(rng, INDICATIONS[source])}"


def chest_meta(state: ChestState, views: Sequence[str]) -> dict[str, Any]:
    severity = None if state.finding == "none" else state.severity
    return {"modality": "xray", "label": state.finding, "finding": state.finding, "side": state.side,
            "zone": state.zone, "severity": severity, "views": list(views)}


# ---------------------------------------------------------------------------------------------------
# CT and histology language

CT_CAPTION_REGION = {"abdomen": "the upper abdomen", "chest": "the chest"}
TISSUE_DESCRIPTIONS = {
    "benign": ("sparse, small, regular round nuclei in pink stroma", "a benign process"),
    "malignant": ("crowded, enlarged, irregular hyperchromatic nuclei", "malignancy"),
    "inflammation": ("dense sheets of small dark round inflammatory cells", "inflammation"),
    "necrosis": ("pale eosinophilic debris with scattered nuclear fragments", "necrosis"),
}


def random_ct_label(rng: np.random.Generator, organs: Sequence[str | None], normal_region: str | None = None) -> Label:
    """A CT label with a lesion in one of ``organs`` (None = no lesion, on ``normal_region`` or either)."""
    organ = pick(rng, organs)
    region = "chest" if organ in ("right lung", "left lung") else "abdomen"
    if organ is None:
        region = normal_region or pick(rng, ("abdomen", "chest"))
    density = "hyperdense" if region == "chest" else pick(rng, ("hypodense", "hyperdense"))
    return {"modality": "ct", "region": region, "organ": organ, "density": density if organ else None}


def ct_lesion_phrase(label: Label) -> str:
    if label["organ"] is None:
        return "no focal lesion"
    if label["region"] == "chest":
        return f"a soft-tissue mass in the {label['organ']}"
    return f"a {label['density']} lesion in the {label['organ']}"


def caption_for(rng: np.random.Generator, label: Label) -> str:
    if label["modality"] == "xray":
        state = ChestState(label["finding"], label["side"], label["zone"], label["severity"])
        if state.finding == "none":
            return f"{label['view']} chest radiograph with clear lungs and normal heart size; no acute finding."
        return pick(rng, (f"{label['view']} chest radiograph showing {with_article(finding_core(state))}.",
                          f"Frontal chest radiograph: {finding_core(state)}."))
    if label["modality"] == "ct":
        where = CT_CAPTION_REGION[label["region"]]
        return pick(rng, (f"Axial CT image of {where} showing {ct_lesion_phrase(label)}.",
                          f"CT slice through {where}: {ct_lesion_phrase(label)}."))
    description, diagnosis = TISSUE_DESCRIPTIONS[label["tissue"]]
    return f"H&E-stained tissue patch with {description}, consistent with {diagnosis}."


def label_name(label: Label) -> str:
    """The class a single image shows, for meta.label."""
    if label["modality"] == "xray":
        return label["finding"]
    if label["modality"] == "ct":
        return label["organ"] or "none"
    return label["tissue"]


# ---------------------------------------------------------------------------------------------------
# Task: caption (pretraining)

CAPTION_PROMPTS = ("Describe this image.", "Write a one-sentence caption for this medical image.",
                   "What does this image show? Answer in one sentence.")


def random_single_image_label(rng: np.random.Generator) -> Label:
    modality = pick(rng, ("xray", "xray", "ct", "histology"))
    if modality == "xray":
        return random_chest_state(rng).label(pick(rng, ("PA", "AP")), int(rng.integers(2**31)))
    if modality == "ct":
        return random_ct_label(rng, (*CT_ORGANS, None))
    return {"modality": "histology", "tissue": pick(rng, TISSUES)}


def build_caption(ctx: ItemContext) -> ItemPlan:
    rng = ctx.rng()
    label = random_single_image_label(rng)
    caption = caption_for(rng, label)
    user = [*image_parts(1), text_part(pick(rng, CAPTION_PROMPTS))]
    meta = {"modality": label["modality"], "label": label_name(label), "answer": caption}
    return ItemPlan(conversation(SYSTEM_IMAGING, user, caption), meta, [label])


# ---------------------------------------------------------------------------------------------------
# Tasks: report, report_long (longitudinal), impression


def build_report(ctx: ItemContext) -> ItemPlan:
    rng = ctx.rng()
    state = random_chest_state(rng)
    views = study_views(rng, int(rng.integers(1, 4)))
    anatomy = int(rng.integers(2**31))
    report = f"FINDINGS: {findings_text(rng, state)}\n\nIMPRESSION: {impression_text(state)}"
    intro = f"Chest radiograph, {views_phrase(views)} view{'s' if len(views) > 1 else ''}."
    if rng.random() < 0.5:
        intro = f"{patient_line(rng, state)}\n{intro}"
    user = [text_part(intro), *image_parts(len(views)),
            text_part("Write the radiology report with FINDINGS and IMPRESSION sections.")]
    meta = {**chest_meta(state, views), "answer": report}
    return ItemPlan(conversation(SYSTEM_IMAGING, user, report), meta, [state.label(v, anatomy) for v in views])


def build_report_long(ctx: ItemContext) -> ItemPlan:
    rng = ctx.rng()
    state = random_chest_state(rng)
    n_priors = int(pick(rng, (0, 1, 1, 1, 2)))
    change: str | None = None
    timeline: list[int | None] = [state.severity]  # oldest prior first, current last
    if n_priors and state.finding == "none":
        change, timeline = "stable", [None] * (n_priors + 1)
    elif n_priors:
        change, severity = random_change(rng, state)
        state = state.with_severity(severity)
        timeline = severity_timeline(rng, change, n_priors, severity)
    months_ago = sorted((int(m) for m in rng.choice(np.arange(1, 25), n_priors, replace=False)), reverse=True)
    anatomy = int(rng.integers(2**31))
    views = study_views(rng, int(pick(rng, (2, 2, 3, 3, 4))))

    labels = [state.label(v, anatomy) for v in views]
    intro = f"{patient_line(rng, state)}\nCurrent chest radiograph, {views_phrase(views)} views:"
    user: list[dict[str, str]] = [text_part(intro), *image_parts(len(views))]
    priors = []
    for severity, months in zip(timeline[:-1], months_ago):
        prior = state.with_severity(severity)
        prior_views = study_views(rng, 1 + int(rng.random() < 0.15))
        labels += [prior.label(v, anatomy) for v in prior_views]
        user += [text_part(f"Prior chest radiograph from {months} months earlier, {views_phrase(prior_views)}:"),
                 *image_parts(len(prior_views))]
        priors.append({"months_ago": months, "finding": prior.finding, "severity": prior.severity if severity else None,
                       "views": prior_views})
    user.append(text_part("Write the full radiology report with FINDINGS and IMPRESSION sections"
                          + (", describing any change since the prior studies." if priors else ".")))

    technique = f"{capitalize(views_phrase(views))} views of the chest were obtained."
    comparison = "No prior studies are available for comparison."
    if priors:
        latest = state.with_severity(timeline[-2])
        comparison = comparison_sentence(state, change, latest, months_ago[-1])
        if len(priors) == 2:
            comparison += f" An older study from {months_ago[0]} months earlier is also reviewed."
    extra = ("The mediastinal contours and hila are unremarkable.", comparison,
             "No support devices are seen.")
    report = (f"FINDINGS: {technique} {findings_text(rng, state, extra)}\n\n"
              f"IMPRESSION: {impression_text(state, change)}")
    meta = {**chest_meta(state, views), "answer": report, "change": change, "priors": priors}
    return ItemPlan(conversation(SYSTEM_IMAGING, user, report), meta, labels)


def build_impression(ctx: ItemContext) -> ItemPlan:
    rng = ctx.rng()
    state = random_chest_state(rng)
    views = study_views(rng, int(rng.integers(2, 5)))
    anatomy = int(rng.integers(2**31))
    impression = impression_text(state)
    intro = f"Chest radiograph, {views_phrase(views)} views."
    if rng.random() < 0.7:
        intro = f"{patient_line(rng, state)}\n{intro}"
    user = [text_part(intro), *image_parts(len(views)), text_part("Write only the IMPRESSION of the report.")]
    meta = {**chest_meta(state, views), "answer": impression}
    return ItemPlan(conversation(SYSTEM_IMAGING, user, impression), meta, [state.label(v, anatomy) for v in views])


# ---------------------------------------------------------------------------------------------------
# Task: vqa_mc. Each question kind returns the images, the question, the answer, distractors and the
# visual cue a reasoning trace cites.


@dataclass
class VisualQuestion:
    labels: list[Label]
    question: str
    correct: str
    distractors: list[str]
    cue: str
    meta: dict[str, Any]
    frame_captions: list[str] | None = None  # text before each image, for multi-frame questions


FINDING_OPTIONS = {
    "none": "No acute abnormality",
    "opacity": "Airspace consolidation",
    "effusion": "Pleural effusion",
    "cardiomegaly": "Cardiomegaly",
    "pneumothorax": "Pneumothorax",
    "nodule": "Pulmonary nodule",
}
LATERALITY_NOTE = "On a frontal radiograph the patient's left side appears on the right of the image."


def visual_cue(state: ChestState) -> str:
    s, z = state.side, state.zone
    return {
        "none": "both lung fields are evenly dark with normal markings, the heart is normal in size and the lung "
        "bases are sharp",
        "opacity": f"there is a bright, ill-defined area of increased density in the {s} {z} zone",
        "nodule": f"there is a small, sharply defined, round bright spot in the {s} {z} zone",
        "effusion": f"dense white fluid fills the {s} lung base with a curved upper edge",
        "pneumothorax": f"a black rim without lung markings separates the {s} lung edge from the chest wall at the "
        "apex",
        "cardiomegaly": "the heart shadow is wider than half of the chest",
    }[state.finding]


def question_chest_finding(rng: np.random.Generator) -> VisualQuestion:
    state = random_chest_state(rng)
    views = study_views(rng, int(rng.integers(1, 3)))
    anatomy = int(rng.integers(2**31))
    correct = FINDING_OPTIONS[state.finding]
    return VisualQuestion(
        [state.label(v, anatomy) for v in views],
        pick(rng, ("What is the main finding on this chest radiograph?", "Which abnormality is shown?")),
        correct, [t for t in FINDING_OPTIONS.values() if t != correct],
        f"On the frontal view {visual_cue(state)}, which indicates {correct.lower()}.",
        {"modality": "xray", "question_type": "chest_finding", **chest_meta(state, views)},
    )


def question_chest_location(rng: np.random.Generator) -> VisualQuestion:
    state = random_chest_state(rng, ("opacity", "nodule", "effusion", "pneumothorax"))
    label = state.label(pick(rng, ("PA", "AP")), int(rng.integers(2**31)))
    noun = FINDING_OPTIONS[state.finding].lower()
    if state.finding in ZONED_FINDINGS:
        question = f"Where is the {noun} located?"
        options = [f"{capitalize(side)} {zone} zone" for side in ("right", "left") for zone in ("upper", "lower")]
        correct = f"{capitalize(state.side)} {state.zone} zone"
    else:
        question = f"Which side is the {noun} on?"
        options = ["Right", "Left", "Both sides", "Neither side"]
        correct = capitalize(state.side)
    image_side = "left" if state.side == "right" else "right"
    cue = f"{capitalize(visual_cue(state))}; it lies on the {image_side} of the image. {LATERALITY_NOTE}"
    return VisualQuestion([label], question, correct, [o for o in options if o != correct], cue,
                          {"modality": "xray", "question_type": "chest_location", **chest_meta(state, [label["view"]])})


CHANGE_OPTIONS = {"new": "New since the earliest image", "stable": "Unchanged", "improved": "Improved (smaller)",
                  "worsened": "Worsened (larger)"}


def question_chest_change(rng: np.random.Generator) -> VisualQuestion:
    state = random_chest_state(rng, tuple(f for f in XRAY_FINDINGS if f != "none"))
    change, severity = random_change(rng, state)
    state = state.with_severity(severity)
    timeline = severity_timeline(rng, change, int(rng.integers(1, 3)), severity)
    anatomy = int(rng.integers(2**31))
    labels = [state.with_severity(s).label("PA", anatomy) for s in timeline]
    correct = CHANGE_OPTIONS[change]
    first = "absent" if timeline[0] is None else severity_word(state.with_severity(timeline[0]))
    noun = finding_noun(state)
    cue = f"On the earliest image the {noun} is {first}; on the latest image it is {severity_word(state)}."
    return VisualQuestion(
        labels,
        f"These frontal chest radiographs of one patient are in time order, oldest first. How has the "
        f"{noun} changed on the latest image compared with the earliest?",
        correct, [t for t in CHANGE_OPTIONS.values() if t != correct], cue,
        {"modality": "xray", "question_type": "chest_change", "change": change,
         **chest_meta(state, ["PA"] * len(labels))},
        [f"Image {i + 1}:" for i in range(len(labels))],
    )


def question_chest_which_frame(rng: np.random.Generator) -> VisualQuestion:
    state = random_chest_state(rng, ("opacity", "effusion", "pneumothorax", "cardiomegaly", "nodule"))
    n = int(rng.integers(2, 4))
    if n == 2:
        options = ["Image 1", "Image 2", "Both images", "Neither image"]
        shown_in = pick(rng, ([0], [1], [0, 1], []))
        correct = options[shown_in[0]] if len(shown_in) == 1 else ("Both images" if shown_in else "Neither image")
    else:
        options = ["Image 1", "Image 2", "Image 3", "None of the images"]
        target = int(rng.integers(0, 4))
        shown_in = [target] if target < 3 else []
        correct = options[target]
    labels = [(state if i in shown_in else ChestState("none")).label("PA", int(rng.integers(2**31))) for i in range(n)]
    cue = (f"In {', '.join(f'image {i + 1}' for i in shown_in)} {visual_cue(state)}; the other images are normal."
           if shown_in else "None of the images shows it: all have clear lungs and a normal heart.")
    return VisualQuestion(
        labels, f"Which of these chest radiographs shows {FINDING_OPTIONS[state.finding].lower()}?",
        correct, [o for o in options if o != correct], cue,
        {"modality": "xray", "question_type": "chest_which_frame", "finding": state.finding, "label": state.finding,
         "shown_in": [i + 1 for i in shown_in]},
        [f"Image {i + 1}:" for i in range(n)],
    )


def question_ct_organ(rng: np.random.Generator) -> VisualQuestion:
    label = random_ct_label(rng, CT_ORGANS)
    correct = capitalize(label["organ"])
    cue = f"A round lesion that differs in brightness from its surroundings sits inside the {label['organ']}."
    return VisualQuestion([label], "In which organ is the focal lesion on this CT slice?", correct,
                          [capitalize(o) for o in CT_ORGANS if o != label["organ"]], cue,
                          {"modality": "ct", "question_type": "ct_organ", "label": label["organ"],
                           "organ": label["organ"]})


DENSITY_OPTIONS = {"hypodense": "Hypodense lesion", "hyperdense": "Hyperdense lesion", None: "No focal lesion"}


def question_ct_density(rng: np.random.Generator) -> VisualQuestion:
    label = random_ct_label(rng, ("liver", "spleen", "right kidney", "left kidney", None), normal_region="abdomen")
    correct = DENSITY_OPTIONS[label["density"]]
    cue = {
        "hypodense": f"The lesion in the {label['organ']} is darker than the surrounding organ.",
        "hyperdense": f"The lesion in the {label['organ']} is brighter than the surrounding organ.",
        None: "Liver, spleen and kidneys are uniform without a focal lesion.",
    }[label["density"]]
    return VisualQuestion([label], "How would you describe the focal finding on this abdominal CT slice?", correct,
                          [*[t for t in DENSITY_OPTIONS.values() if t != correct], "Fat-containing lesion"], cue,
                          {"modality": "ct", "question_type": "ct_density", "label": label["density"] or "none",
                           "organ": label["organ"]})


HISTOLOGY_OPTIONS = {"benign": "Benign tissue", "malignant": "Malignant tumour", "inflammation": "Inflammation",
                     "necrosis": "Necrosis"}


def question_histology(rng: np.random.Generator) -> VisualQuestion:
    tissue = pick(rng, TISSUES)
    correct = HISTOLOGY_OPTIONS[tissue]
    description, _ = TISSUE_DESCRIPTIONS[tissue]
    return VisualQuestion([{"modality": "histology", "tissue": tissue}],
                          "Which diagnosis best fits this H&E-stained patch?", correct,
                          [t for t in HISTOLOGY_OPTIONS.values() if t != correct],
                          f"The patch shows {description}.",
                          {"modality": "histology", "question_type": "histology", "label": tissue})


MODALITY_OPTIONS = {"xray": "Chest radiograph", "ct": "Computed tomography (CT)", "histology": "H&E histopathology"}
MODALITY_CUES = {
    "xray": "a grayscale projection image of the whole chest with ribs, lungs and heart superimposed",
    "ct": "a grayscale cross-section of the body with organs and the vertebral body seen in one slice",
    "histology": "a pink and purple stained tissue section with individual cell nuclei",
}


def question_modality(rng: np.random.Generator) -> VisualQuestion:
    label = random_single_image_label(rng)
    correct = MODALITY_OPTIONS[label["modality"]]
    distractors = [*[t for t in MODALITY_OPTIONS.values() if t != correct], "Ultrasound", "Magnetic resonance imaging"]
    return VisualQuestion([label], "Which imaging modality produced this image?", correct, distractors,
                          f"The image is {MODALITY_CUES[label['modality']]}.",
                          {"modality": label["modality"], "question_type": "modality", "label": label["modality"]})


# Multi-frame kinds appear twice so that about a third of the questions carry 2-3 images.
QUESTION_KINDS: tuple[Callable[[np.random.Generator], VisualQuestion], ...] = (
    question_chest_finding, question_chest_location, question_chest_change, question_chest_change,
    question_chest_which_frame, question_chest_which_frame, question_ct_organ, question_ct_density,
    question_histology, question_histology, question_modality,
)


def build_vqa(ctx: ItemContext, with_thinking: bool) -> ItemPlan:
    rng = ctx.rng()
    q = pick(rng, QUESTION_KINDS)(rng)
    options, answer = arrange_options(ctx, rng, q.correct, q.distractors, 4)
    user: list[dict[str, str]] = []
    for i in range(len(q.labels)):
        if q.frame_captions:
            user.append(text_part(q.frame_captions[i]))
        user.append({"type": "image"})
    user.append(text_part(mc_prompt(q.question, options)))
    thinking = f"{q.cue} So the answer is {q.correct}." if with_thinking else None
    meta = {**q.meta, "options": options, "answer": answer, "answer_text": q.correct}
    return ItemPlan(conversation(SYSTEM_IMAGING, user, mc_reply(options, answer), thinking), meta, q.labels)


def build_vqa_mc(ctx: ItemContext) -> ItemPlan:
    return build_vqa(ctx, with_thinking=False)


# ---------------------------------------------------------------------------------------------------
# Task: text_mc. Each condition has cue phrases no other condition uses, so cues decide the answer.


@dataclass(frozen=True)
class Condition:
    name: str
    cues: tuple[str, ...]
    next_step: str
    sex: str | None = None  # a cue that only fits one sex


CONDITIONS = (
    Condition("community-acquired pneumonia", (
        "three days of fever and a cough productive of rusty sputum",
        "coarse crackles and bronchial breath sounds over one lung base",
        "shaking chills with a temperature of 39.4 C",
    ), "Chest radiograph"),
    Condition("pulmonary embolism", (
        "sudden sharp chest pain that worsens on inspiration",
        "a swollen, tender calf on one side",
        "a 14-hour flight two days ago followed by abrupt breathlessness",
    ), "CT pulmonary angiography"),
    Condition("acute myocardial infarction", (
        "crushing central chest pressure spreading to the left arm and jaw",
        "profuse sweating and nausea that began 40 minutes ago",
        "chest pressure that is not relieved by rest",
    ), "12-lead electrocardiogram"),
    Condition("acute appendicitis", (
        "pain that began around the umbilicus and moved to the right lower quadrant",
        "tenderness at McBurney's point with rebound",
        "loss of appetite since the pain started",
    ), "CT of the abdomen and pelvis with contrast"),
    Condition("diabetic ketoacidosis", (
        "a week of intense thirst and frequent urination",
        "deep, rapid breathing and a fruity odour on the breath",
        "vomiting and increasing drowsiness",
    ), "Serum glucose, ketones and blood gas"),
    Condition("primary hypothyroidism", (
        "feeling cold when others are comfortable",
        "weight gain despite a poor appetite",
        "dry coarse skin, constipation and slow reflexes",
    ), "Serum TSH"),
    Condition("Graves disease", (
        "heat intolerance and weight loss despite a large appetite",
        "a fine tremor of the outstretched hands",
        "protruding eyes with lid lag",
    ), "TSH receptor antibodies"),
    Condition("migraine", (
        "recurrent one-sided throbbing headaches that last most of a day",
        "zigzag flashing lights in the vision before each headache",
        "a need to lie in a dark, quiet room during attacks",
    ), "No imaging; clinical diagnosis and abortive therapy"),
    Condition("subarachnoid haemorrhage", (
        "an abrupt, explosive headache described as the worst ever experienced",
        "a headache that peaked within seconds during exertion",
        "brief loss of consciousness at headache onset",
    ), "Non-contrast head CT"),
    Condition("ischaemic stroke", (
        "sudden weakness of the right arm and leg",
        "drooping of one side of the face",
        "slurred speech that started 50 minutes ago",
    ), "Non-contrast head CT"),
    Condition("nephrolithiasis", (
        "waves of severe flank pain spreading to the groin",
        "visible blood in the urine",
        "restlessness, unable to find a comfortable position",
    ), "Non-contrast CT of the kidneys, ureters and bladder"),
    Condition("acute cholecystitis", (
        "right upper quadrant pain that began after a fatty meal",
        "catching of breath on palpation below the right costal margin",
        "pain radiating to the right shoulder blade",
    ), "Right upper quadrant ultrasound"),
    Condition("iron deficiency anaemia", (
        "progressive tiredness with pale conjunctivae",
        "spoon-shaped, brittle fingernails",
        "very heavy menstrual periods for the past year",
        "a craving to chew ice",
    ), "Serum ferritin", sex="female"),
    Condition("asthma", (
        "episodes of wheeze and chest tightness triggered by cold air",
        "a dry cough that wakes the patient at night",
        "symptoms that ease within minutes after a borrowed reliever inhaler",
    ), "Spirometry with bronchodilator reversibility"),
    Condition("congestive heart failure", (
        "breathlessness when lying flat, needing three pillows to sleep",
        "swelling of both ankles that pits on pressure",
        "waking at night gasping for air",
    ), "Echocardiography"),
    Condition("bacterial meningitis", (
        "fever with a stiff neck and new confusion",
        "a non-blanching purple rash on the legs",
        "Kernig sign on examination",
    ), "Blood cultures and lumbar puncture"),
    Condition("gout", (
        "a hot, swollen, exquisitely painful big toe joint",
        "pain that began overnight after a large meal with beer",
        "inability to bear even the bed sheet touching the toe",
    ), "Joint aspiration for crystal analysis"),
)
NEUTRAL_HISTORY = ("a remote ankle fracture", "mild short-sightedness", "a knee arthroscopy five years ago",
                   "a tonsillectomy in childhood", "a healed wrist fracture")
TEXT_QUESTIONS = {"diagnosis": "What is the most likely diagnosis?",
                  "next_step": "What is the most appropriate next step in evaluation?"}


def vignette(rng: np.random.Generator, condition: Condition) -> tuple[str, list[str]]:
    """A short case whose only diagnostic content is 2-3 of the condition's cue phrases."""
    cues = [condition.cues[i] for i in sorted(rng.permutation(len(condition.cues))[: int(rng.integers(2, 4))])]
    sex = condition.sex or pick(rng, ("female", "male"))
    person = {"female": "woman", "male": "man"}[sex]
    text = f"A {int(rng.integers(22, 81))}-year-old {person} presents with {cues[0]} and {cues[1]}."
    if len(cues) > 2:
        text += f" The history also reveals {cues[2]}."
    text += (f" Blood pressure is {int(rng.integers(112, 146))}/{int(rng.integers(68, 90))} mmHg."
             f" Past history includes {pick(rng, NEUTRAL_HISTORY)}.")
    return text, cues


def build_text(ctx: ItemContext, with_thinking: bool) -> ItemPlan:
    rng = ctx.rng()
    condition = pick(rng, CONDITIONS)
    question_type = pick(rng, tuple(TEXT_QUESTIONS))
    case, cues = vignette(rng, condition)
    if question_type == "diagnosis":
        correct, pool = capitalize(condition.name), [capitalize(c.name) for c in CONDITIONS]
    else:
        correct, pool = condition.next_step, [c.next_step for c in CONDITIONS]
    options, answer = arrange_options(ctx, rng, correct, pool, int(pick(rng, (4, 5))))
    thinking = None
    if with_thinking:
        thinking = f"The key cues are {' and '.join(cues)}. Together they point to {condition.name}."
        if question_type == "next_step":
            thinking += f" For suspected {condition.name} the next step is: {condition.next_step}."
        thinking += f" So the answer is {correct}."
    meta = {"modality": "text", "question_type": question_type, "label": condition.name, "cues": cues,
            "options": options, "answer": answer, "answer_text": correct}
    user = mc_prompt(f"{case}\n{TEXT_QUESTIONS[question_type]}", options)
    return ItemPlan(conversation(SYSTEM_CLINICAL, user, mc_reply(options, answer), thinking), meta)


def build_text_mc(ctx: ItemContext) -> ItemPlan:
    return build_text(ctx, with_thinking=False)


def build_reasoning(ctx: ItemContext) -> ItemPlan:
    """Alternates image and text questions, each answered after a short reasoning trace."""
    plan = build_vqa(ctx, with_thinking=True) if ctx.index % 2 == 0 else build_text(ctx, with_thinking=True)
    plan.meta["source_task"] = "vqa_mc" if ctx.index % 2 == 0 else "text_mc"
    return plan


# ---------------------------------------------------------------------------------------------------
# Task: trial. The label follows one rule over structured facts (``trial_label``); the note and the
# criteria are those facts written out.

TRIAL_LABELS = ("eligible", "partially eligible", "not eligible")
TRIAL_OPTIONS = (*TRIAL_LABELS, "not enough information")


@dataclass(frozen=True)
class TrialCondition:
    name: str
    measure: str  # fact key
    measure_name: str
    unit: str
    decimals: int
    include: tuple[float, float]  # inclusion range of the measure
    observed: tuple[float, float]  # range patients are drawn from
    therapy: str


TRIAL_CONDITIONS = (
    TrialCondition("type 2 diabetes", "hba1c", "HbA1c", "%", 1, (7.0, 10.0), (5.6, 12.5), "metformin"),
    TrialCondition("hypertension", "systolic_bp", "systolic blood pressure", " mmHg", 0, (140, 179), (118, 200),
                   "an ACE inhibitor"),
    TrialCondition("COPD", "fev1_pct", "FEV1", "% of predicted", 0, (30, 70), (18, 95), "a long-acting bronchodilator"),
    TrialCondition("heart failure with reduced ejection fraction", "lvef", "left ventricular ejection fraction", "%", 0,
                   (15, 40), (15, 65), "a beta-blocker"),
    TrialCondition("chronic kidney disease", "egfr", "eGFR", " mL/min/1.73m2", 0, (20, 59), (8, 95), "an ARB"),
    TrialCondition("rheumatoid arthritis", "das28", "DAS28 score", "", 1, (3.2, 7.0), (1.6, 7.8), "methotrexate"),
    TrialCondition("major depressive disorder", "phq9", "PHQ-9 score", "", 0, (10, 27), (2, 27), "an SSRI"),
    TrialCondition("atrial fibrillation", "cha2ds2vasc", "CHA2DS2-VASc score", "", 0, (2, 9), (0, 8),
                   "an oral anticoagulant"),
)
AGE_RANGES = ((18, 75), (18, 80), (40, 80), (50, 85), (18, 65))


@dataclass(frozen=True)
class ExclusionFact:
    criterion: str
    present: str  # note sentences; {he}/{He} become the patient's pronoun
    absent: str
    female_only: bool = False


EXCLUSIONS = {
    "current_smoker": ExclusionFact("Current tobacco smoking", "{He} smokes about 15 cigarettes a day.",
                                    "{He} has never smoked."),
    "pregnant": ExclusionFact("Pregnancy or breastfeeding", "She is currently 12 weeks pregnant.",
                              "She is not pregnant.", female_only=True),
    "recent_mi": ExclusionFact("Myocardial infarction within the past 6 months",
                               "{He} had a myocardial infarction 3 months ago.",
                               "There is no history of myocardial infarction."),
    "active_cancer": ExclusionFact("Active malignancy under treatment",
                                   "{He} is receiving chemotherapy for colon cancer.",
                                   "There is no history of cancer."),
    "cirrhosis": ExclusionFact("Known liver cirrhosis", "{He} has known liver cirrhosis.",
                               "Liver function tests are normal."),
    "dialysis": ExclusionFact("Current dialysis", "{He} receives haemodialysis three times a week.",
                              "{He} has never needed dialysis."),
}


def criterion_met(criterion: dict[str, Any], facts: dict[str, Any]) -> bool:
    """A criterion holds when its fact is known and equals the value or lies in [min, max]."""
    value = facts.get(criterion["fact"])
    if value is None:
        return False
    if "equals" in criterion:
        return value == criterion["equals"]
    return criterion["min"] <= value <= criterion["max"]


def trial_label(facts: dict[str, Any], inclusion: list[dict[str, Any]], exclusion: list[dict[str, Any]]) -> str:
    """The rule: wrong condition or any exclusion -> not eligible; all inclusions -> eligible; else partially."""
    if not criterion_met(inclusion[0], facts) or any(criterion_met(c, facts) for c in exclusion):
        return "not eligible"
    return "eligible" if all(criterion_met(c, facts) for c in inclusion) else "partially eligible"


def value_in(rng: np.random.Generator, lo: float, hi: float, decimals: int) -> float | int:
    value = round(float(rng.uniform(lo, hi)), decimals)
    value = min(max(value, lo), hi)
    return int(value) if decimals == 0 else value


def value_outside(rng: np.random.Generator, condition: TrialCondition, decimals: int) -> float | int:
    """A measure value outside the inclusion range (below or above, wherever the observed range allows)."""
    step = 10.0 ** -decimals
    (lo, hi), (obs_lo, obs_hi) = condition.include, condition.observed
    below, above = round(lo - step, decimals), round(hi + step, decimals)  # rounded, so clipping stays printable
    sides = [(obs_lo, below)] if obs_lo <= below else []
    sides += [(above, obs_hi)] if above <= obs_hi else []
    return value_in(rng, *pick(rng, sides), decimals)


def trial_patient(
    rng: np.random.Generator, condition: TrialCondition, age_range: tuple[int, int], exclusions: list[str], target: str
) -> dict[str, Any]:
    """Structured patient facts that give ``target`` under ``trial_label``."""
    sex = pick(rng, ("female", "male"))
    own = condition
    facts: dict[str, Any] = {"sex": sex}
    failing: set[str] = set()
    triggered: str | None = None
    if target == "not eligible":
        if rng.random() < 0.5:
            own = pick(rng, [c for c in TRIAL_CONDITIONS if c.name != condition.name])
        else:
            triggered = pick(rng, [e for e in exclusions if sex == "female" or not EXCLUSIONS[e].female_only])
        failing = {k for k in ("age", "measure", "therapy") if rng.random() < 0.3}
    elif target == "partially eligible":
        keys = ("age", "measure", "therapy")
        failing = {keys[i] for i in rng.permutation(3)[: int(rng.integers(1, 3))]}
    min_age, max_age = age_range
    if "age" in failing and (min_age <= 25 or rng.random() < 0.5):
        facts["age"] = int(rng.integers(max_age + 1, 91))
    elif "age" in failing:
        facts["age"] = int(rng.integers(20, min_age))
    else:
        facts["age"] = int(rng.integers(max(min_age, 25), min(max_age, 88) + 1))
    facts["condition"] = own.name
    if own is condition and "measure" in failing:
        facts[own.measure] = value_outside(rng, own, own.decimals)
    else:
        facts[own.measure] = value_in(rng, *own.include, own.decimals)
    facts["background_therapy"] = None if "therapy" in failing else own.therapy
    for key in exclusions:
        facts[key] = key == triggered
    return facts


def patient_note(rng: np.random.Generator, facts: dict[str, Any], exclusions: list[str]) -> str:
    own = next(c for c in TRIAL_CONDITIONS if c.name == facts["condition"])
    he = "she" if facts["sex"] == "female" else "he"
    person = "woman" if facts["sex"] == "female" else "man"
    value = facts[own.measure]
    sentences = [f"{facts['age']}-year-old {person} with {own.name} diagnosed {int(rng.integers(1, 15))} years ago.",
                 f"Most recent {own.measure_name} was {value}{own.unit}."]
    if facts["background_therapy"]:
        months = int(rng.integers(4, 37))
        sentences.append(f"{capitalize(he)} has taken {own.therapy} at a stable dose for {months} months.")
    else:
        sentences.append(f"{capitalize(he)} is not taking {own.therapy} or any other regular treatment for it.")
    for key in exclusions:
        fact = EXCLUSIONS[key]
        if fact.female_only and facts["sex"] != "female":
            continue
        sentence = fact.present if facts[key] else fact.absent
        sentences.append(sentence.format(He=capitalize(he), he=he))
    first, rest = sentences[0], sentences[1:]
    return " ".join([first, *[rest[i] for i in rng.permutation(len(rest))]])


def format_number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def build_trial(ctx: ItemContext) -> ItemPlan:
    rng = ctx.rng()
    target = TRIAL_LABELS[ctx.balanced_slot(3, salt=1)]
    condition = pick(rng, TRIAL_CONDITIONS)
    age_range = pick(rng, AGE_RANGES)
    exclusions = [list(EXCLUSIONS)[i] for i in sorted(rng.permutation(len(EXCLUSIONS))[: int(rng.integers(2, 4))])]
    facts = trial_patient(rng, condition, age_range, exclusions, target)
    (lo, hi), (min_age, max_age) = condition.include, age_range
    measure_range = f"{format_number(lo, condition.decimals)} and {format_number(hi, condition.decimals)}"
    inclusion = [
        {"fact": "condition", "equals": condition.name, "text": f"Diagnosis of {condition.name}"},
        {"fact": "age", "min": min_age, "max": max_age, "text": f"Age {min_age} to {max_age} years"},
        {"fact": condition.measure, "min": lo, "max": hi,
         "text": f"{capitalize(condition.measure_name)} between {measure_range}{condition.unit}"},
        {"fact": "background_therapy", "equals": condition.therapy,
         "text": f"On a stable dose of {condition.therapy} for at least 3 months"},
    ]
    exclusion = [{"fact": key, "equals": True, "text": EXCLUSIONS[key].criterion} for key in exclusions]
    label = trial_label(facts, inclusion, exclusion)
    if label != target:  # the facts are built for the target; a mismatch is a bug in trial_patient
        raise AssertionError(f"{ctx.item_id}: built a {label!r} patient for target {target!r}")
    drug = f"{pick(rng, ('ZX', 'QT', 'LM', 'RV'))}-{int(rng.integers(100, 1000))}"
    design = pick(rng, ("A randomized", "An open-label", "A placebo-controlled"))
    title = f"{design} phase {pick(rng, ('2', '3'))} study of {drug} in adults with {condition.name}"
    trial_text = "\n".join([f"Title: {title}", f"Condition: {capitalize(condition.name)}", "Inclusion criteria:",
                            *[f"- {c['text']}" for c in inclusion], "Exclusion criteria:",
                            *[f"- {c['text']}" for c in exclusion]])
    options, answer = arrange_options(ctx, rng, label, [o for o in TRIAL_OPTIONS if o != label], 4)
    note = patient_note(rng, facts, exclusions)
    user = mc_prompt(f"Patient note:\n{note}\n\nClinical trial:\n{trial_text}\n\n"
                     "How eligible is this patient for the trial?", options)
    meta = {"modality": "text", "label": label, "options": options, "answer": answer, "patient": facts,
            "trial": {"title": title, "condition": condition.name, "inclusion": inclusion, "exclusion": exclusion}}
    return ItemPlan(conversation(SYSTEM_TRIALS, user, mc_reply(options, answer)), meta)


# ---------------------------------------------------------------------------------------------------
# The corpus

BUILDERS: dict[str, Callable[[ItemContext], ItemPlan]] = {
    "caption": build_caption,
    "report_long": build_report_long,
    "vqa_mc": build_vqa_mc,
    "text_mc": build_text_mc,
    "reasoning": build_reasoning,
    "report": build_report,
    "trial": build_trial,
    "impression": build_impression,
}


def resolve_sizes(sizes: dict[str, int] | None) -> dict[str, int]:
    """The per-task item counts: the defaults, or exactly the tasks named (in the canonical task order)."""
    if sizes is None:
        return dict(DEFAULT_SIZES)
    unknown = sorted(set(sizes) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
    if any(not isinstance(n, int) or n < 0 for n in sizes.values()):
        raise ValueError(f"task sizes must be non-negative integers, got {sizes}")
    return {task: sizes[task] for task in TASKS if task in sizes}


def check_seed(seed: int) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def plan_items(seed: int, sizes: dict[str, int]) -> Iterator[tuple[ItemContext, ItemPlan]]:
    for task, size in sizes.items():
        for index in range(size):
            ctx = ItemContext(seed, task, index)
            yield ctx, BUILDERS[task](ctx)


def iter_corpus_texts(seed: int = 0, sizes: dict[str, int] | None = None) -> Iterator[str]:
    """Every text of the corpus (system, user, assistant and thinking), e.g. to train a tokenizer.

    Same items as ``generate_corpus`` with the same seed and sizes; no image is drawn.
    """
    check_seed(seed)
    for _, plan in plan_items(seed, resolve_sizes(sizes)):
        for message in plan.messages:
            content = message["content"]
            parts = [content] if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"]
            yield from parts
            if "thinking" in message:
                yield message["thinking"]


@dataclass(frozen=True)
class CorpusManifest:
    """What a corpus folder holds: seed, items per task and split, images per task, sha256 per file."""

    seed: int
    counts: dict[str, dict[str, int]]
    images: dict[str, int]
    files: dict[str, str]

    def to_json(self) -> str:
        body = {"seed": self.seed, "counts": self.counts, "images": self.images, "files": self.files}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "CorpusManifest":
        body = json.loads(text)
        return cls(body["seed"], body["counts"], body["images"], body["files"])

    def mismatches(self, root: str | Path) -> list[str]:
        """Files listed here that are missing or whose content changed, and files not listed."""
        root = Path(root)
        problems = [f"{rel}: missing" for rel in self.files if not (root / rel).is_file()]
        problems += [f"{rel}: sha256 differs" for rel, digest in self.files.items()
                     if (root / rel).is_file() and sha256_of(root / rel) != digest]
        on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST_NAME}
        problems += [f"{rel}: not in manifest" for rel in sorted(on_disk - set(self.files))]
        return problems

    def __str__(self) -> str:
        rows = [f"{'task':<12} {'train':>6} {'eval':>6} {'images':>7}"]
        rows += [f"{task:<12} {c['train']:>6} {c['eval']:>6} {self.images[task]:>7}" for task, c in self.counts.items()]
        return "\n".join(rows) + f"\nseed {self.seed}, {len(self.files)} files"


def load_manifest(corpus_dir: str | Path) -> CorpusManifest:
    return CorpusManifest.from_json((Path(corpus_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ImageJob = tuple[ItemContext, int, Label, str]  # (item, image index k, label, path inside the corpus)


def render_image(root: Path, job: ImageJob) -> None:
    ctx, k, label, path = job
    # PIL writes no time or metadata chunks by default, so equal pixels give equal bytes.
    render(ctx.rng(stream=1 + k), label).save(root / path, format="PNG", compress_level=6)


def _render_chunk(root: Path, jobs: list[ImageJob]) -> None:
    for job in jobs:
        render_image(root, job)


def render_workers(n_jobs: int) -> int:
    """Processes that draw images: every core, but none for a few dozen images (starting a pool costs about as much as drawing 20)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8, n_jobs // 32))


def render_images(root: Path, jobs: list[ImageJob]) -> None:
    """Draw every image. Each image's pixels come from its own item and index alone (``ctx.rng``), so
    drawing them in worker processes, in any order, writes the same bytes as drawing them one by one."""
    workers = render_workers(len(jobs))
    if workers == 1:
        _render_chunk(root, jobs)
        return
    chunks = [jobs[i::workers * 4] for i in range(workers * 4)]
    # fork where the platform has it: the workers only draw with numpy and PIL, and spawn would re-run
    # the caller's main script (impossible for `python -` or some notebook front ends).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        for future in [pool.submit(_render_chunk, root, chunk) for chunk in chunks]:
            future.result()


def write_corpus(root: Path, seed: int, sizes: dict[str, int]) -> CorpusManifest:
    """Write every task's images and JSONL plus the manifest into the (empty) folder ``root``."""
    (root / "images").mkdir()
    counts = {task: {"train": 0, "eval": 0} for task in sizes}
    images = {task: 0 for task in sizes}
    lines: dict[str, list[str]] = {task: [] for task in sizes}
    jobs: list[ImageJob] = []
    for ctx, plan in plan_items(seed, sizes):
        paths = [f"images/{ctx.item_id}-{k}.png" for k in range(len(plan.image_labels))]
        jobs += [(ctx, k, label, path) for k, (path, label) in enumerate(zip(paths, plan.image_labels))]
        record = {"id": ctx.item_id, "images": paths, "messages": plan.messages,
                  "meta": {**plan.meta, "task": ctx.task, "split": ctx.split, "image_labels": plan.image_labels}}
        sample = validate_sample(json.loads(json.dumps(record)), ctx.item_id)
        lines[ctx.task].append(sample.to_json())
        counts[ctx.task][ctx.split] += 1
        images[ctx.task] += len(paths)
    render_images(root, jobs)
    for task, task_lines in lines.items():
        (root / f"{task}.jsonl").write_text("".join(line + "\n" for line in task_lines), encoding="utf-8")
    files = {p.relative_to(root).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = CorpusManifest(seed, counts, images, files)
    (root / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def generate_corpus(
    out_dir: str | Path, *, seed: int = 0, sizes: dict[str, int] | None = None, overwrite: bool = False
) -> CorpusManifest:
    """Write the corpus for ``seed`` into ``out_dir`` atomically and return its manifest.

    ``sizes`` maps task -> item count and names exactly the tasks to write (default: ``DEFAULT_SIZES``).
    The corpus is built in a hidden sibling folder and renamed into place, so a failure leaves no partial
    corpus (and an overwritten corpus intact). A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    check_seed(seed)
    sizes = resolve_sizes(sizes)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CorpusExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CorpusExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        manifest = write_corpus(staging, seed, sizes)
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is moved aside first and deleted only afterwards."""
    if not target.exists():
        os.rename(new, target)
        return
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(target, retired)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(retired, target)
        raise
    shutil.rmtree(retired)


def ensure_corpus(out_dir: str | Path, *, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """The corpus folder, generated if it has no manifest yet. A folder made with another seed or other
    task sizes is refused (it is another corpus), naming what differs."""
    out = Path(out_dir)
    manifest = out / MANIFEST_NAME
    wanted = resolve_sizes(sizes)
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        if recorded["seed"] != seed:
            raise ValueError(f"{out}: corpus was generated with seed {recorded['seed']}, not {seed}; use another folder")
        found = {task: split["train"] + split["eval"] for task, split in recorded["counts"].items()}
        if found != wanted:
            differ = sorted(set(found) | set(wanted), key=str)
            detail = ", ".join(f"{t} {found.get(t, 0)} (wanted {wanted.get(t, 0)})" for t in differ
                               if found.get(t) != wanted.get(t))
            raise ValueError(f"{out}: corpus was generated with other task sizes: {detail}; use another folder "
                             "or delete it to regenerate")
        return out
    generate_corpus(out, seed=seed, sizes=wanted)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medkit.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (must be empty or absent unless --overwrite)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        manifest = generate_corpus(args.out_dir, seed=args.seed, overwrite=args.overwrite)
    except ValueError as e:
        parser.error(str(e))
    print(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

