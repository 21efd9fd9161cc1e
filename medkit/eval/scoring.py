"""Multiple-choice scoring (strict, lenient and MedEvalKit-protocol) and bootstrap confidence intervals.

The paper scores multiple choice *strictly*: an output counts only if it commits to exactly one valid
option letter; anything else is "unparsed" and counted wrong. Harnesses such as MedEvalKit map an
unparseable output to an option anyway ("lenient"); we report both, plus the unparsed rate, so the gap
between the two protocols is visible rather than hidden inside one number.

Strict extraction rules, in order (``extract_choice``):

1. Fast path: the whole output is a bare letter form (``B``, ``b``, ``B.``, ``(B)``, ``[B]``, ``**B**``,
   ``Answer: B``, ``The answer is (B).``). One precompiled ``fullmatch``; most outputs end here.
2. Clean markdown emphasis and LaTeX (``$\\boxed{\\text{B}}$`` becomes ``Answer: B``), retry the fast path.
3. Several different letters with nothing else ("B\\n\\nC", "B C") are unparsed.
4. The output (after an optional "the answer is" preamble) is exactly one option's text, compared after
   normalising case, whitespace and punctuation.
5. Explicit answer statements ("answer is B", "Answer: B", "correct option is (B)") decide, even after
   a hedge-looking phrase that is not the answer ("Both A and B are wrong; the answer is C" is C). If
   they name different letters, or the stated letter opens a hedge ("the answer is B or C"), the
   output is unparsed.
6. Otherwise hedges between two different letters ("A or B", "A and C", "A/B") are unparsed.
7. A leading letter ("B) ...", "C. Gout", "B because ...") decides, even if the explanation after it
   mentions other options.
8. Otherwise every letter mention (bracketed, "option X", or a standalone capital) is collected, with
   option texts masked out first (so "vitamin D deficiency" is not a mention of D); exactly one
   distinct letter decides.

The English words "A"/"a" and "I" are letters only when they stand alone or are marked (bracketed,
followed by punctuation, after "answer is"): "a pneumothorax is present" and "I cannot answer" are
unparsed. A committed letter whose following text names a *different* option ("C. Pulmonary embolism"
where C is Gout and A is pulmonary embolism) is a contradiction and unparsed; text that names no option
is read as an explanation and the letter stands. A letter outside the given options is unparsed.
Harmony channel leftovers are the caller's job: pass the final channel only.

Lenient (``lenient_choice``), for comparison only: the strict letter if there is one; else the first
valid option letter the output explicitly mentions (bracketed, "option X", a standalone capital, found
as in rule 8 with option texts masked, or a bare run of option letters such as "AB"); else the option
whose text is nearest the output. So "A or B" is A, never an option the output did not name.

MedEvalKit-protocol (:mod:`medkit.eval.medevalkit`), also for comparison only: the letter MedEvalKit's own
rule reads, its misreadings included, so a reader sees how much the protocol alone moves a score.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np

VALID_LETTERS = "ABCDEFGHIJ"
# Words after "A"/"I" that make it an answer letter rather than the article/pronoun (an article is never
# followed by a conjunction: "A or B").
EXPLANATION_WORDS = frozenset({"because", "since", "as", "is", "was", "would", "seems", "or", "and", "vs", "versus"})

_LETTER = r"[A-Ja-j]"
_ANSWER_PREAMBLE = r"(?:the\s+)?(?:correct\s+|final\s+|best\s+)?answer(?:\s+is)?\s*[:\-]?\s*"
_FAST = re.compile(
    rf"\s*(?:{_ANSWER_PREAMBLE})?[*_]{{0,2}}\s*[(\[]?\s*({_LETTER})\s*[)\]]?\s*[*_]{{0,2}}\s*[.:]?\s*",
    re.IGNORECASE,
)
# Longer outputs cannot be a bare letter form ("The correct answer is: **(B)**." is 32); skipping the
# fullmatch attempt on them saves its backtracking over long explanations.
_FAST_MAX_CHARS = 48
_PREAMBLE = re.compile(rf"^\s*{_ANSWER_PREAMBLE}", re.IGNORECASE)
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit)\s*\{([^{}]*)\}")
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_MARKDOWN = re.compile(r"[*`#]+|__")
_NON_WORD = re.compile(r"[\W_]+")
# A letter in a marked position: bracketed, a capital not glued to a word, or lowercase before punctuation.
_MARKED_LETTER = r"(?:[(\[]\s*([A-Ja-j])\s*[)\]]|([A-J])(?![\w'’\-])|([a-j])(?=\s*(?:[.,;:)!?]|$)))"
_HEDGE = re.compile(
    r"(?<![\w'’\-])[(\[]?([A-J])[)\]]?\s*(?:,|/|&|\bor\b|\band\b|\bversus\b|\bvs\.?)\s*[(\[]?([A-J])[)\]]?(?![\w'’\-])"
)
_ANSWER_MARKER = re.compile(
    rf"(?i:\b(?:answer|option|choice)\s*(?:is\s*:?|:|-|=)\s*(?:(?:option|choice)\s+)?){_MARKED_LETTER}(?=(.*))"
)
# The separator must not run into a word: "e.g.", "B-cell" and "C-reactive" do not open with a letter.
_LEADING_MARKED = re.compile(r"^\s*[(\[]?\s*([A-Ja-j])\s*[)\].:,\-–—](?!\w)\s*(.*)", re.DOTALL)
_LEADING_BARE = re.compile(r"^\s*([A-J])(?:\s+(.*))?$", re.DOTALL)
# The word after a bare capital is looked at, not consumed, so "B C" still shows both letters.
_MENTION = re.compile(
    r"[(\[]\s*([A-Ja-j])\s*[)\]]"
    r"|(?i:\b(?:option|choice)\s+)([A-Ja-j])(?![\w'’\-])"
    r"|(?<![\w'’\-])([A-J])(?![\w'’\-])(?=(\s+\w+)?)"
)
_LIST_LETTER = r"[(\[]?([A-Ja-j])[)\]]?[.:]?"
_LETTER_LIST = re.compile(rf"\s*{_LIST_LETTER}(?:\s+{_LIST_LETTER})+\s*")
_LETTER_RUN = re.compile(rf"\s*(?i:{_ANSWER_PREAMBLE})?[(\[]?([A-J]{{2,}})[)\]]?\s*[.:]?\s*")
# Lenient only: any letter standing alone after an answer statement, lowercase included ("answer is b or c").
# A lowercase one only before punctuation or a conjunction: "the answer is a pulmonary embolism" names no letter.
_STATED_LETTER = re.compile(r"(?i:\b(?:answer|option|choice)\s*(?:is\s*:?|:|-|=)\s*)[(\[]?"
                            r"(?:([A-J])(?![\w'’\-])|([a-j])(?=\s*(?:[.,;:)\]/!?]|$|(?i:or|and)\b)))")
_WORD_AFTER = re.compile(r"\s+([A-Za-z0-9]\w*)")


@dataclass(frozen=True)
class MCScore:
    """One multiple-choice item scored three ways; ``status`` follows the strict protocol.
    ``medevalkit_fallback``: MedEvalKit's rule took its letter from string similarity or a random pick."""

    parsed: str | None
    correct: bool
    lenient: str | None
    lenient_correct: bool
    status: Literal["correct", "wrong", "unparsed"]
    medevalkit: str
    medevalkit_correct: bool
    medevalkit_fallback: bool


