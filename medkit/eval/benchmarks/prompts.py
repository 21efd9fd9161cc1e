"""The unified chat-style prompts every benchmark item is rendered with, native and synthetic alike.

Multiple choice: optional context, the question, the options one per line as ``A. text``, then one
constraint line the strict scorer relies on. Images come first in the user turn (each optionally
preceded by a short caption such as ``<image 2>`` or ``Frame 3``), text after them.
Report and impression prompts: optional patient metadata, the current study's images, prior studies'
images (report only), then the instruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

Message = dict[str, Any]
Part = dict[str, str]

MC_CONSTRAINT = "Answer with the letter of the correct option only."
SYSTEM_VQA = "You are a careful medical imaging assistant."
SYSTEM_TEXT_QA = "You are a knowledgeable clinical assistant."
SYSTEM_TRIALS = "You are a clinical research coordinator who screens patients for clinical trials."
SYSTEM_RADIOLOGY = "You are an experienced radiologist writing chest radiograph reports."
REPORT_INSTRUCTION = "Write the radiology report for the current study with FINDINGS and IMPRESSION sections."
REPORT_INSTRUCTION_PRIORS = (
    "Write the radiology report for the current study with FINDINGS and IMPRESSION sections, "
    "describing any change since the prior studies."
)
IMPRESSION_INSTRUCTION = "Write only the IMPRESSION section of the radiology report for this study."
TRIAL_QUESTION = "How eligible is this patient for the clinical trial?"


def text_part(text: str) -> Part:
    return {"type": "text", "text": text}


def image_parts(n: int, captions: Sequence[str] | None = None) -> list[Part]:
    if captions is not None and len(captions) != n:
        raise ValueError(f"{len(captions)} captions for {n} images")
    parts: list[Part] = []
    for i in range(n):
        if captions is not None and captions[i]:
            parts.append(text_part(captions[i]))
        parts.append({"type": "image"})
    return parts


def format_options(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def mc_text(question: str, options: dict[str, str], context: str | None = None) -> str:
    blocks = [context.strip()] if context and context.strip() else []
    blocks.append(question.strip())
    return "\n\n".join(blocks) + f"\n{format_options(options)}\n{MC_CONSTRAINT}"


def mc_user_turn(
    question: str,
    options: dict[str, str],
    *,
    context: str | None = None,
    n_images: int = 0,
    image_captions: Sequence[str] | None = None,
) -> Message:
    parts = image_parts(n_images, image_captions) + [text_part(mc_text(question, options, context))]
    return {"role": "user", "content": parts}


def mc_messages(question: str, options: dict[str, str], *, system: str, **kwargs: Any) -> list[Message]:
    return [{"role": "system", "content": system}, mc_user_turn(question, options, **kwargs)]


@dataclass(frozen=True)
class PatientInfo:
    """Optional structured metadata that guides a report (any field may be missing)."""

    age: int | None = None
    sex: str | None = None
    indication: str | None = None

    def line(self) -> str:
        bits = []
        if self.age is not None or self.sex:
            who = " ".join(b for b in (f"{self.age}-year-old" if self.age is not None else "", self.sex or "") if b)
            bits.append(f"Patient: {who}.")
        if self.indication:
            bits.append(f"Indication: {self.indication.strip()}")
        return " ".join(bits)


@dataclass(frozen=True)
class PriorStudy:
    n_images: int
    when: str  # e.g. "3 months earlier" or "2019-04-02"


def views_caption(n_images: int, views: Sequence[str] | None) -> str:
    if views and len(views) == n_images:
        return f"({', '.join(views)})"
    return f"({n_images} image{'s' if n_images != 1 else ''})"


def report_user_turn(
    n_images: int, priors: Sequence[PriorStudy] = (), *, patient: PatientInfo | None = None,
    views: Sequence[str] | None = None,
) -> Message:
    parts: list[Part] = []
    if patient and patient.line():
        parts.append(text_part(patient.line()))
    parts.append(text_part(f"Current chest radiograph study {views_caption(n_images, views)}:"))
    parts += image_parts(n_images)
    for k, prior in enumerate(priors, start=1):
        parts.append(text_part(f"Prior study {k}, {prior.when}:"))
        parts += image_parts(prior.n_images)
    parts.append(text_part(REPORT_INSTRUCTION_PRIORS if priors else REPORT_INSTRUCTION))
    return {"role": "user", "content": parts}


def report_messages(n_images: int, priors: Sequence[PriorStudy] = (), **kwargs: Any) -> list[Message]:
    return [{"role": "system", "content": SYSTEM_RADIOLOGY}, report_user_turn(n_images, priors, **kwargs)]


def impression_user_turn(n_images: int, *, patient: PatientInfo | None = None,
                         views: Sequence[str] | None = None) -> Message:
    parts: list[Part] = []
    if patient and patient.line():
        parts.append(text_part(patient.line()))
    parts.append(text_part(f"Chest radiograph study {views_caption(n_images, views)}:"))
    parts += image_parts(n_images)
    parts.append(text_part(IMPRESSION_INSTRUCTION))
    return {"role": "user", "content": parts}


def with_exemplar(system: str, exemplar_user: Message, exemplar_answer: str, query_user: Message) -> list[Message]:
    """A 1-shot conversation: the exemplar as a prior user/assistant pair, then the query."""
    return [{"role": "system", "content": system}, exemplar_user,
            {"role": "assistant", "content": exemplar_answer}, query_user]


def report_reference(findings: str, impression: str) -> str:
    """The reference report a generated report is scored against (same layout as the synthetic corpus)."""
    return f"FINDINGS: {findings.strip()}\n\nIMPRESSION: {impression.strip()}"
