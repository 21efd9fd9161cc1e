"""Packing: a sample packed behind another sees exactly what it sees alone (attention, positions, images),
no loss crosses samples, and packing and length-grouped batching are deterministic."""

import pytest
import torch
from PIL import Image

from medkit.chat import IMAGE_CONTEXT_TOKEN, load_tokenizer
from medkit.data.schema import Sample
from medkit.model.build import build_tiny_model
from medkit.model.processor import IGNORE_INDEX, EncodedSample, MedGPTOssProcessor
from medkit.profiles import load_profile
from transformers import GptOssConfig

from medkit.training.packing import (
    PackingCollator,
    SampleTooLongError,
    first_fit_decreasing,
    length_grouped_sampler,
    pack_samples,
)
from medkit.model.attention import block_packed_masks, dense_packed_masks, sequence_ids

TEXT_CONFIG = GptOssConfig(num_hidden_layers=2, sliding_window=4, attn_implementation="eager")


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    profile = load_profile("tiny")
    tokenizer = load_tokenizer("tiny")
    model = build_tiny_model(profile, tokenizer).eval()
    return tokenizer, model, MedGPTOssProcessor.for_model(model.config, tokenizer, profile)


def image_sample(root, sample_id: str, sizes, question: str, answer: str) -> Sample:
    names = []
    for i, size in enumerate(sizes):
        name = f"{sample_id}-{i}.png"
        Image.effect_noise(size, 30 + 10 * i).convert("RGB").save(root / name)
        names.append(name)
    images = [{"type": "image"} for _ in names]
    return Sample(
        id=sample_id,
        images=names,
        messages=[
            {"role": "user", "content": [*images, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ],
    )


@pytest.fixture(scope="module")
def encoded(parts, tmp_path_factory):
    _, _, processor = parts
    root = tmp_path_factory.mktemp("packing")
    a = image_sample(root, "case-a", [(64, 64)], "Describe the film.", "Clear lungs, no effusion.")
    b = image_sample(root, "case-b", [(200, 100), (64, 64)], "Compare both views.", "Right lower lobe opacity.")
    return processor.encode(a, root), processor.encode(b, root)


def fake_sample(sample_id: str, length: int) -> EncodedSample:
    ids = torch.arange(length) + 10
    return EncodedSample(sample_id, ids, ids.clone(), torch.zeros(0, 3, 8, 8), [])


def row_order(row: torch.Tensor, samples) -> list[EncodedSample]:
    """The samples in the order the collator laid them into ``row``."""
    order, start = [], 0
    while len(order) < len(samples):
        nxt = next(s for s in samples if s not in order and torch.equal(row[start : start + len(s.input_ids)], s.input_ids))
        order.append(nxt)
        start += len(nxt.input_ids)
    return order


def test_every_packed_sample_has_its_solo_logits(parts, encoded):
    tokenizer, model, _ = parts
    a, b = encoded
    # B must outrun GptOss's sliding window so its sliding and full layers are both exercised
    assert len(b.input_ids) > model.config.text_config.sliding_window
    batch = PackingCollator(tokenizer.pad_token_id, len(a.input_ids) + len(b.input_ids))([a, b])
    assert batch["input_ids"].shape[0] == 1
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        start = 0
        for sample in row_order(batch["input_ids"][0], [a, b]):
            alone = model(input_ids=sample.input_ids[None], pixel_values=sample.pixel_values).logits[0]
            assert torch.allclose(packed[start : start + len(sample.input_ids)], alone, atol=1e-5), sample.sample_id
            start += len(sample.input_ids)


def test_packed_b_after_a_matches_b_alone(parts, encoded):
    """The order that matters: B placed after A, so A's tokens precede B's in the row."""
    tokenizer, model, _ = parts
    a, b = encoded
    row = torch.cat([a.input_ids, b.input_ids])[None]
    positions = torch.cat([torch.arange(len(a.input_ids)), torch.arange(len(b.input_ids))])[None]
    pixels = torch.cat([a.pixel_values, b.pixel_values])
    with torch.no_grad():
        # the model builds the masks from the positions itself (the collator ships none)
        packed = model(input_ids=row, position_ids=positions, pixel_values=pixels).logits
        alone = model(input_ids=b.input_ids[None], pixel_values=b.pixel_values).logits[0]
        # control: a plain causal mask over the row (what GptOss 5.23 builds by itself, since it does not
        # hand position_ids to its mask builders) lets B attend to A, and its logits change
        causal = torch.ones_like(row)
        leaky = model(input_ids=row, position_ids=positions, attention_mask=causal,
                      pixel_values=pixels).logits[0, len(a.input_ids) :]
    packed = packed[0, len(a.input_ids) :]
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(leaky, alone, atol=1e-3)


def test_position_ids_restart_per_sample():
    samples = [fake_sample("x", 5), fake_sample("y", 3), fake_sample("z", 2)]
    batch = PackingCollator(0, 8)(samples)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4, 5]]
    assert batch["input_ids"][1, :2].tolist() == [10, 11] and batch["input_ids"][1, 2:].eq(0).all()


