"""The append-only prediction store: keys, torn lines, resume rules, prompt checks."""

import json

import pytest

from medkit.eval.store import Prediction, PredictionStore, StoreError, canonical_hash, check_prompt

KEY = {"model": {"weights_sha256": "abc"}, "decode": {"max_new_tokens": 8, "do_sample": False}}


def preds(*ids):
    return [Prediction(i, f"h{i}", f"<|channel|>final<|message|>{i}<|return|>", i) for i in ids]


def test_key_hash_is_order_independent_and_sensitive_to_every_field():
    assert canonical_hash({"a": 1, "b": [1, 2]}) == canonical_hash({"b": [1, 2], "a": 1})
    changed = {**KEY, "decode": {"max_new_tokens": 9, "do_sample": False}}
    assert PredictionStore("x", "b", KEY).path != PredictionStore("x", "b", changed).path


def test_append_read_roundtrip_and_key_file(tmp_path):
    store = PredictionStore(tmp_path, "medqa", KEY)
    assert store.open(resume=False) == {}
    store.append(preds("a", "b"))
    store.append(preds("c"))
    assert list(store.read()) == ["a", "b", "c"]
    assert json.loads(store.key_path.read_text()) == KEY


def test_existing_store_needs_resume(tmp_path):
    store = PredictionStore(tmp_path, "medqa", KEY)
    store.open(resume=False)
    store.append(preds("a"))
    with pytest.raises(StoreError, match="--resume"):
        PredictionStore(tmp_path, "medqa", KEY).open(resume=False)
    assert list(PredictionStore(tmp_path, "medqa", KEY).open(resume=True)) == ["a"]


def test_torn_last_line_is_cut_before_appending(tmp_path):
    store = PredictionStore(tmp_path, "medqa", KEY)
    store.open(resume=False)
    store.append(preds("a", "b"))
    with store.path.open("a") as f:
        f.write('{"id": "c", "prompt_ha')  # a kill in the middle of a write
    assert list(store.read()) == ["a", "b"]
    reopened = PredictionStore(tmp_path, "medqa", KEY)
    assert list(reopened.open(resume=True)) == ["a", "b"]
    reopened.append(preds("c"))
    assert list(reopened.read()) == ["a", "b", "c"]
    assert store.path.read_text().count("\n") == 3


def test_duplicate_ids_and_changed_prompts_are_errors(tmp_path):
    store = PredictionStore(tmp_path, "medqa", KEY)
    store.open(resume=False)
    store.append(preds("a", "a"))
    with pytest.raises(StoreError, match="stored twice"):
        store.read()
    with pytest.raises(StoreError, match="prompt"):
        check_prompt(preds("a")[0], "other", "medqa")
