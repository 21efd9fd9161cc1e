"""The tiny harmony tokenizer (training, determinism, the shipped files) and load_tokenizer."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from medkit.chat import (
    IMAGE_TOKENS,
    SPECIAL_TOKENS,
    TINY_TOKENIZER_DIR,
    TINY_VOCAB_SIZE,
    ensure_image_tokens,
    load_tokenizer,
    render_chat,
    train_tiny_tokenizer,
)
from medkit.chat.tokenizer import corpus_texts, fallback_texts, main

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def test_shipped_tiny_tokenizer_layout(tok):
    assert len(tok) == TINY_VOCAB_SIZE == 2048
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|return|>", "<|endoftext|>")
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    assert tok.encode("plain text") == tok.encode("plain text", add_special_tokens=False)  # no bos added


@pytest.mark.parametrize("neighbour", ["a", "end", "|", ">", "<", " ", "\n", "日本", "12", "<|", "img"])
def test_special_tokens_are_single_ids_never_split_from_text(tok, neighbour):
    for token in SPECIAL_TOKENS:
        token_id = tok.convert_tokens_to_ids(token)
        assert tok.encode(token) == [token_id]
        joined = tok.encode(neighbour + token + neighbour)
        assert joined == tok.encode(neighbour) + [token_id] + tok.encode(neighbour)


def test_decode_gives_back_exact_text(tok):
    text = "  Sjögren's  µm , 3.4 cm\n\n\tIMPRESSION : 日本語 🙂 don't ."
    assert tok.decode(tok.encode(text)) == text


def test_training_is_deterministic(tmp_path):
    texts = fallback_texts()
    assert len(texts) >= 200 and set("ABCDEFGHIJ0123456789") <= set("".join(texts))
    first, second = train_tiny_tokenizer(texts, vocab_size=600), train_tiny_tokenizer(texts, vocab_size=600)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    first.save_pretrained(tmp_path / "a")
    second.save_pretrained(tmp_path / "b")
    for name in TOKENIZER_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_shipped_files_equal_a_fresh_rebuild(tmp_path):
    main(["--rebuild", "--out", str(tmp_path)])
    for name in TOKENIZER_FILES:
        assert (tmp_path / name).read_bytes() == (TINY_TOKENIZER_DIR / name).read_bytes(), (
            f"{name} is stale; run `python -m medkit.chat.tokenizer --rebuild`"
        )


def test_rebuild_prefers_the_synthetic_corpus():
    from medkit.data.synthetic import iter_corpus_texts

    assert next(iter(corpus_texts())) == next(iter_corpus_texts(seed=0))


def test_rebuild_falls_back_without_the_synthetic_corpus(monkeypatch):
    monkeypatch.setattr("medkit.chat.tokenizer.importlib.util.find_spec", lambda name: None)
    assert list(corpus_texts()) == fallback_texts()


def test_cli_needs_rebuild_flag():
    with pytest.raises(SystemExit):
        main([])


def test_vocab_size_must_hold_specials_and_bytes():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tiny_tokenizer(["x"], vocab_size=100)


def test_load_tokenizer_missing_local_path_names_it(tmp_path):
    missing = tmp_path / "gpt-oss-20b"
    with pytest.raises(FileNotFoundError, match="gpt-oss-20b.*does not exist.*paper profile needs the gpt-oss"):
        load_tokenizer(str(missing))


def test_load_tokenizer_offline_hub_id_explains():
    # conftest keeps the hub offline, so an id that is not cached cannot load.
    with pytest.raises(OSError, match="medkit-test/no-such-tokenizer.*paper profile needs the gpt-oss tokenizer"):
        load_tokenizer("medkit-test/no-such-tokenizer")


def harmony_only_tokenizer() -> PreTrainedTokenizerFast:
    """A gpt-oss-like tokenizer: harmony special tokens, no image tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = [t for t in SPECIAL_TOKENS if t not in IMAGE_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(fallback_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|return|>", pad_token="<|endoftext|>")


def test_load_tokenizer_adds_missing_image_tokens(tmp_path):
    harmony_only_tokenizer().save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert len(loaded) == 400 + len(IMAGE_TOKENS)
    assert [loaded.convert_tokens_to_ids(t) for t in IMAGE_TOKENS] == [400, 401, 402]
    assert ensure_image_tokens(loaded) == 0
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
                {"role": "assistant", "content": "A"}]
    rendered = render_chat(messages, loaded, image_token_counts=[4])
    assert rendered.input_ids == loaded.encode(rendered.text)
    assert [rendered.input_ids[i] for i in rendered.image_positions[0]] == [402] * 4


def test_ensure_image_tokens_counts_and_rejects_non_harmony_tokenizers():
    tokenizer = harmony_only_tokenizer()
    assert ensure_image_tokens(tokenizer) == 3
    assert ensure_image_tokens(tokenizer) == 0
    plain = Tokenizer(models.BPE())
    plain.train_from_iterator(["abc"], trainers.BpeTrainer(vocab_size=50, show_progress=False))
    with pytest.raises(ValueError, match="not a gpt-oss"):
        ensure_image_tokens(PreTrainedTokenizerFast(tokenizer_object=plain))


def test_the_profile_pins_its_tokenizer_revision(monkeypatch):
    import transformers

    from medkit.chat.tokenizer import profile_tokenizer
    from medkit.profiles import load_profile

    calls = []

    def from_pretrained(source, **kwargs):
        calls.append((source, kwargs))
        raise OSError("stop here: only the arguments matter")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    profile = load_profile("paper")
    profile.model.revisions = {"openai/gpt-oss-20b": "0123abcd"}
    with pytest.raises(OSError):
        profile_tokenizer(profile)
    assert calls == [("openai/gpt-oss-20b", {"trust_remote_code": False, "revision": "0123abcd"})]
