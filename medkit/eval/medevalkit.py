"""The MedEvalKit-protocol multiple-choice score: MedEvalKit's own answer rule, mistakes included.

Strict scoring (:mod:`medkit.eval.scoring`) is the paper's metric; lenient is the kit's own "give the output
the benefit of the doubt" reading. This third score reproduces what the MedEvalKit harness
(alibaba-damo-academy/MedEvalKit, the harness Lingshu and MedMO report with) would have counted, so a reader
can see how much of a gap between papers the scoring rule alone explains. It is written from the rule's
definition and checked against the reference's behaviour on a golden table (tests/test_medevalkit.py);
the point is to reproduce its numbers, not to improve on it, so its misreadings stay.

The rule for every benchmark but MMMU (``judge_multi_choice`` in MedEvalKit's ``utils``):

1. The dataset module first keeps the content of ``<answer>...</answer>`` if the output has one.
2. Lower-case. If the first paragraph (split on a blank line) is exactly an option letter it is the answer;
   else if the last paragraph's text before its first "." is one, that is.
3. ``\\boxed{...}`` content (the last box, braces balanced; "none" when "boxed" appears without one), else
   ``<answer>`` content; then for each answer pattern in a fixed order ("**answer**:", "**answer**",
   "*answer*:", "**answer:**", "answer is", "answer:", "final answer", "final answer is") the text
   after its last occurrence.
4. Strip, drop newlines, keep the part before the first "." and, of that, after the last ":".
5. That part is the gold letter; or a letter (read as that option); or an option exactly as the dataset
   writes it (e.g. "b. pneumonia"); else the option whose written form is most similar to the whole parsed
   output by ``difflib`` ratio (the first on ties, A when nothing is similar). No output is ever unparsed.

So "(B)", "**B**", "[B]", "C)" and "Answer: (E)" do not read as letters and fall to the similarity step.
Options are compared in the form each MedEvalKit dataset module writes them ("B. text", "B.text" or the
bare text), which changes the similarity step; :data:`RULES` records the form per benchmark.

MMMU (and MMMU-Pro, scored by the same official parser) uses MMMU's ``parse_multi_choice_response``:
bracketed letters "(B)" first, then letters standing between spaces, then (for outputs over five words)
option texts contained in the output, the last-mentioned winning when several are found; with none, a
random option, here drawn from a generator seeded by the item id so a rerun reads the same.
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass
from typing import Literal, Mapping

ChoiceForm = Literal["X. text", "X.text", "text"]
# The order matters: each pattern found cuts the text again, keeping what follows its last occurrence.
ANSWER_PATTERNS = ("**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:",
                   "final answer", "final answer is")
MMMU_STRIPPED = ",.!?;:'"
MMMU_MIN_WORDS_FOR_TEXT = 5  # option texts are looked for only in outputs longer than this many words


@dataclass(frozen=True)
class Rule:
    """How MedEvalKit scores one benchmark: which parser, the form its dataset module writes options in,
    and whether that module keeps ``<answer>`` content before judging."""

    parser: Literal["judge_multi_choice", "mmmu"]
    choice_form: ChoiceForm = "X. text"
    answer_tag_first: bool = True
    note: str = ""


# Per benchmark, from the MedEvalKit dataset module named in the note. Benchmarks MedEvalKit does not have
# get DEFAULT_RULE.
RULES: dict[str, Rule] = {
    "medqa": Rule("judge_multi_choice", "X. text", note="utils/MedQA_USMLE"),
    "medmcqa": Rule("judge_multi_choice", "X. text", note="utils/MedMCQA"),
    "pubmedqa": Rule("judge_multi_choice", "X.text", note="utils/PubMedQA"),
    "mmlu_med": Rule("judge_multi_choice", "text", note="utils/MMLU (options kept as bare texts)"),
    "medxpertqa_text": Rule("judge_multi_choice", "X. text", note="utils/MedXpertQA"),
    "medxpertqa_mm": Rule("judge_multi_choice", "X. text", note="utils/MedXpertQA"),
    "medbullets": Rule("judge_multi_choice", "X.text", note="utils/Medbullets_op4 and _op5"),
    "medframeqa": Rule("judge_multi_choice", "X.text", answer_tag_first=False, note="utils/MedFrameQA"),
    "slake": Rule("judge_multi_choice", "X. text",
                  note="MedEvalKit asks SLAKE's closed questions without options and scores them by exact "
                       "match or yes/no; the kit asks them as multiple choice, so its rule is applied to that"),
    "mmmu_med": Rule("mmmu", note="utils/MMMU (official MMMU parser)"),
    "mmmu_pro_med_4": Rule("mmmu", note="MMMU-Pro is scored by the official MMMU parser"),
    "mmmu_pro_med_10": Rule("mmmu", note="MMMU-Pro is scored by the official MMMU parser"),
}
DEFAULT_RULE = Rule("judge_multi_choice", "X. text", note="not a MedEvalKit benchmark: its usual option form")


def rule_for(benchmark: str) -> Rule:
    return RULES.get(benchmark, DEFAULT_RULE)


@dataclass(frozen=True)
class MedEvalKitScore:
    """What the rule read (an option letter, never None) and whether it counts the item correct;
    ``fallback``: the letter came from the similarity step or MMMU's random pick, not from the output."""

    letter: str
    correct: bool
    fallback: bool


# ------------------------------------------------------------------------------ shared text helpers