@dataclass(frozen=True)
class _Options:
    """Options validated and normalised once per distinct option set (items share them across models)."""

    letters: frozenset[str]
    normalised: tuple[tuple[str, str], ...]  # (letter, normalised text), in option order
    by_letter: dict[str, str]
    texts_longest_first: tuple[str, ...]
    longest: int  # characters of the longest option text, to skip hopeless whole-output comparisons


def normalise(text: str) -> str:
    """Case, whitespace and punctuation folded away, so "Gout." and " gout" compare equal."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def _check_options(options: Mapping[str, str]) -> None:
    if not options:
        raise ValueError(f"options must not be empty, got {options!r}")


@lru_cache(maxsize=4096)
def _prepare(items: tuple[tuple[str, str], ...]) -> _Options:
    bad = [letter for letter, _ in items if not (isinstance(letter, str) and len(letter) == 1 and letter in VALID_LETTERS)]
    if bad:
        raise ValueError(f"option keys must be single letters A-J, got {bad!r}")
    normalised = tuple((letter, normalise(str(text))) for letter, text in items)
    texts = sorted({str(text).strip() for _, text in items if str(text).strip()}, key=len, reverse=True)
    return _Options(frozenset(letter for letter, _ in items), normalised, dict(normalised), tuple(texts),
                    len(texts[0]) if texts else 0)


def prepared_options(options: Mapping[str, str]) -> _Options:
    _check_options(options)
    return _prepare(tuple(options.items()))


def extract_choice(output: str, options: Mapping[str, str]) -> str | None:
    """The single option letter ``output`` commits to, or None (unparsed). Rules: module docstring."""
    _check_options(options)
    match = _FAST.fullmatch(output) if len(output) <= _FAST_MAX_CHARS else None
    if match:
        letter = match.group(1).upper()
        return letter if letter in options else None
    return _extract_slow(output, prepared_options(options))


def _extract_slow(output: str, opts: _Options) -> str | None:
    text = clean_markup(output)
    if not text:
        return None
    match = _FAST.fullmatch(text) if len(text) <= _FAST_MAX_CHARS else None
    if match:
        return _valid(match.group(1).upper(), opts)
    if lists_several_letters(text):
        return None
    by_text = option_named_by(_PREAMBLE.sub("", text, count=1), opts)
    if by_text is not None:
        return by_text
    found, letter = answer_statement_letter(text, opts)
    if found:
        return letter
    masked = mask_option_texts(text, opts)
    if is_hedge(masked):
        return None
    found, letter = leading_letter(text, opts)
    if found:
        return letter
    return single_mentioned_letter(masked, opts)


def clean_markup(output: str) -> str:
    """Markdown emphasis and LaTeX removed; ``\\boxed{X}`` becomes an explicit answer statement."""
    text = output.replace("$", "")
    if "\\" in text:
        for _ in range(3):  # nested wrappers such as \boxed{\text{\textbf{B}}}
            unwrapped = _LATEX_WRAPPER.sub(r"\1", text)
            if unwrapped == text:
                break
            text = unwrapped
        text = _BOXED.sub(r" Answer: \1 ", text)
    if any(mark in text for mark in "*`#_"):
        text = _MARKDOWN.sub("", text)
    return text.strip()


def _valid(letter: str, opts: _Options) -> str | None:
    return letter if letter in opts.letters else None


def option_named_by(text: str, opts: _Options) -> str | None:
    """The letter whose option text equals ``text`` (normalised); None when none or several do."""
    if len(text) > 2 * opts.longest + 8:  # normalising only removes punctuation and spacing
        return None
    target = normalise(text)
    if not target:
        return None
    hits = [letter for letter, option in opts.normalised if option == target]
    return hits[0] if len(hits) == 1 else None


def lists_several_letters(text: str) -> bool:
    """The whole text is letters and nothing else ("B\\n\\nC", "(A) (D)"), naming more than one."""
    match = _LETTER_LIST.fullmatch(text)
    return bool(match) and len({letter.upper() for letter in re.findall(r"[A-Ja-j]", text)}) > 1


def is_hedge(text: str) -> bool:
    return any(a != b for a, b in _HEDGE.findall(text))


def opens_hedge(text: str, opts: _Options) -> bool:
    """``text`` starts with a hedge between two different letters ("B or C because ...")."""
    match = _HEDGE.match(mask_option_texts(text, opts))
    return bool(match) and match.group(1) != match.group(2)


def answer_statement_letter(text: str, opts: _Options) -> tuple[bool, str | None]:
    """(found, letter) from explicit answer statements; several different letters, or a stated letter
    that opens a hedge ("the answer is B or C"), are unparsed."""
    found = []
    for match in _ANSWER_MARKER.finditer(text):
        group = next(g for g in (1, 2, 3) if match.group(g))
        if opens_hedge(text[match.start(group):], opts):
            return True, None
        found.append((match.group(group).upper(), match.group(4)))
    if not found:
        return False, None
    letters = {letter for letter, _ in found}
    if len(letters) > 1:
        return True, None
    letter, after = found[0]
    return True, _consistent(letter, after, opts)


def leading_letter(text: str, opts: _Options) -> tuple[bool, str | None]:
    """(found, letter) when the output opens with a letter, e.g. "B) ...", "C. Gout", "B because ..."."""
    match = _LEADING_MARKED.match(text)
    if match:
        return True, _consistent(match.group(1).upper(), match.group(2), opts)
    match = _LEADING_BARE.match(text)
    if match and not _is_english_word(match.group(1), match.group(2) or ""):
        return True, _consistent(match.group(1), "", opts)
    return False, None


def _is_english_word(letter: str, rest: str) -> bool:
    """A capital "A"/"I" followed by a word is the article/pronoun ("A pneumothorax", "I cannot")."""
    if letter not in "AI" or not rest:
        return False
    word = _WORD_AFTER.match(" " + rest)
    return bool(word) and word.group(1).lower() not in EXPLANATION_WORDS


def _consistent(letter: str, after: str, opts: _Options) -> str | None:
    """``letter`` unless the text right after it names a different option (a contradiction)."""
    if letter not in opts.letters:
        return None
    segment = normalise(after.split("\n", 1)[0])
    if not segment:
        return letter
    own = opts.by_letter[letter]
    if own and _starts_with_words(segment, own):
        return letter
    contradicts = any(other != letter and text and _starts_with_words(segment, text)
                      for other, text in opts.normalised)
    return None if contradicts else letter


def _starts_with_words(segment: str, prefix: str) -> bool:
    return segment == prefix or segment.startswith(prefix + " ")


def mask_option_texts(text: str, opts: _Options) -> str:
    """Option texts blanked out, so letters inside them ("Hepatitis B") are not read as answers."""
    lowered = text.casefold()
    for option in opts.texts_longest_first:
        needle = option.casefold()
        start = lowered.find(needle)
        while start != -1:
            end = start + len(needle)
            text = text[:start] + " " * len(needle) + text[end:]
            lowered = lowered[:start] + " " * len(needle) + lowered[end:]
            start = lowered.find(needle, end)
    return text


def mentioned_letters(text: str) -> Iterator[str]:
    """Letter mentions in order: bracketed, "option X", or a standalone capital that is not the
    article/pronoun. Mask option texts first."""
    for match in _MENTION.finditer(text):
        bracketed, after_option, bare, next_word = match.groups()
        if bare and _is_english_word(bare, next_word or ""):
            continue
        yield (bracketed or after_option or bare).upper()


def single_mentioned_letter(text: str, opts: _Options) -> str | None:
    letters = set(mentioned_letters(text))
    return _valid(letters.pop(), opts) if len(letters) == 1 else None


def first_mentioned_letter(text: str, opts: _Options) -> str | None:
    """The first valid option letter named, including a bare run of option letters ("AB", "Answer: BD")
    and a lowercase letter after an answer statement ("the answer is b or c")."""
    stated = _STATED_LETTER.search(text)
    letter = (stated.group(1) or stated.group(2)).upper() if stated else None
    if letter in opts.letters:
        return letter
    letter = next((x for x in mentioned_letters(mask_option_texts(text, opts)) if x in opts.letters), None)
    if letter is not None:
        return letter
    run = _LETTER_RUN.fullmatch(text)
    if run and set(run.group(1)) <= opts.letters:
        return run.group(1)[0]
    return None


def nearest_option(text: str, opts: _Options) -> str | None:
    """The option most similar to ``text``: share of the option's words present, then difflib ratio;
    ties go to the earlier option. None for text with no words."""
    target = normalise(text)
    if not target:
        return None
    words = set(target.split())

    def similarity(item: tuple[int, tuple[str, str]]) -> tuple[float, float, int]:
        index, (_, option) = item
        option_words = option.split()
        recall = sum(w in words for w in option_words) / len(option_words) if option_words else 0.0
        return recall, difflib.SequenceMatcher(None, target, option).ratio(), -index

    _, (letter, _) = max(enumerate(opts.normalised), key=similarity)
    return letter


def lenient_choice(output: str, options: Mapping[str, str]) -> str | None:
    """For comparison with MedEvalKit-style harnesses only, never the paper's metric: the strict letter,
    else the first valid letter the output names, else the nearest option text (module docstring).
    None only for an empty output."""
    strict = extract_choice(output, options)
    return strict if strict is not None else _lenient_fallback(output, prepared_options(options))


def _lenient_fallback(output: str, opts: _Options) -> str | None:
    text = clean_markup(output)
    if not text:
        return None
    letter = first_mentioned_letter(text, opts)
    return letter if letter is not None else nearest_option(text, opts)


def score_mc(output: str, options: Mapping[str, str], answer: str, *, benchmark: str = "",
             item_id: str = "") -> MCScore:
    """Strict, lenient and MedEvalKit-protocol scoring of one item against its gold letter. ``benchmark``
    picks MedEvalKit's rule for it (its option form, MMMU's parser); ``item_id`` seeds MMMU's random pick."""
    from medkit.eval.medevalkit import medevalkit_score

    _check_options(options)
    if answer not in options:
        raise ValueError(f"answer {answer!r} is not one of the options {list(options)}")
    parsed = extract_choice(output, options)
    lenient = parsed if parsed is not None else _lenient_fallback(output, prepared_options(options))
    status: Literal["correct", "wrong", "unparsed"]
    status = "unparsed" if parsed is None else ("correct" if parsed == answer else "wrong")
    reference = medevalkit_score(output, options, answer, benchmark, item_id)
    return MCScore(parsed, parsed == answer, lenient, lenient == answer, status,
                   reference.letter, reference.correct, reference.fallback)


