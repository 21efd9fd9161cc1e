"""Harmony chat format and tokenizers: ``render_chat`` / ``parse_final`` and ``load_tokenizer``."""

from medkit.chat.harmony import (
    CALL_TOKEN,
    CHANNEL_TOKEN,
    CONSTRAIN_TOKEN,
    DEFAULT_DATE,
    DEFAULT_KNOWLEDGE_CUTOFF,
    END_OF_TEXT_TOKEN,
    END_TOKEN,
    HARMONY_TOKENS,
    IMAGE_CONTEXT_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_START_TOKEN,
    IMAGE_TOKENS,
    MESSAGE_TOKEN,
    MODEL_IDENTITY,
    REASONING_EFFORTS,
    RETURN_TOKEN,
    SPECIAL_TOKENS,
    START_OF_TEXT_TOKEN,
    START_TOKEN,
    RenderedChat,
    check_image_token_counts,
    parse_final,
    render_chat,
    special_token_id,
)

# The tokenizer names load on first use, so `python -m medkit.chat.tokenizer` does not import that
# module twice (once through this package, once as __main__).
_TOKENIZER_NAMES = (
    "TINY_TOKENIZER_DIR",
    "TINY_VOCAB_SIZE",
    "ensure_image_tokens",
    "load_tokenizer",
    "train_tiny_tokenizer",
    "write_tiny_tokenizer",
)


def __getattr__(name: str):
    if name in _TOKENIZER_NAMES:
        from medkit.chat import tokenizer

        return getattr(tokenizer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CALL_TOKEN",
    "CHANNEL_TOKEN",
    "CONSTRAIN_TOKEN",
    "DEFAULT_DATE",
    "DEFAULT_KNOWLEDGE_CUTOFF",
    "END_OF_TEXT_TOKEN",
    "END_TOKEN",
    "HARMONY_TOKENS",
    "IMAGE_CONTEXT_TOKEN",
    "IMAGE_END_TOKEN",
    "IMAGE_START_TOKEN",
    "IMAGE_TOKENS",
    "MESSAGE_TOKEN",
    "MODEL_IDENTITY",
    "REASONING_EFFORTS",
    "RETURN_TOKEN",
    "SPECIAL_TOKENS",
    "START_OF_TEXT_TOKEN",
    "START_TOKEN",
    "TINY_TOKENIZER_DIR",
    "TINY_VOCAB_SIZE",
    "RenderedChat",
    "check_image_token_counts",
    "ensure_image_tokens",
    "load_tokenizer",
    "parse_final",
    "render_chat",
    "special_token_id",
    "train_tiny_tokenizer",
    "write_tiny_tokenizer",
]
