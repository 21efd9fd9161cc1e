"""Tokenizers for medkit: the shipped tiny harmony tokenizer and loading the real gpt-oss one.

Owns ``medkit/assets/tiny_tokenizer/`` (tokenizer.json + tokenizer_config.json): a byte-level BPE
trained deterministically with the ``tokenizers`` library on the seeded synthetic corpus, with the
same pre-tokenizer as gpt-oss (o200k split pattern, then byte-level), every harmony special token and
the kit's image tokens. Rebuild it with ``python -m medkit.chat.tokenizer --rebuild``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from medkit.chat.harmony import (
    END_OF_TEXT_TOKEN,
    HARMONY_TOKENS,
    IMAGE_TOKENS,
    RETURN_TOKEN,
    SPECIAL_TOKENS,
    START_OF_TEXT_TOKEN,
)

logger = logging.getLogger(__name__)

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_tokenizer"
TINY_VOCAB_SIZE = 2048
# gpt-oss's (o200k) pre-tokenizer split: words with a leading non-letter, numbers in groups of 1-3,
# punctuation runs, newlines and spaces. Sharing it keeps the tiny tokenizer's piece boundaries
# (and so the render/encode equivalence) like the real one's.
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
PAPER_TOKENIZER_HINT = (
    "the paper profile needs the gpt-oss tokenizer: download openai/gpt-oss-20b once with network access "
    "(e.g. `hf download openai/gpt-oss-20b`) or pass a local folder that holds its tokenizer files"
)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` with the harmony and image tokens as special tokens.

    Deterministic: the same texts in the same order give a byte-identical tokenizer.json. Special tokens
    take ids 0..11 in ``SPECIAL_TOKENS`` order; bos ``<|startoftext|>``, eos ``<|return|>`` and pad
    ``<|endoftext|>`` as in gpt-oss. Nothing is added on ``encode`` (gpt-oss adds no bos either).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(SPECIAL_TOKENS)} specials + 256 bytes")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,  # every byte stays encodable, whatever the corpus holds
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    named = {START_OF_TEXT_TOKEN, RETURN_TOKEN, END_OF_TEXT_TOKEN}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=START_OF_TEXT_TOKEN,
        eos_token=RETURN_TOKEN,
        pad_token=END_OF_TEXT_TOKEN,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in named],
        clean_up_tokenization_spaces=False,  # decode must give back the exact text
    )


TOKENIZER_CORPUS_SIZES = {"caption": 240, "report_long": 120, "vqa_mc": 240, "text_mc": 240, "reasoning": 80,
                          "report": 80, "trial": 160, "impression": 80}


def corpus_texts() -> Iterator[str]:
    """Texts the shipped tokenizer is trained on: the synthetic corpus (seed 0) when medkit has it,
    else the built-in fallback."""
    if importlib.util.find_spec("medkit.data.synthetic") is not None:
        from medkit.data import synthetic

        if hasattr(synthetic, "iter_corpus_texts"):
            # a fixed slice of the corpus, so resizing the corpus's tasks does not retrain the tokenizer
            return synthetic.iter_corpus_texts(seed=0, sizes=TOKENIZER_CORPUS_SIZES)
    logger.warning("medkit.data.synthetic.iter_corpus_texts not found; training on the built-in fallback text")
    return iter(fallback_texts())


def fallback_texts() -> list[str]:
    """A few hundred lines of invented clinical English, built combinatorially (no randomness)."""
    modalities = ["Chest radiograph", "CT of the abdomen", "MRI of the brain", "Ultrasound of the liver",
                  "Histology slide", "Dermoscopy image", "Fundus photograph"]
    findings = ["a small left pleural effusion", "no acute abnormality", "a 12 mm nodule in the right upper lobe",
                "diffuse ground-glass opacities", "an enhancing lesion measuring 3.4 cm", "mild cardiomegaly",
                "atypical glands with nuclear pleomorphism", "a pigmented lesion with irregular borders"]
    lines = [f"{m}: {f}." for m, f in itertools.product(modalities, findings)]
    lines += [f"FINDINGS: {f.capitalize()}.\nIMPRESSION: Findings consistent with {f}." for f in findings]
    letters = "ABCDEFGHIJ"
    for n_options in range(2, len(letters) + 1):
        options = "\n".join(f"{letters[i]}. {findings[i % len(findings)]}" for i in range(n_options))
        lines.append(f"Which finding is shown?\n{options}\nAnswer with the letter of the correct option only.")
    lines += list(letters)
    for age, sex, temp in itertools.product(range(18, 90, 7), ("man", "woman"), ("36.8", "38.5", "39.2")):
        lines.append(f"A {age}-year-old {sex} presents with cough; temperature {temp} C, heart rate {age + 40}/min.")
    lines += [str(n) for n in range(100)]
    return lines


def write_tiny_tokenizer(
    out_dir: str | Path = TINY_TOKENIZER_DIR, texts: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train on ``texts`` (default: ``corpus_texts()``) and save tokenizer.json + tokenizer_config.json."""
    tokenizer = train_tiny_tokenizer(corpus_texts() if texts is None else texts)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def profile_tokenizer(profile) -> PreTrainedTokenizerBase:
    """The profile's tokenizer at the revision the profile pins for its hub id (``model.revisions``): the
    chat template comes with it, so it is pinned with the weights."""
    name = profile.model.tokenizer
    return load_tokenizer(name, revision=profile.model.revisions.get(name))


