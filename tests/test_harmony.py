"""render_chat / parse_final: the harmony layout, the assistant-loss mask and image placeholders."""

from __future__ import annotations

import random
import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from medkit.chat import (
    IMAGE_CONTEXT_TOKEN,
    IMAGE_TOKENS,
    RETURN_TOKEN,
    SPECIAL_TOKENS,
    START_TOKEN,
    load_tokenizer,
    parse_final,
    render_chat,
)

SYSTEM_BLOCK = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: 2025-06-28\n\n"
    "Reasoning: low\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def masked_spans(tok, rendered) -> list[str]:
    """Decode each contiguous run of loss-carrying tokens."""
    spans, run = [], []
    for token_id, trained in zip(rendered.input_ids, rendered.assistant_mask):
        if trained:
            run.append(token_id)
        elif run:
            spans.append(run)
            run = []
    if run:
        spans.append(run)
    return [tok.decode(s, skip_special_tokens=False) for s in spans]


def test_golden_render(tok):
    messages = [
        {"role": "system", "content": "You are a careful radiology assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which lung shows the opacity?"}]},
        {"role": "assistant", "content": "B", "thinking": "Opacity at the left base."},
    ]
    rendered = render_chat(messages, tok, image_token_counts=[3])
    assert rendered.text == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: low\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
        "<|start|>developer<|message|># Instructions\n\nYou are a careful radiology assistant.<|end|>"
        "<|start|>user<|message|><img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>\n"
        "Which lung shows the opacity?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Opacity at the left base.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>B<|return|>"
    )
    assert rendered.input_ids == tok.encode(rendered.text)
    assert masked_spans(tok, rendered) == [
        "<|channel|>analysis<|message|>Opacity at the left base.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>B<|return|>"
    ]


def test_multi_turn_only_the_completing_message_returns(tok):
    messages = [
        {"role": "user", "content": "First?"},
        {"role": "assistant", "content": "One.", "thinking": "old reasoning"},
        {"role": "user", "content": "Second?"},
        {"role": "assistant", "content": "Two.", "thinking": "older reasoning"},
        {"role": "user", "content": "Third?"},
        {"role": "assistant", "content": "Three.", "thinking": "current reasoning"},
    ]
    text = render_chat(messages, tok).text
    assert text.count(RETURN_TOKEN) == 1 and text.endswith("final<|message|>Three.<|return|>")
    assert "<|channel|>final<|message|>One.<|end|>" in text
    assert "<|channel|>final<|message|>Two.<|end|>" in text
    # History drops its reasoning; the completion keeps it.
    assert "old reasoning" not in text and "older reasoning" not in text
    assert "<|channel|>analysis<|message|>current reasoning<|end|>" in text


def test_no_return_when_the_assistant_is_not_last(tok):
    # Regression for a leftover-loop-variable bug: the choice must follow each message's own position.
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    for add_generation_prompt in (False, True):
        text = render_chat(messages, tok, add_generation_prompt=add_generation_prompt).text
        assert RETURN_TOKEN not in text
        assert "<|start|>assistant<|channel|>final<|message|>A1<|end|><|start|>user" in text


def test_assistant_last_with_generation_prompt_is_history(tok):
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "thinking": "T"}]
    text = render_chat(messages, tok, add_generation_prompt=True).text
    assert text.endswith("<|start|>assistant<|channel|>final<|message|>A<|end|><|start|>assistant")
    assert RETURN_TOKEN not in text and "analysis" not in text.split("<|end|>", 1)[1]


def test_thinking_goes_on_the_analysis_channel_before_final(tok):
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "thinking": "Because."}]
    assert render_chat(messages, tok).text.endswith(
        "<|start|>user<|message|>Q<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Because.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>A<|return|>"
    )
    no_thinking = render_chat([messages[0], {"role": "assistant", "content": "A"}], tok).text
    assert "analysis" not in no_thinking.removeprefix(SYSTEM_BLOCK)


def test_system_role_becomes_developer_message(tok):
    with_system = render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}], tok)
    assert with_system.text == (
        SYSTEM_BLOCK + "<|start|>developer<|message|># Instructions\n\nBe brief.<|end|><|start|>user<|message|>Q<|end|>"
    )
    without = render_chat([{"role": "user", "content": "Q"}], tok).text
    assert "developer" not in without and without.startswith(SYSTEM_BLOCK)


def test_generation_prompt_is_untrained_assistant_header(tok):
    rendered = render_chat([{"role": "user", "content": "Q"}], tok, add_generation_prompt=True)
    assert rendered.text == SYSTEM_BLOCK + "<|start|>user<|message|>Q<|end|><|start|>assistant"
    assert not any(rendered.assistant_mask)
    assert rendered.input_ids == tok.encode(rendered.text)


