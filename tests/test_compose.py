"""The paper profile's loading path on tiny checkpoints: a full CLIP checkpoint (the encoder's released format)
and an unquantized GPT-oss one; revision pins, and the errors of checkpoints that cannot be loaded.

The language model in gpt-oss-20b's released layout (MXFP4 experts) is tests/test_mxfp4.py's.
"""

import json

import httpx2
import huggingface_hub
import pytest
import torch
import transformers.utils.hub
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import hf_raise_for_status
from transformers import CLIPConfig, CLIPModel, GptOssForCausalLM

from medkit.chat import load_tokenizer
from medkit.model.build import compose_pretrained, load_model, model_config
from medkit.profiles import get_encoder, load_profile

TEXT_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
LM_ID = "openai/gpt-oss-20b"


def tiny_clip() -> CLIPModel:
    return CLIPModel(CLIPConfig(vision_config=get_encoder("clip").tiny, text_config=TEXT_TOWER))


def tiny_lm(tokenizer) -> GptOssForCausalLM:
    text_config = model_config(load_profile("tiny"), vocab_size=len(tokenizer)).text_config
    torch.manual_seed(1)
    return GptOssForCausalLM(text_config).eval()


def test_compose_encoder_and_plain_lm_checkpoints_then_round_trip(tmp_path):
    tokenizer = load_tokenizer("tiny")
    lm = tiny_lm(tokenizer)
    lm.save_pretrained(tmp_path / "gpt-oss")
    clip = tiny_clip()
    clip.save_pretrained(tmp_path / "clip")

    profile = load_profile("paper", language_model=str(tmp_path / "gpt-oss"), tokenizer="tiny", dtype="float32")
    model = compose_pretrained(profile, tokenizer, encoder_path=str(tmp_path / "clip")).eval()

    assert not any(p.is_meta for p in model.parameters())
    ids = torch.tensor([tokenizer.encode("Portable chest film: small left pleural effusion.")])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, lm(input_ids=ids).logits)  # LM weights carried over
    vision = model.model.vision_tower.state_dict()
    assert all(torch.equal(v, clip.vision_model.state_dict()[k]) for k, v in vision.items())
    assert model.config.text_config.rope_parameters == lm.config.rope_parameters  # YaRN taken as is
    assert model.config.medkit_sources == {  # local folders: no revision, and no cache snapshot to read a commit from
        "vision_encoder": {"source": str(tmp_path / "clip"), "revision": None, "commit": None},
        "language_model": {"source": str(tmp_path / "gpt-oss"), "revision": None, "commit": None},
    }

    model.save_pretrained(tmp_path / "composed")
    saved = json.loads((tmp_path / "composed" / "config.json").read_text())
    assert "quantization_config" not in saved["text_config"]  # an unquantized LM is not given one
    reloaded = load_model(tmp_path / "composed").eval()
    t = model.config.tokens_per_tile
    img = model.config.image_token_id
    ids = torch.tensor([[5, 6] + [img] * t + [7]])
    tiles = torch.randn(1, 3, model.config.tile_size, model.config.tile_size)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, pixel_values=tiles).logits,
                           reloaded(input_ids=ids, pixel_values=tiles).logits)


def test_missing_checkpoint_says_what_to_set(tmp_path):
    profile = load_profile("paper", tokenizer="tiny", language_model=str(tmp_path / "no-such-lm"),
                           encoder_path=str(tmp_path / "no-such-clip"))
    with pytest.raises(FileNotFoundError, match=r"no-such-clip.*set model\.encoder_path in a profile YAML"):
        compose_pretrained(profile, load_tokenizer("tiny"))


def test_hub_id_without_cache_is_a_clear_error(tmp_path):
    tiny_clip().save_pretrained(tmp_path / "clip")
    profile = load_profile("paper", tokenizer="tiny", encoder_path=str(tmp_path / "clip"))
    with pytest.raises(FileNotFoundError, match=r"'openai/gpt-oss-20b'.*set model\.language_model"):
        compose_pretrained(profile, load_tokenizer("tiny"))