def load_tokenizer(name_or_path: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    """"tiny" -> the shipped tiny tokenizer; anything else -> ``AutoTokenizer`` on a hub id (at
    ``revision``, None: the hub's latest) or a local folder (never remote code), then the image tokens
    added if missing (see ``ensure_image_tokens``)."""
    if name_or_path == "tiny":
        return PreTrainedTokenizerFast.from_pretrained(TINY_TOKENIZER_DIR)
    path = Path(name_or_path).expanduser()
    if _looks_local(name_or_path) and not path.exists():
        raise FileNotFoundError(f"tokenizer path {str(path)!r} does not exist; {PAPER_TOKENIZER_HINT}")
    try:
        source = str(path) if path.exists() else name_or_path
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False,
                                                  revision=None if path.exists() else revision)
    except OSError as e:
        raise OSError(f"could not load tokenizer {name_or_path!r}; {PAPER_TOKENIZER_HINT}") from e
    added = ensure_image_tokens(tokenizer)
    if added:
        logger.info("added %d image token(s) to %s; the model's embeddings must be resized", added, name_or_path)
    return tokenizer


def tokenizer_fingerprint(name_or_path: str, revision: str | None = None) -> str:
    """sha256 over the tokenizer's files for "tiny" or a local folder (a rebuilt tokenizer gets a new one,
    so whatever was trained with the old vocabulary is not reused); a hub id is named by id and revision."""
    if name_or_path == "tiny":
        folder = TINY_TOKENIZER_DIR
    elif _looks_local(name_or_path) or Path(name_or_path).expanduser().is_dir():
        folder = Path(name_or_path).expanduser()
    else:
        return hashlib.sha256(f"{name_or_path}@{revision}".encode()).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(f for f in folder.iterdir() if f.is_file()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def _looks_local(name_or_path: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything absolute, relative-looking or deeper is a path.
    return name_or_path.startswith(("/", ".", "~")) or os.path.isabs(name_or_path) or name_or_path.count("/") > 1


def ensure_image_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the missing image tokens as special tokens; returns how many were added (the model's
    embedding matrix must then cover ``len(tokenizer)``). Raises if a harmony token is missing."""
    vocab = tokenizer.get_vocab()
    missing_harmony = [t for t in HARMONY_TOKENS if t not in vocab]
    if missing_harmony:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} lacks harmony token(s) {missing_harmony}; "
                         "it is not a gpt-oss (harmony) tokenizer")
    missing = [t for t in IMAGE_TOKENS if t not in vocab]
    if not missing:
        return 0
    return tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medkit.chat.tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="train the tiny tokenizer and write it")
    parser.add_argument("--out", type=Path, default=TINY_TOKENIZER_DIR, help="folder to write (default: shipped one)")
    args = parser.parse_args(argv)
    if not args.rebuild:
        parser.error("nothing to do; pass --rebuild")
    tokenizer = write_tiny_tokenizer(args.out)
    print(f"wrote a {len(tokenizer)}-token tokenizer to {args.out}")


if __name__ == "__main__":
    main()
