"""The harmony chat format of gpt-oss, as medkit uses it: token names, rendering and parsing.

Owns the special-token names (harmony's and the kit's image tokens), ``render_chat`` — the one
function that turns schema messages (``medkit.data.schema``) into token ids, an exact assistant-loss
mask and the image placeholder positions — and ``parse_final``, which reads the answer out of a
generated completion.

Layout follows OpenAI's harmony spec (cookbook "OpenAI harmony response format")::

    <|start|>system<|message|>{identity, knowledge cutoff, date, reasoning effort, valid channels}<|end|>
    <|start|>developer<|message|># Instructions\\n\\n{schema system text}<|end|>
    <|start|>user<|message|><img><IMG_CONTEXT>..</img>\\n{text}<|end|>
    <|start|>assistant<|channel|>final<|message|>{earlier answer}<|end|>
    <|start|>user<|message|>{text}<|end|>
    <|start|>assistant<|channel|>analysis<|message|>{thinking}<|end|>
    <|start|>assistant<|channel|>final<|message|>{answer}<|return|>

(no newlines between messages). The developer message ends right after the instructions, as in the
spec's example.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from medkit.data.schema import content_parts

START_OF_TEXT_TOKEN = "<|startoftext|>"
END_OF_TEXT_TOKEN = "<|endoftext|>"
RETURN_TOKEN = "<|return|>"
CONSTRAIN_TOKEN = "<|constrain|>"
CHANNEL_TOKEN = "<|channel|>"
START_TOKEN = "<|start|>"
END_TOKEN = "<|end|>"
MESSAGE_TOKEN = "<|message|>"
CALL_TOKEN = "<|call|>"
# In gpt-oss id order (199998, 199999, 200002, 200003, 200005, 200006, 200007, 200008, 200012).
HARMONY_TOKENS = (
    START_OF_TEXT_TOKEN,
    END_OF_TEXT_TOKEN,
    RETURN_TOKEN,
    CONSTRAIN_TOKEN,
    CHANNEL_TOKEN,
    START_TOKEN,
    END_TOKEN,
    MESSAGE_TOKEN,
    CALL_TOKEN,
)

IMAGE_START_TOKEN = "<img>"
IMAGE_END_TOKEN = "</img>"
IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"  # one per visual token; the model swaps in projected features
IMAGE_TOKENS = (IMAGE_START_TOKEN, IMAGE_END_TOKEN, IMAGE_CONTEXT_TOKEN)

SPECIAL_TOKENS = HARMONY_TOKENS + IMAGE_TOKENS

# The spec says the identity line should always stay this one; the medical persona goes in the
# developer message (the schema's "system" role).
MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_DATE = "2025-06-28"  # pinned: a wall-clock date would make every render irreproducible
DEFAULT_KNOWLEDGE_CUTOFF = "2024-06"
REASONING_EFFORTS = ("low", "medium", "high")
VALID_CHANNELS = "# Valid channels: analysis, commentary, final. Channel must be included for every message."

# Tokens that close a message in a completion: message ends, stop tokens, or a new message / padding.
_CLOSERS = (END_TOKEN, RETURN_TOKEN, CALL_TOKEN, START_TOKEN, END_OF_TEXT_TOKEN)
_COMPLETION_MESSAGE = re.compile(
    r"(?:" + re.escape(CHANNEL_TOKEN) + r"(?P<channel>[^\s<]*)[^<]*(?:" + re.escape(CONSTRAIN_TOKEN) + r"[^<]*)?)?"
    + re.escape(MESSAGE_TOKEN)
    + r"(?P<content>.*?)(?=" + "|".join(map(re.escape, _CLOSERS)) + r"|\Z)",
    re.DOTALL,
)


@dataclass(frozen=True)
class RenderedChat:
    """One rendered conversation.

    ``input_ids == tokenizer.encode(text)`` holds exactly; ``assistant_mask[i]`` is True where token ``i``
    is part of an assistant completion (loss goes there); ``image_positions[k]`` is the range of
    ``input_ids`` indices holding image ``k``'s ``<IMG_CONTEXT>`` placeholders.
    """

    input_ids: list[int]
    assistant_mask: list[bool]
    image_positions: list[range]
    text: str


class _TokenBuilder:
    """Appends special tokens by id and text by ``encode``, tracking the mask and the display text.

    Text is buffered until the next special token, so every ``encode`` call covers exactly the text
    between two special tokens. Special tokens are split out before BPE runs, so this gives the same
    ids as encoding the whole rendered string, and the mask follows token boundaries exactly.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.mask: list[bool] = []
        self.pieces: list[str] = []
        self.image_positions: list[range] = []
        self._pending: list[str] = []
        self._pending_trained = False

    def special(self, token: str, *, trained: bool, count: int = 1) -> range:
        self._flush()
        token_id = special_token_id(self.tokenizer, token)
        start = len(self.ids)
        self.ids += [token_id] * count
        self.mask += [trained] * count
        self.pieces.append(token * count)
        return range(start, len(self.ids))

    def text(self, text: str, *, trained: bool) -> None:
        if self._pending and trained != self._pending_trained:
            raise RuntimeError("trained and untrained text must be separated by a special token")
        self._pending.append(text)
        self._pending_trained = trained

    def _flush(self) -> None:
        text = "".join(self._pending)
        self._pending = []
        if text:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self.ids += ids
            self.mask += [self._pending_trained] * len(ids)
            self.pieces.append(text)

    def build(self) -> RenderedChat:
        self._flush()
        return RenderedChat(self.ids, self.mask, self.image_positions, "".join(self.pieces))


