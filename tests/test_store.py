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


def test_lines_hold_id_prompt_hash_raw_parsed_answer_and_correctness(tmp_path):
    store = PredictionStore(tmp_path, "medqa", KEY)
    store.open(resume=False)
    mc = Prediction("q1", "h1", "<|channel|>final<|message|>B<|return|>", "B", parsed="B", correct=True)
    unparsed = Prediction("q2", "h2", "<|channel|>final<|message|>A or B<|return|>", "A or B", None, False)
    report = Prediction("r1", "h3", "<|channel|>final<|message|>No acute findings.<|return|>", "No acute findings.")
    store.append([mc, unparsed, report])
    lines = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert lines[0] == {"id": "q1", "prompt_hash": "h1", "raw": mc.raw, "final": "B", "parsed": "B", "correct": True}
    assert (lines[1]["parsed"], lines[1]["correct"]) == (None, False)
    assert (lines[2]["parsed"], lines[2]["correct"]) == (None, None)  # free text: no per-item answer to parse
    assert store.read() == {"q1": mc, "q2": unparsed, "r1": report}


def test_lines_written_before_parsed_and_correct_existed_still_read(tmp_path):
    store = PredictionStore(tmp_path, "medqa", KEY)
    store.open(resume=False)
    old = {"id": "a", "prompt_hash": "ha", "raw": "<|channel|>final<|message|>C<|return|>", "final": "C"}
    store.path.write_text(json.dumps(old) + "\n")
    assert store.read() == {"a": Prediction("a", "ha", old["raw"], "C", None, None)}