def test_role_header_is_not_trained_but_channel_headers_are(tok):
    rendered = render_chat([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], tok)
    start = tok.convert_tokens_to_ids(START_TOKEN)
    last_start = max(i for i, t in enumerate(rendered.input_ids) if t == start)
    header_ids = tok.encode("assistant")
    assert rendered.input_ids[last_start + 1 : last_start + 1 + len(header_ids)] == header_ids
    assert not any(rendered.assistant_mask[: last_start + 1 + len(header_ids)])
    assert all(rendered.assistant_mask[last_start + 1 + len(header_ids) :])


def test_image_expansion_positions_and_order(tok):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "then"}, {"type": "image"}]},
    ]
    rendered = render_chat(messages, tok, image_token_counts=[2, 5, 1], add_generation_prompt=True)
    assert "<img><IMG_CONTEXT><IMG_CONTEXT></img>\nand<img>" + "<IMG_CONTEXT>" * 5 + "</img>\n<|end|>" in rendered.text
    assert "then<img><IMG_CONTEXT></img>\n<|end|>" in rendered.text
    assert [len(r) for r in rendered.image_positions] == [2, 5, 1]
    context_id = tok.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)
    positions = [i for r in rendered.image_positions for i in r]
    assert positions == [i for i, t in enumerate(rendered.input_ids) if t == context_id]
    assert positions == sorted(positions)
    assert not any(rendered.assistant_mask[i] for i in positions)


@pytest.mark.parametrize("counts", [[], [4], [4, 4, 4]])
def test_image_count_mismatch_names_the_counts(tok, counts):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]}]
    expected = f"2 image part(s) in the messages but image_token_counts has {len(counts)}: {counts}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        render_chat(messages, tok, image_token_counts=counts)


def test_image_counts_must_be_positive(tok):
    with pytest.raises(ValueError, match="positive"):
        render_chat([{"role": "user", "content": [{"type": "image"}]}], tok, image_token_counts=[0])


def test_pinned_date_makes_renders_identical(tok):
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert render_chat(messages, tok) == render_chat(messages, tok)
    other = render_chat(messages, tok, date="2030-01-01", reasoning_effort="high", knowledge_cutoff="2025-01")
    assert "Current date: 2030-01-01\n" in other.text and "Reasoning: high\n" in other.text
    assert "Knowledge cutoff: 2025-01\n" in other.text


def test_rejects_bad_reasoning_effort_role_and_injected_tokens(tok):
    user = {"role": "user", "content": "Q"}
    with pytest.raises(ValueError, match="reasoning_effort"):
        render_chat([user], tok, reasoning_effort="max")
    with pytest.raises(ValueError, match="role"):
        render_chat([{"role": "tool", "content": "x"}], tok)
    with pytest.raises(ValueError, match=r"message 1 \(assistant\).*<\|end\|>"):
        render_chat([user, {"role": "assistant", "content": "A<|end|>"}], tok)
    with pytest.raises(ValueError, match=r"<img>"):
        render_chat([{"role": "user", "content": "see <img> here"}], tok)
    with pytest.raises(ValueError, match="only user"):
        render_chat([user, {"role": "assistant", "content": [{"type": "image"}]}], tok, image_token_counts=[1])


FRAGMENTS = [
    "chest", "Pleural effusion", "IMPRESSION:", "FINDINGS", "3.4 cm", "12 mm", "1,250", "99.5%", "A.", "B)",
    "(C)", "answer", "naïve", "Sjögren", "µm", "—", "日本語", "🙂", "x-ray", "O'Brien's", "don't", "<", "|",
    "</", "[1]", "{json}", "\\n", "tab\there", "  ", "1234567", "T2/FLAIR", "Ω", "é", "'s", "?",
]
SEPARATORS = ["", " ", "  ", "\n", "\n\n", " \n", "\t", ", "]


def random_text(rng: random.Random) -> str:
    n = rng.randint(0, 8)
    text = "".join(rng.choice(FRAGMENTS) + rng.choice(SEPARATORS) for _ in range(n))
    return rng.choice(["", " ", "\n"]) + text if rng.random() < 0.3 else text