def special_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The single id of ``token``; a clear error when the tokenizer lacks it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"tokenizer has no {token} token; load it with medkit.chat.load_tokenizer")
    return token_id


def render_chat(
    messages: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    image_token_counts: Sequence[int] = (),
    add_generation_prompt: bool = False,
    date: str = DEFAULT_DATE,
    reasoning_effort: str = "low",
    knowledge_cutoff: str = DEFAULT_KNOWLEDGE_CUTOFF,
) -> RenderedChat:
    """Render schema messages as harmony tokens for any tokenizer that has the special tokens.

    The schema's "system" role becomes the harmony developer message. An assistant message that ends
    the conversation (and is not followed by a generation prompt) is the completion being trained: it
    carries its ``thinking`` on the analysis channel and ends with ``<|return|>``. Every other assistant
    message is history: final channel only, ended by ``<|end|>`` (harmony drops past reasoning). Image
    part ``k`` expands to ``<img>`` + ``<IMG_CONTEXT>`` * ``image_token_counts[k]`` + ``</img>`` + "\\n".
    """
    if reasoning_effort not in REASONING_EFFORTS:
        raise ValueError(f"reasoning_effort must be one of {REASONING_EFFORTS}, got {reasoning_effort!r}")
    check_image_token_counts(messages, image_token_counts)
    reserved = _special_token_strings(tokenizer)
    builder = _TokenBuilder(tokenizer)
    _add_system(builder, date, reasoning_effort, knowledge_cutoff)
    counts = iter(image_token_counts)
    for index, message in enumerate(messages):
        role = message.get("role")
        where = f"message {index} ({role})"
        if role == "system":
            _add_developer(builder, _plain_text(message, where, reserved))
        elif role == "user":
            _add_user(builder, message, where, reserved, counts)
        elif role == "assistant":
            # Decided from this message's own position, never from a variable left over by another loop.
            completes = index == len(messages) - 1 and not add_generation_prompt
            _add_assistant(builder, message, where, reserved, completes=completes)
        else:
            raise ValueError(f"{where}: role must be system, user or assistant")
    if add_generation_prompt:
        _add_header(builder, "assistant", trained=False)
    return builder.build()


def check_image_token_counts(messages: Sequence[dict[str, Any]], image_token_counts: Sequence[int]) -> None:
    """Raise ValueError unless there is one positive count per image part, in order."""
    n_images = sum(1 for m in messages for p in content_parts(m) if p.get("type") == "image")
    if n_images != len(image_token_counts):
        raise ValueError(
            f"{n_images} image part(s) in the messages but image_token_counts has "
            f"{len(image_token_counts)}: {list(image_token_counts)}"
        )
    if any(not isinstance(n, int) or n < 1 for n in image_token_counts):
        raise ValueError(f"image_token_counts must be positive integers, got {list(image_token_counts)}")