def cache_snapshot(cache, hub_id: str, commit: str, refs: tuple[str, ...] = ()):
    """A Hugging Face cache entry for ``hub_id`` at ``commit`` (its snapshot folder), named by ``refs``."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


def test_profile_revisions_reach_every_load_and_are_recorded(tmp_path, monkeypatch):
    # a cache that holds the encoder only at a commit and the LM only at a tag: neither has the "main" a
    # load without revision asks for, so each load below succeeds only if its pin reached from_pretrained
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    tokenizer = load_tokenizer("tiny")
    clip_id, clip_commit, lm_commit = get_encoder("clip").hub_id, "c1" * 20, "0a" * 20
    tiny_clip().save_pretrained(cache_snapshot(cache, clip_id, clip_commit))
    tiny_lm(tokenizer).save_pretrained(cache_snapshot(cache, LM_ID, lm_commit, refs=("release-1",)))

    with pytest.raises(FileNotFoundError, match=f"'{clip_id}': not a local folder and not in the Hugging Face cache"):
        compose_pretrained(load_profile("paper", tokenizer="tiny", dtype="float32"), tokenizer)

    revisions = {clip_id: clip_commit, LM_ID: "release-1"}
    profile = load_profile("paper", tokenizer="tiny", dtype="float32", revisions=revisions)
    model = compose_pretrained(profile, tokenizer)
    expected = {"vision_encoder": {"source": clip_id, "revision": clip_commit, "commit": clip_commit},
                "language_model": {"source": LM_ID, "revision": "release-1", "commit": lm_commit}}
    assert model.config.medkit_sources == expected
    model.save_pretrained(tmp_path / "composed")  # the record travels with every checkpoint saved from it
    assert json.loads((tmp_path / "composed" / "config.json").read_text())["medkit_sources"] == expected


def hub_error(status: int, error_code: str, url: str) -> Exception:
    """The error huggingface_hub raises for a hub answer carrying ``X-Error-Code: error_code``."""
    response = httpx2.Response(status, headers={"X-Error-Code": error_code}, request=httpx2.Request("GET", url))
    try:
        hf_raise_for_status(response)
    except Exception as e:
        return e
    raise AssertionError(f"no error for {error_code}")


def failing_download(error: Exception, requested: list):
    def hf_hub_download(repo_id, filename, *args, revision=None, **kwargs):
        requested.append((repo_id, revision))
        raise error

    return hf_hub_download


GATED = ("gated Hugging Face repo.*Accept its license on https://huggingface.co/{id} .*`hf auth login`.*HF_TOKEN"
         ".*set model.encoder_path")
UNAVAILABLE = [
    (403, "GatedRepo", GatedRepoError, GATED),
    (404, "RevisionNotFound", RevisionNotFoundError, "has no revision 'v9'. Set model.revisions\\['{id}'\\]"),
    (401, "RepoNotFound", RepositoryNotFoundError, "no Hugging Face repo of that name.*Set model.encoder_path"),
]


@pytest.mark.parametrize("status, error_code, error_type, message", UNAVAILABLE, ids=[c[1] for c in UNAVAILABLE])
# medsiglip loads through transformers (which re-raises the hub's error as an OSError), biomedclip's
# open_clip weights through hf_hub_download itself (the hub's error as is)
@pytest.mark.parametrize("encoder", ["medsiglip", "biomedclip"])
def test_unavailable_hub_checkpoint_says_why_and_what_to_set(encoder, status, error_code, error_type, message,
                                                             monkeypatch):
    hub_id = get_encoder(encoder).hub_id
    error = hub_error(status, error_code, f"https://huggingface.co/{hub_id}/resolve/v9/config.json")
    assert type(error) is error_type
    requested = []
    monkeypatch.setattr(transformers.utils.hub, "hf_hub_download", failing_download(error, requested))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download(error, requested))
    profile = load_profile("paper", encoder=encoder, tokenizer="tiny", revisions={hub_id: "v9"})
    with pytest.raises(FileNotFoundError, match=f"'{hub_id}': .*" + message.format(id=hub_id)):
        compose_pretrained(profile, load_tokenizer("tiny"))
    assert requested and set(requested) == {(hub_id, "v9")}  # the pinned revision is what was asked for


def test_gated_language_model_names_its_profile_key(tmp_path, monkeypatch):
    tiny_clip().save_pretrained(tmp_path / "clip")
    error = hub_error(403, "GatedRepo", f"https://huggingface.co/{LM_ID}/resolve/main/config.json")
    monkeypatch.setattr(transformers.utils.hub, "hf_hub_download", failing_download(error, []))
    profile = load_profile("paper", tokenizer="tiny", encoder_path=str(tmp_path / "clip"))
    with pytest.raises(FileNotFoundError, match=f"'{LM_ID}': it is a gated .*set model.language_model"):
        compose_pretrained(profile, load_tokenizer("tiny"))