def test_cross_boundary_labels_are_ignored_and_supervision_kept():
    samples = [fake_sample("x", 5), fake_sample("y", 3)]
    batch = PackingCollator(0, 8)(samples)
    labels = batch["labels"][0]
    # ForCausalLMLoss shifts labels left: position t is scored against labels[t + 1]
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[1:]
    assert shifted[4] == IGNORE_INDEX  # x's last token must not be trained to predict y's first
    supervised = int((labels != IGNORE_INDEX).sum())
    # every sample loses only its first label, which no token of its own predicts
    assert supervised == sum(int((s.labels[1:] != IGNORE_INDEX).sum()) for s in samples)


def test_real_samples_keep_all_supervised_tokens(parts, encoded):
    tokenizer, model, _ = parts
    a, b = encoded
    batch = PackingCollator(tokenizer.pad_token_id, 4096)([a, b])
    assert a.labels[0] == IGNORE_INDEX and b.labels[0] == IGNORE_INDEX  # rows start with system/user tokens
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == sum(int((s.labels != IGNORE_INDEX).sum()) for s in (a, b))


def test_pixel_values_follow_placeholder_order(parts, encoded):
    tokenizer, model, _ = parts
    a, b = encoded
    batch = PackingCollator(tokenizer.pad_token_id, len(a.input_ids) + len(b.input_ids))([a, b])
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)
    first, second = row_order(batch["input_ids"][0], [a, b])
    assert first is b  # longest first, so the tiles must be B's then A's, not the batch order
    assert torch.equal(batch["pixel_values"], torch.cat([first.pixel_values, second.pixel_values]))
    n_placeholders = int((batch["input_ids"] == image_token).sum())
    assert n_placeholders == batch["pixel_values"].shape[0] * model.config.tokens_per_tile


def test_too_long_sample_is_refused_by_id():
    with pytest.raises(SampleTooLongError, match=r"sample case-long: 9 tokens exceed the packed row length 8"):
        pack_samples([fake_sample("ok", 3), fake_sample("case-long", 9)], max_length=8)


def test_packing_is_deterministic_and_respects_the_limit():
    lengths = [int(x) for x in torch.randint(1, 100, (200,), generator=torch.Generator().manual_seed(1))]
    bins = first_fit_decreasing(lengths, 128)
    assert bins == first_fit_decreasing(list(lengths), 128)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert len(bins) <= -(-sum(lengths) // 128) + 2  # FFD is near the lower bound on these sizes


def test_length_grouped_sampler_groups_lengths_and_is_seeded():
    gen = torch.Generator().manual_seed(3)
    lengths = [int(x) for x in torch.randint(10, 5000, (400,), generator=gen)]
    order = list(length_grouped_sampler(lengths, batch_size=8, seed=7))
    assert sorted(order) == list(range(400))
    assert order == list(length_grouped_sampler(lengths, batch_size=8, seed=7))
    assert order != list(length_grouped_sampler(lengths, batch_size=8, seed=8))

    def padded(seq):
        batches = [seq[i : i + 8] for i in range(0, len(seq), 8)]
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    # grouping must waste far less padding than the plain order
    assert padded(order) < 0.6 * padded(list(range(400)))


def test_a_packed_batch_carries_positions_not_masks():
    batch = PackingCollator(0, 8)([fake_sample("x", 5), fake_sample("y", 3), fake_sample("z", 2)])
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no L x L tensor on the loader side


ROW_POSITIONS = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 0, 1, 2, 3],
                              [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 0, 1, 2, 3, 4]])


def test_sequence_ids_split_rows_where_positions_restart():
    assert sequence_ids(ROW_POSITIONS)[0].tolist() == [1] * 7 + [2] * 10 + [3] * 3 + [4] * 4
    assert sequence_ids(ROW_POSITIONS)[1].tolist() == [1] * 19 + [2] * 5


def test_flex_block_masks_allow_exactly_what_the_eager_masks_allow():
    from torch.nn.attention.flex_attention import create_mask

    config = GptOssConfig(num_hidden_layers=2, sliding_window=4, attn_implementation="eager")
    dense = dense_packed_masks(config, ROW_POSITIONS, torch.float32)
    blocks = block_packed_masks(config, ROW_POSITIONS)
    rows, length = ROW_POSITIONS.shape
    for layer_type in ("full_attention", "sliding_attention"):
        allowed = create_mask(blocks[layer_type].mask_mod, rows, 1, length, length, device="cpu")
        assert torch.equal(allowed, dense[layer_type] == 0), layer_type
    # and the sliding window does bite inside the 10-token sample: token 16 sees 13..16 only
    assert blocks["sliding_attention"].mask_mod(0, 0, torch.tensor(16), torch.tensor(12)).item() is False