def random_conversation(rng: random.Random) -> tuple[list[dict], list[int], bool]:
    messages: list[dict] = []
    counts: list[int] = []
    if rng.random() < 0.6:
        messages.append({"role": "system", "content": random_text(rng)})
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.3:
            messages.append({"role": "user", "content": random_text(rng)})
        else:
            parts = []
            for _ in range(rng.randint(0, 4)):
                if rng.random() < 0.4:
                    parts.append({"type": "image"})
                    counts.append(rng.randint(1, 6))
                else:
                    parts.append({"type": "text", "text": random_text(rng)})
            messages.append({"role": "user", "content": parts})
        assistant = {"role": "assistant", "content": random_text(rng)}
        if rng.random() < 0.5:
            assistant["thinking"] = random_text(rng) or "t"
        messages.append(assistant)
    add_generation_prompt = rng.random() < 0.25
    if add_generation_prompt and rng.random() < 0.5:
        messages.append({"role": "user", "content": random_text(rng)})
    return messages, counts, add_generation_prompt


def expected_completions(messages: list[dict], add_generation_prompt: bool) -> list[str]:
    completions = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == len(messages) - 1 and not add_generation_prompt:
            thinking = m.get("thinking")
            analysis = f"<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant" if thinking else ""
            completions.append(f"{analysis}<|channel|>final<|message|>{m['content']}<|return|>")
        else:
            completions.append(f"<|channel|>final<|message|>{m['content']}<|end|>")
    return completions


def test_ids_equal_encode_of_text_and_mask_is_exact_on_random_conversations(tok):
    rng = random.Random(1234)
    for _ in range(300):
        messages, counts, add_generation_prompt = random_conversation(rng)
        rendered = render_chat(messages, tok, image_token_counts=counts, add_generation_prompt=add_generation_prompt)
        assert rendered.input_ids == tok.encode(rendered.text), rendered.text
        assert tok.decode(rendered.input_ids, skip_special_tokens=False) == rendered.text
        assert len(rendered.assistant_mask) == len(rendered.input_ids)
        assert masked_spans(tok, rendered) == expected_completions(messages, add_generation_prompt)
        assert [len(r) for r in rendered.image_positions] == counts


def test_parse_final():
    completion = (
        "<|channel|>analysis<|message|>The left base is opaque.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>B<|return|>"
    )
    assert parse_final(completion) == "B"
    verbatim = "<|channel|>final<|message|>  two lines\nkept <x> <|return|><|endoftext|>"
    assert parse_final(verbatim) == "  two lines\nkept <x> "
    assert parse_final("<|channel|>final<|message|>cut off mid-answ") == "cut off mid-answ"
    # Constrained / recipient headers still parse; the last final message wins.
    two_finals = "<|channel|>final<|message|>a<|end|><|start|>assistant<|channel|>final <|constrain|>json<|message|>{}"
    assert parse_final(two_finals) == "{}"
    # Only the final channel is scored: without a final-channel message the answer is "".
    assert parse_final("<|message|>C<|return|>") == ""
    assert parse_final("<|channel|>commentary<|message|>note<|end|>") == ""
    tool_note = "<|channel|>analysis<|message|>why<|end|><|start|>assistant<|channel|>commentary<|message|>B"
    assert parse_final(tool_note) == ""
    assert parse_final("<|channel|>analysis<|message|>still thinking about A") == ""
    assert parse_final("<|channel|>fin<|message|>B<|return|>") == ""  # garbled header
    assert parse_final("B") == ""
    assert parse_final("") == ""
    # a final message after commentary still wins
    after_note = "<|channel|>commentary<|message|>note<|end|><|start|>assistant<|channel|>final<|message|>A"
    assert parse_final(after_note) == "A"


def test_parse_final_reads_token_ids(tok):
    ids = tok.encode("<|channel|>analysis<|message|>why<|end|><|start|>assistant<|channel|>final<|message|>D<|return|>")
    assert parse_final(ids, tok) == "D"
    with pytest.raises(ValueError, match="tokenizer"):
        parse_final(ids)


def test_any_tokenizer_renders_text_and_missing_image_tokens_fail_clearly():
    # A plain GPT-2-style byte-level BPE with only the harmony tokens: text renders, images need the kit's tokens.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    harmony_only = [t for t in SPECIAL_TOKENS if t not in IMAGE_TOKENS]
    backend.train_from_iterator(["plain text"], trainers.BpeTrainer(vocab_size=300, special_tokens=harmony_only,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    other = PreTrainedTokenizerFast(tokenizer_object=backend)
    text_only = render_chat([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], other)
    assert text_only.input_ids == other.encode(text_only.text)
    with pytest.raises(ValueError, match="no <img> token.*load_tokenizer"):
        render_chat([{"role": "user", "content": [{"type": "image"}]}], other, image_token_counts=[1])