# ---------------------------------------------------------------------------------------------------
# Bootstrap

_MAX_RESAMPLE_CELLS = 1 << 22  # index-matrix cells per chunk: bounds memory for large benchmarks


def _check_bootstrap_args(n_boot: int, alpha: float) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _as_matrix(columns: Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.asarray(columns, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"need at least one value per metric, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("values must be finite (found NaN or inf)")
    return matrix


def resampled_means(matrix: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(metrics, n_boot) means over items resampled with replacement; every metric row uses the same
    resampled items, so paired quantities (accuracy vs lenient accuracy) stay paired."""
    rng = np.random.default_rng(seed)
    n = matrix.shape[1]
    chunk = max(1, _MAX_RESAMPLE_CELLS // n)
    means = np.empty((matrix.shape[0], n_boot))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        means[:, start:stop] = matrix[:, index].mean(axis=2)
    return means


def _percentile_ci(means: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean of any per-item metric; deterministic in seed."""
    _check_bootstrap_args(n_boot, alpha)
    means = resampled_means(_as_matrix([list(values)]), n_boot, seed)
    return _percentile_ci(means[0], alpha)


def chance_rate(options_per_item: Sequence[Mapping[str, str]]) -> float | None:
    """What guessing one option per item scores on these items: the mean of 1 / options (None: no items)."""
    return sum(1 / len(options) for options in options_per_item) / len(options_per_item) if options_per_item else None


def accuracy_summary(correct: Sequence[bool], unparsed: Sequence[bool], lenient_correct: Sequence[bool], *,
                     medevalkit_correct: Sequence[bool] | None = None,
                     medevalkit_fallback: Sequence[bool] | None = None,
                     n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, float | int]:
    """Strict accuracy with its CI, unparsed rate, lenient accuracy with its CI and, when given, the
    MedEvalKit-protocol accuracy with its CI and how often that rule fell back to a guess, side by side.
    Every score's CI resamples the same items."""
    _check_bootstrap_args(n_boot, alpha)
    columns = {"correct": correct, "unparsed": unparsed, "lenient_correct": lenient_correct}
    if medevalkit_correct is not None or medevalkit_fallback is not None:
        if medevalkit_correct is None or medevalkit_fallback is None:
            raise ValueError("give both medevalkit_correct and medevalkit_fallback, or neither")
        columns |= {"medevalkit_correct": medevalkit_correct, "medevalkit_fallback": medevalkit_fallback}
    if len({len(v) for v in columns.values()}) != 1:
        raise ValueError(f"{', '.join(columns)} differ in length: {', '.join(str(len(v)) for v in columns.values())}")
    matrix = _as_matrix([list(v) for v in columns.values()])
    scored = [0, 2] + ([3] if len(columns) > 3 else [])
    means = resampled_means(matrix[scored], n_boot, seed)
    point = matrix.mean(axis=1)
    accuracy_low, accuracy_high = _percentile_ci(means[0], alpha)
    lenient_low, lenient_high = _percentile_ci(means[1], alpha)
    summary = {
        "n": int(matrix.shape[1]),
        "accuracy": float(point[0]),
        "ci_low": accuracy_low,
        "ci_high": accuracy_high,
        "unparsed_rate": float(point[1]),
        "lenient_accuracy": float(point[2]),
        "lenient_ci_low": lenient_low,
        "lenient_ci_high": lenient_high,
    }
    if len(columns) > 3:
        medevalkit_low, medevalkit_high = _percentile_ci(means[2], alpha)
        summary |= {"medevalkit_accuracy": float(point[3]), "medevalkit_ci_low": medevalkit_low,
                    "medevalkit_ci_high": medevalkit_high, "medevalkit_fallback_rate": float(point[4])}
    return summary | {"alpha": alpha, "n_boot": int(n_boot)}


def summarise_scores(scores: Sequence[MCScore], *, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, float | int]:
    """:func:`accuracy_summary` of scored items: strict, lenient and MedEvalKit-protocol side by side."""
    return accuracy_summary([s.correct for s in scores], [s.status == "unparsed" for s in scores],
                            [s.lenient_correct for s in scores],
                            medevalkit_correct=[s.medevalkit_correct for s in scores],
                            medevalkit_fallback=[s.medevalkit_fallback for s in scores],
                            n_boot=n_boot, seed=seed, alpha=alpha)


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, float | int]:
    """Model a minus model b on the same items, resampling items (not models) so per-item difficulty
    cancels. p-value: twice the share of resampled mean differences on the far side of 0, capped at 1
    (resolution 1 / n_boot; 0.0 means below that)."""
    _check_bootstrap_args(n_boot, alpha)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(f"models were scored on different ids: {len(only_a)} only in a {only_a[:5]}, "
                         f"{len(only_b)} only in b {only_b[:5]}")
    ids = sorted(a)
    matrix = _as_matrix([[a[i] for i in ids], [b[i] for i in ids]])
    differences = matrix[0] - matrix[1]
    resampled = resampled_means(differences[None, :], n_boot, seed)[0]
    low, high = _percentile_ci(resampled, alpha)
    share_at_or_below, share_at_or_above = float(np.mean(resampled <= 0)), float(np.mean(resampled >= 0))
    return {
        "n": len(ids),
        "mean_a": float(matrix[0].mean()),
        "mean_b": float(matrix[1].mean()),
        "diff": float(differences.mean()),
        "ci_low": low,
        "ci_high": high,
        "p_value": min(1.0, 2 * min(share_at_or_below, share_at_or_above)),
        "alpha": alpha,
        "n_boot": int(n_boot),
    }