def test_flex_attention_over_the_block_mask_equals_dense_attention_over_the_eager_mask():
    """The block mask as FlexAttention runs it (forward on CPU; sinks and backward need the GPU path)."""
    from torch.nn.attention.flex_attention import flex_attention

    config = GptOssConfig(num_hidden_layers=2, sliding_window=4, attn_implementation="eager")
    positions = torch.cat([torch.arange(150), torch.arange(200), torch.arange(90)])[None]  # 3 samples, 440 tokens
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, positions.shape[1], 16) for _ in range(3))
    dense = dense_packed_masks(config, positions, torch.float32)
    blocks = block_packed_masks(config, positions)
    with torch.no_grad():
        for layer_type in ("full_attention", "sliding_attention"):
            flex = flex_attention(q, k, v, block_mask=blocks[layer_type])
            reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense[layer_type])
            assert torch.allclose(flex, reference, atol=1e-5), layer_type


def test_the_profile_s_flex_attention_reaches_the_language_model_and_its_masks(parts):
    """use_attention must switch the LM's config (what packed_masks dispatches on), not only the top one."""
    import copy

    from torch.nn.attention.flex_attention import BlockMask

    from medkit.model.attention import packed_masks, use_attention

    _, model, _ = parts
    model = copy.deepcopy(model)
    use_attention(model, "flex_attention")
    text = model.config.text_config
    assert text._attn_implementation == "flex_attention"
    assert model.model.language_model.config._attn_implementation == "flex_attention"
    masks = packed_masks(text, ROW_POSITIONS, torch.float32)
    assert all(isinstance(m, BlockMask) for m in masks.values())
    assert model.config.vision_config._attn_implementation != "flex_attention"  # the tower keeps its own
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        use_attention(model, "sdpa")


def test_packed_eager_gives_eager_s_loss_and_gradients(parts, encoded):
    """packed_eager runs eager attention sample by sample: the rows' loss and every weight's gradient
    are those of the dense-mask eager path, with the sliding window biting inside B."""
    import copy

    from medkit.model.attention import PACKED_EAGER, SampleSpans, packed_masks, use_attention

    tokenizer, model, _ = parts
    a, b = encoded
    assert len(b.input_ids) > model.config.text_config.sliding_window
    from dataclasses import replace

    # first-fit-decreasing: row 1 holds B then A, row 2 A's copy and a padding tail (a sample of its own)
    batch = PackingCollator(tokenizer.pad_token_id, len(a.input_ids) + len(b.input_ids))(
        [a, b, replace(a, sample_id="case-a-again")])
    assert batch["input_ids"].shape[0] == 2 and batch["position_ids"][1, -1] > 0
    results = {}
    for implementation in ("eager", PACKED_EAGER):
        m = copy.deepcopy(model).train()
        use_attention(m, implementation)
        out = m(**batch)
        out.loss.backward()
        results[implementation] = out.loss.detach(), {n: p.grad for n, p in m.named_parameters()
                                                        if p.grad is not None}
    (eager_loss, eager_grads), (packed_loss, packed_grads) = results["eager"], results[PACKED_EAGER]
    assert torch.allclose(packed_loss, eager_loss, atol=1e-6)
    assert eager_grads.keys() == packed_grads.keys() and any("self_attn" in n for n in eager_grads)
    for name, grad in eager_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5, rtol=1e-4), name
    # what the model hands the layers: spans, not an L x L tensor
    m.config.text_config._attn_implementation = PACKED_EAGER
    masks = packed_masks(m.config.text_config, batch["position_ids"], torch.float32)
    assert all(isinstance(mask, SampleSpans) for mask in masks.values())
    assert masks["sliding_attention"].window == m.config.text_config.sliding_window


def test_sample_spans_mask_is_causal_within_the_window():
    from medkit.model.attention import SampleSpans, sample_spans

    assert sample_spans(ROW_POSITIONS)[0] == [(0, 7), (7, 17), (17, 20), (20, 24)]
    mask = SampleSpans([], window=4, dtype=torch.float32).mask(10, torch.device("cpu"))[0, 0]
    dense = dense_packed_masks(TEXT_CONFIG, torch.arange(10)[None], torch.float32)["sliding_attention"][0, 0]
    assert torch.equal(mask, dense)


def test_packed_eager_with_an_ordinary_mask_is_eager(parts, encoded):
    """Padded batches and generation hand packed_eager a plain attention mask: it is eager attention."""
    import copy

    from medkit.model.attention import PACKED_EAGER, use_attention

    _, model, _ = parts
    _, b = encoded
    inputs = {"input_ids": b.input_ids[None], "pixel_values": b.pixel_values,
              "attention_mask": torch.ones_like(b.input_ids)[None]}
    logits = {}
    for implementation in ("eager", PACKED_EAGER):
        m = copy.deepcopy(model)
        use_attention(m, implementation)
        with torch.no_grad():
            logits[implementation] = m(**inputs).logits
            m.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.allclose(logits[PACKED_EAGER], logits["eager"], atol=1e-6)