def answer_tag_content(text: str) -> str:
    """Every complete ``<answer>...</answer>`` span's content joined by spaces; the text itself if none
    (or all are empty)."""
    parts, start = [], text.find("<answer>")
    while start != -1:
        end = text.find("</answer>", start + len("<answer>"))
        if end == -1:
            break
        parts.append(text[start + len("<answer>"):end])
        start = text.find("<answer>", end + len("</answer>"))
    joined = " ".join(parts).strip()
    return joined or text


def boxed_content(text: str) -> str:
    """The last ``\\boxed{...}``'s content with braces balanced, stripped; "None" when there is none."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return "None"
    content, depth = text[start + len("\\boxed{"):], 0
    for i, char in enumerate(content):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == -1:
            return content[:i].strip()
    return "None"


def _letters(n: int) -> list[str]:
    return [chr(ord("a") + i) for i in range(n)]


def _checked_letters(options: Mapping[str, str]) -> list[str]:
    """The option letters, which MedEvalKit assumes run A, B, C, ... in order."""
    letters = list(options)
    if letters != [c.upper() for c in _letters(len(letters))]:
        raise ValueError(f"MedEvalKit's rule needs options lettered A, B, C, ... in order, got {letters}")
    return letters


def written_choices(options: Mapping[str, str], form: ChoiceForm) -> list[str]:
    """The options as the dataset module writes them for the judge."""
    if form == "X. text":
        return [f"{letter}. {text}" for letter, text in options.items()]
    if form == "X.text":
        return [f"{letter}.{text}" for letter, text in options.items()]
    return [str(text) for text in options.values()]


# ------------------------------------------------------------------------------ judge_multi_choice

def parse_response(response: str) -> str:
    """Step 3: box or answer-tag content, then the text after each answer pattern in turn."""
    response = response.lower()
    if "boxed" in response:
        response = boxed_content(response)
    elif "<answer>" in response:
        response = answer_tag_content(response)
    for pattern in ANSWER_PATTERNS:
        if pattern in response:
            response = response.split(pattern)[-1]
    return response


def most_similar_index(choices: list[str], text: str) -> int:
    """The first choice with the highest difflib ratio to ``text``; 0 when none is similar at all."""
    best, best_ratio = 0, 0.0
    for i, choice in enumerate(choices):
        ratio = difflib.SequenceMatcher(None, choice, text).ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    return best


def judge_multi_choice(output: str, options: Mapping[str, str], answer: str, form: ChoiceForm) -> MedEvalKitScore:
    """Steps 2-5 of the module docstring on one output; ``answer`` is the gold letter."""
    letters = _letters(len(_checked_letters(options)))
    choices = [c.lower() for c in written_choices(options, form)]
    response = output.lower()
    paragraphs = response.split("\n\n")
    if paragraphs[0] in letters:
        response = paragraphs[0]
    elif paragraphs[-1].split(".")[0] in letters:
        response = paragraphs[-1].split(".")[0]
    response = parse_response(response).strip().lower().replace("\n", "")
    head = response.split(".")[0].split(":")[-1]
    gold = answer.strip().lower()
    if head == gold or head in letters:
        # a letter: correct only if it is the gold one (the reference also accepts an option written
        # exactly as the gold letter, which no real option is)
        return MedEvalKitScore(head.upper(), head == gold or choices[letters.index(head)] == gold, False)
    if head in choices:
        index = choices.index(head)
        correct = gold in letters and head == choices[letters.index(gold)]
        return MedEvalKitScore(letters[index].upper(), correct, False)
    index = most_similar_index(choices, response)
    return MedEvalKitScore(letters[index].upper(), letters[index] == gold or choices[index] == gold, True)


# ------------------------------------------------------------------------------ MMMU's parser

def mmmu_choice(output: str, options: Mapping[str, str], seed_key: str) -> tuple[str, bool]:
    """(letter, fell back to random) under MMMU's official parser; the random pick is seeded by
    ``seed_key`` (the item id), so the same output on the same item always reads the same."""
    letters = _checked_letters(options)
    response = output
    if "<answer>" in response:
        response = answer_tag_content(response)
    elif "\\boxed" in response:
        response = boxed_content(response)
    response = response.strip()
    for char in MMMU_STRIPPED:
        response = response.strip(char)
    response = f" {response} "

    bracketed = [letter for letter in letters if f"({letter})" in response]
    spaced = [] if bracketed else [letter for letter in letters if f" {letter} " in response]
    by_text = [] if bracketed or spaced or len(response.split()) <= MMMU_MIN_WORDS_FOR_TEXT else [
        letter for letter in letters if str(options[letter]).lower() in response.lower()]
    candidates = bracketed or spaced or by_text
    if not candidates:
        return random.Random(f"medevalkit-mmmu:{seed_key}").choice(letters), True
    if len(candidates) == 1:
        return candidates[0], False

    def last_position(letter: str) -> int:
        if bracketed:
            return response.rfind(f"({letter})")
        if spaced:
            return response.rfind(f" {letter} ")
        return response.lower().rfind(str(options[letter]).lower())

    positions = [last_position(letter) for letter in candidates]
    return candidates[positions.index(max(positions))], False


# ------------------------------------------------------------------------------ entry point

def medevalkit_score(output: str, options: Mapping[str, str], answer: str, benchmark: str,
                     item_id: str) -> MedEvalKitScore:
    """The MedEvalKit-protocol reading of one item of ``benchmark`` (its rule from :data:`RULES`)."""
    rule = rule_for(benchmark)
    if rule.parser == "mmmu":
        letter, fallback = mmmu_choice(answer_tag_content(output), options, item_id)
        return MedEvalKitScore(letter, letter == answer, fallback)
    text = answer_tag_content(output) if rule.answer_tag_first else output
    return judge_multi_choice(text, options, answer, rule.choice_form)