def _special_token_strings(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    return {t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | set(SPECIAL_TOKENS)


def _checked(text: str, where: str, reserved: set[str]) -> str:
    # A special-token string inside content would be parsed as that token: a format injection and a
    # mask that no longer matches the conversation.
    found = sorted(t for t in reserved if t in text)
    if found:
        raise ValueError(f"{where}: content contains special token(s) {found}")
    return text


def _plain_text(message: dict[str, Any], where: str, reserved: set[str]) -> str:
    parts = content_parts(message)
    if any(p.get("type") != "text" for p in parts):
        raise ValueError(f"{where}: only user messages may hold images")
    return _checked("".join(p["text"] for p in parts), where, reserved)


def _add_header(builder: _TokenBuilder, role: str, *, trained: bool) -> None:
    builder.special(START_TOKEN, trained=trained)
    builder.text(role, trained=trained)


def _add_system(builder: _TokenBuilder, date: str, reasoning_effort: str, knowledge_cutoff: str) -> None:
    body = (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: {knowledge_cutoff}\nCurrent date: {date}\n\n"
        f"Reasoning: {reasoning_effort}\n\n{VALID_CHANNELS}"
    )
    _add_header(builder, "system", trained=False)
    builder.special(MESSAGE_TOKEN, trained=False)
    builder.text(body, trained=False)
    builder.special(END_TOKEN, trained=False)


def _add_developer(builder: _TokenBuilder, instructions: str) -> None:
    _add_header(builder, "developer", trained=False)
    builder.special(MESSAGE_TOKEN, trained=False)
    builder.text(f"# Instructions\n\n{instructions}", trained=False)
    builder.special(END_TOKEN, trained=False)


def _add_user(
    builder: _TokenBuilder, message: dict[str, Any], where: str, reserved: set[str], counts: Iterator[int]
) -> None:
    _add_header(builder, "user", trained=False)
    builder.special(MESSAGE_TOKEN, trained=False)
    for part in content_parts(message):
        if part.get("type") == "image":
            builder.special(IMAGE_START_TOKEN, trained=False)
            builder.image_positions.append(builder.special(IMAGE_CONTEXT_TOKEN, trained=False, count=next(counts)))
            builder.special(IMAGE_END_TOKEN, trained=False)
            builder.text("\n", trained=False)
        else:
            builder.text(_checked(part["text"], where, reserved), trained=False)
    builder.special(END_TOKEN, trained=False)


def _add_assistant(
    builder: _TokenBuilder, message: dict[str, Any], where: str, reserved: set[str], *, completes: bool
) -> None:
    answer = _plain_text(message, where, reserved)
    thinking = message.get("thinking") if completes else None
    # The role header is given (the prompt ends with it); everything after it is the completion.
    _add_header(builder, "assistant", trained=False)
    if thinking:
        _add_channel_message(builder, "analysis", _checked(thinking, where, reserved), END_TOKEN)
        _add_header(builder, "assistant", trained=True)
    _add_channel_message(builder, "final", answer, RETURN_TOKEN if completes else END_TOKEN)


def _add_channel_message(builder: _TokenBuilder, channel: str, content: str, terminator: str) -> None:
    builder.special(CHANNEL_TOKEN, trained=True)
    builder.text(channel, trained=True)
    builder.special(MESSAGE_TOKEN, trained=True)
    builder.text(content, trained=True)
    builder.special(terminator, trained=True)


def parse_final(completion: str | Sequence[int], tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The answer in a generated completion: the content of its last ``final``-channel message.

    ``completion`` is text decoded with special tokens kept, or token ids (then ``tokenizer`` is
    required). Only the final channel is ever the answer: without a final-channel message (analysis or
    commentary only, a message with no channel, a garbled header, generation cut off before the final
    channel, or no ``<|message|>`` at all) the result is "". Content is returned verbatim, up to the
    first closing token (``<|end|>``, ``<|return|>``, ``<|call|>``, ``<|start|>``, ``<|endoftext|>``)
    or the end of the text.
    """
    if not isinstance(completion, str):
        if tokenizer is None:
            raise ValueError("parse_final needs the tokenizer to read token ids")
        completion = tokenizer.decode(list(completion), skip_special_tokens=False)
    finals = [m["content"] for m in _COMPLETION_MESSAGE.finditer(completion) if m["channel"] == "final"]
    return finals[-1] if finals else ""
