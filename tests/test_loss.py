"""The supervised-token, chunked loss equals transformers' full-logits loss (value and gradients), and the
MoE router loss is added exactly when the config asks for router logits."""

import copy

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.models.gpt_oss.modeling_gpt_oss import load_balancing_loss_func

from medkit.chat import load_tokenizer
from medkit.model.build import build_tiny_model
from medkit.model.loss import supervised_lm_loss
from medkit.model.processor import IGNORE_INDEX
from medkit.profiles import load_profile


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tiny_model(load_profile("tiny"), load_tokenizer("tiny")).train()


def batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 2000, (2, 40))
    labels = ids.clone()
    labels[:, :15] = IGNORE_INDEX  # the prompt
    labels[1, 30:] = IGNORE_INDEX  # a shorter answer in row 1
    return ids, labels


def reference_loss(model, ids, labels, num_items_in_batch=None):
    """transformers' way: logits for every position, upcast, ForCausalLMLoss."""
    logits = model(input_ids=ids).logits
    return ForCausalLMLoss(logits, labels, model.config.text_config.vocab_size, num_items_in_batch=num_items_in_batch)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_items", [None, 57])
def test_chunked_supervised_loss_and_gradients_equal_the_full_logits_loss(model, num_items):
    ids, labels = batch()
    plain = copy.deepcopy(model)
    reference = reference_loss(plain, ids, labels, num_items)
    reference.backward()
    model.zero_grad()
    kwargs = {"num_items_in_batch": num_items} if num_items is not None else {}
    out = model(input_ids=ids, labels=labels, **kwargs)
    out.loss.backward()
    assert torch.allclose(out.loss, reference, atol=1e-6, rtol=1e-5)
    ours, theirs = grads(model), grads(plain)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6, rtol=1e-4), name
    model.zero_grad()


def test_chunk_size_does_not_change_the_loss(model):
    ids, labels = batch()
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        whole = supervised_lm_loss(hidden, model.lm_head, labels, chunk_tokens=10_000)
        for chunk in (1, 3, 7):  # 38 supervised positions: ragged last chunks
            assert torch.allclose(supervised_lm_loss(hidden, model.lm_head, labels, chunk_tokens=chunk), whole)


def test_only_supervised_positions_reach_the_unembedding(model, monkeypatch):
    ids, labels = batch()
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            model(input_ids=ids, labels=labels)
    finally:
        hook.remove()
    supervised = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert sum(seen) == supervised < ids.numel()  # never rows x length x vocab


def test_router_loss_is_added_when_router_logits_are_asked_for(model):
    ids, labels = batch()
    text = model.config.text_config
    with torch.no_grad():
        plain = model(input_ids=ids, labels=labels).loss
        text.output_router_logits = True
        try:
            routed = model(input_ids=ids, labels=labels)
            router_logits = model.model(input_ids=ids).router_logits
        finally:
            text.output_router_logits = False
    expected = text.router_aux_loss_coef * load_balancing_loss_func(
        router_logits, text.num_local_experts, text.num_experts_per_tok, None)
    assert len(router_logits) == text.num_hidden_layers and float(expected) > 0
    assert torch.allclose(routed.loss, plain + expected)


def test_a_batch_without_supervised_tokens_still_runs_the_head(model):
    """Under ZeRO-3 a rank that skipped the head would miss a gather and hang the others."""
    ids = torch.randint(5, 2000, (1, 12))
    labels = torch.full_like(ids, IGNORE_INDEX)
    calls = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
    finally:
        hook.remove()
    assert out.loss.item() == 0.0 and calls and calls[0] == 1
    assert model.lm_head.weight.grad is not None and torch.count_nonzero(model.lm_head.weight.grad) == 0
    model.zero_grad()
