"""The tiny profile's stand-ins for the released checkpoints: trained once per corpus and profile, cached
by what decides their weights, deterministic, actually trained, and what the first stage starts from."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from medkit.chat import load_tokenizer
from medkit.data.synthetic import generate_corpus
from medkit.profiles import load_profile
from medkit.training.standins import (LM_FILES, TOWER_FILE, compose_tiny, ensure_standin_encoder, ensure_standin_lm,
                                      label_targets, training_images)

SIZES = {"caption": 40, "report_long": 5, "report": 10, "vqa_mc": 60, "text_mc": 20, "reasoning": 5,
         "trial": 5, "impression": 10}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins") / "corpus"
    generate_corpus(root, seed=0, sizes=SIZES)
    return root


def test_stand_ins_are_trained_once_and_reused(corpus, monkeypatch):
    profile = load_profile("tiny")
    lm, tower = ensure_standin_lm(profile, corpus), ensure_standin_encoder(profile, corpus)
    assert lm.parent == tower.parent == corpus.parent / "standins"
    assert all((lm / f).is_file() for f in LM_FILES) and (tower / TOWER_FILE).is_file()
    import medkit.training.standins as standins

    def retrained(*args):
        raise RuntimeError("retrained")

    monkeypatch.setattr(standins, "train_standin_lm", retrained)
    monkeypatch.setattr(standins, "train_standin_encoder", retrained)
    assert ensure_standin_lm(profile, corpus) == lm and ensure_standin_encoder(profile, corpus) == tower
    with pytest.raises(RuntimeError, match="retrained"):  # another encoder is another stand-in
        ensure_standin_encoder(load_profile("tiny", encoder="siglip"), corpus)


def test_a_rebuilt_tokenizer_is_not_served_stale_stand_ins(corpus, monkeypatch, tmp_path):
    """The profile names its tokenizer ("tiny"); a rebuild changes the vocabulary under that name, and a
    stand-in trained with the old token ids must not be reused."""
    import shutil

    import medkit.chat.tokenizer as tokenizer_module
    import medkit.training.standins as standins

    profile = load_profile("tiny")
    ensure_standin_lm(profile, corpus), ensure_standin_encoder(profile, corpus)
    rebuilt = tmp_path / "tiny_tokenizer"
    shutil.copytree(tokenizer_module.TINY_TOKENIZER_DIR, rebuilt)
    vocab = json.loads((rebuilt / "tokenizer.json").read_text())
    vocab["model"]["merges"].reverse()  # same name and size, other merges: another tokenizer
    (rebuilt / "tokenizer.json").write_text(json.dumps(vocab))
    monkeypatch.setattr(tokenizer_module, "TINY_TOKENIZER_DIR", rebuilt)

    def retrained(*args):
        raise RuntimeError("retrained")

    monkeypatch.setattr(standins, "train_standin_lm", retrained)
    monkeypatch.setattr(standins, "train_standin_encoder", retrained)
    with pytest.raises(RuntimeError, match="retrained"):
        ensure_standin_lm(profile, corpus)
    with pytest.raises(RuntimeError, match="retrained"):
        ensure_standin_encoder(profile, corpus)


def test_a_stand_in_is_the_same_bytes_on_a_second_corpus_copy(corpus, tmp_path):
    """Seeded: the same corpus elsewhere gives byte-identical weights (so cached or not, one result)."""
    import shutil

    profile = load_profile("tiny")
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy, ignore=shutil.ignore_patterns("standins"))
    for ensure, name in ((ensure_standin_lm, LM_FILES[0]), (ensure_standin_encoder, TOWER_FILE)):
        first, second = ensure(profile, corpus), ensure(profile, copy)
        assert first != second and (first / name).read_bytes() == (second / name).read_bytes()


def test_the_encoder_stand_in_learns_the_image_labels(corpus):
    """Its summed cross-entropy over the attribute heads falls well below where it starts."""
    losses = json.loads((ensure_standin_encoder(load_profile("tiny"), corpus) / "losses.json").read_text())
    assert len(losses) >= 5 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_labels_cover_training_images_only_with_inapplicable_attributes_ignored(corpus):
    images = training_images(corpus)
    eval_images = {name for line in (corpus / "vqa_mc.jsonl").read_text().splitlines()
                   for name in json.loads(line)["images"] if json.loads(line)["meta"]["split"] == "eval"}
    assert images and not eval_images & {str(p.relative_to(corpus)) for p, _ in images}
    classes, targets = label_targets([label for _, label in images])
    xray = [i for i, (_, label) in enumerate(images) if label["modality"] == "xray"]
    assert "organ" not in images[xray[0]][1] and targets["organ"][xray[0]] == -100
    assert set(classes["modality"]) <= {"xray", "ct", "histology"}


def test_the_tiny_starting_model_carries_both_stand_ins(corpus):
    profile = load_profile("tiny")
    model = compose_tiny(profile, load_tokenizer("tiny"), corpus)
    lm = load_file(ensure_standin_lm(profile, corpus) / LM_FILES[0])
    tower = load_file(ensure_standin_encoder(profile, corpus) / TOWER_FILE)
    assert all(torch.equal(model.model.language_model.state_dict()[k], v) for k, v in lm.items())
    assert all(torch.equal(model.model.vision_tower.state_dict()[k], v) for k, v in tower.items())


def test_the_first_tiny_stage_is_composed_from_the_stand_ins(corpus, tmp_path):
    from medkit.training.launch import prepare_stage

    out = tmp_path / "train"
    prepare_stage("pretrain", profile="tiny", out=out, corpus=corpus)
    init = load_file(out / "init" / "model" / "model.safetensors")
    lm = load_file(ensure_standin_lm(load_profile("tiny"), corpus) / LM_FILES[0])
    key = next(k for k in init if k.endswith("layers.0.self_attn.q_proj.weight") and "language_model" in k)
    assert torch.equal(init[key], lm["layers.0.self_attn.q_proj.weight"])


def test_every_encoder_shares_one_language_model_stand_in(corpus):
    """The ablation pairs the LLM with four encoders: one stand-in, trained once, not one per encoder."""
    paths = {ensure_standin_lm(load_profile("tiny", encoder=e), corpus) for e in ("clip", "siglip", "medsiglip")}
    assert len(paths) == 1


def test_shared_thumbnails_are_decoded_afresh_for_a_rewritten_corpus(tmp_path):
    """The towers of one size share decoded images, keyed by the corpus digest too: the same paths with
    new pixels (a corpus regenerated in place) are not served from the old decoding."""
    from PIL import Image

    from medkit.training.standins import resized

    path = tmp_path / "a.png"
    Image.new("RGB", (20, 20), (255, 0, 0)).save(path)
    first = resized((path,), 8, "digest-1")[0].getpixel((0, 0))
    Image.new("RGB", (20, 20), (0, 0, 255)).save(path)
    assert resized((path,), 8, "digest-1")[0].getpixel((0, 0)) == first  # same digest: shared
    assert resized((path,), 8, "digest-2")[0].getpixel((0, 0)) == (0, 0, 255)
    resized.cache_clear()


def test_the_shipped_stand_ins_are_the_default_runs_and_load_into_the_tiny_model():
    """medkit/assets/standins holds, for the corpus digest it records, exactly the folders the tiny profile
    would look up (the language model and every registry encoder): a change to the profile, the stand-in
    settings or the tokenizer that leaves them stale fails here, not as a silent retraining."""
    from dataclasses import asdict

    from medkit.model.build import build_tiny_model
    from medkit.profiles import encoder_registry
    from medkit.training.standins import SHIPPED_DIR, SHIPPED_RECORD, key_for, text_only_profile

    record = json.loads((SHIPPED_DIR / SHIPPED_RECORD).read_text())
    lm_profile = text_only_profile(load_profile("tiny"))
    expected = [f"language_model-{key_for('language_model', lm_profile, record['corpus'], lm_profile.standins.language_model)}"]
    for name in encoder_registry():
        profile = load_profile("tiny", encoder=name)
        key = key_for("encoder", profile, record["corpus"], profile.standins.encoder, encoder=asdict(profile.encoder))
        expected.append(f"encoder-{name}-{key}")
    assert record["folders"] == expected
    assert sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) == sorted(expected)
    tokenizer = load_tokenizer("tiny")
    lm = SHIPPED_DIR / expected[0]
    model = build_tiny_model(load_profile("tiny"), tokenizer)
    model.model.language_model.load_state_dict(load_file(lm / LM_FILES[0]))  # strict: every key, every shape
    model.lm_head.load_state_dict(load_file(lm / LM_FILES[1]))
    for name, folder in zip(encoder_registry(), expected[1:]):
        tower = build_tiny_model(load_profile("tiny", encoder=name), tokenizer).model.vision_tower
        tower.load_state_dict(load_file(SHIPPED_DIR / folder / TOWER_FILE))


def test_a_run_whose_keys_match_copies_the_shipped_stand_ins_instead_of_training(corpus, tmp_path, monkeypatch, capsys):
    import shutil

    import medkit.training.standins as standins

    shipped = tmp_path / "shipped"
    names = standins.ship(corpus, into=shipped)
    assert len(names) == 5 and json.loads((shipped / standins.SHIPPED_RECORD).read_text())["folders"] == names
    monkeypatch.setattr(standins, "SHIPPED_DIR", shipped)

    def retrained(*args):
        raise RuntimeError("retrained")

    monkeypatch.setattr(standins, "train_standin_lm", retrained)
    monkeypatch.setattr(standins, "train_standin_encoder", retrained)
    fresh = tmp_path / "fresh" / "corpus"  # a new run's corpus: the same files, nothing cached beside it
    shutil.copytree(corpus, fresh)
    lm = ensure_standin_lm(load_profile("tiny"), fresh)
    assert lm.parent == fresh.parent / "standins" and "shipped copy" in capsys.readouterr().out
    assert (lm / LM_FILES[0]).read_bytes() == (shipped / lm.name / LM_FILES[0]).read_bytes()
    (shipped / names[1] / TOWER_FILE).unlink()  # an incomplete shipped copy is not served
    with pytest.raises(RuntimeError, match="retrained"):
        ensure_standin_encoder(load_profile("tiny"), fresh)
    assert not (fresh.parent / "standins" / names[1]).exists()
    with pytest.raises(FileNotFoundError, match="not a corpus folder"):
        standins.ship(tmp_path / "nothing", into=shipped)


def test_the_focus_pass_trains_the_language_model_on_its_tasks_besides_the_mixed_pass(corpus):
    """The tiny profile's LLM stand-in first trains on the trial and text questions alone, then on every
    task; without that pass it is a different stand-in (another cache folder), with fewer steps and other
    weights."""
    profile = load_profile("tiny")
    assert profile.standins.language_model.focus_data == ["trial", "text_mc"] and profile.standins.language_model.focus_first
    mixed_only = copy.deepcopy(profile)
    mixed_only.standins.language_model.focus_data = []
    with_focus, without = ensure_standin_lm(profile, corpus), ensure_standin_lm(mixed_only, corpus)
    assert with_focus != without
    steps = [len(json.loads((folder / "losses.json").read_text())) for folder in (with_focus, without)]
    assert steps[0] > steps[1] > 0, steps
    a, b = (load_file(folder / LM_FILES[0]) for folder in (with_focus, without))
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_the_focus_pass_runs_first_where_the_profile_says_so():
    from medkit.profiles import StandinLM
    from medkit.training.standins import lm_passes

    mixed = dict(data=["text_mc", "trial", "vqa_mc"], epochs=0.4, learning_rate=3e-3, batch_size=8)
    assert lm_passes(StandinLM(**mixed)) == [(["text_mc", "trial", "vqa_mc"], 0.4)]
    after = StandinLM(**mixed, focus_data=["trial"], focus_epochs=2.0)
    assert lm_passes(after) == [(["text_mc", "trial", "vqa_mc"], 0.4), (["trial"], 2.0)]
    before = StandinLM(**mixed, focus_data=["trial"], focus_epochs=2.0, focus_first=True)
    assert lm_passes(before) == [(["trial"], 2.0), (["text_mc", "trial", "vqa_mc"], 0.4)]
