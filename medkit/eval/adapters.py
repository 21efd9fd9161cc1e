"""The model side of evaluation: an adapter turns benchmark prompts into completions.

Every adapter has ``name``, ``fingerprint()`` (what the prediction store is keyed by) and
``generate(items, settings)``. :class:`MedkitAdapter` serves medkit checkpoints (tiny and paper) with
the harmony format; the baselines' adapters live in :mod:`medkit.eval.baselines`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from transformers import PreTrainedModel

from medkit.data.schema import Sample, resolve_image_paths
from medkit.eval.generation import Completion, DecodeSettings, generate_batch
from medkit.model.processor import MedGPTOssProcessor
from medkit.profiles import Profile, get_encoder


class ModelAdapter(Protocol):
    name: str

    def fingerprint(self) -> dict[str, Any]: ...

    def generate(self, items: Sequence[tuple[Sample, Path]], settings: DecodeSettings) -> list[Completion]: ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """A file's sha256; a Hugging Face cache entry links to a blob already named by it, so it is not re-read."""
    blob = path.resolve().name
    if path.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    return file_sha256(path)


def safetensors_files(path: Path) -> list[Path]:
    """The checkpoint's safetensors files; every shard its index names must be there (a half-finished
    download would otherwise key the predictions by part of the weights)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: weight shards missing ({len(missing)} of {len(shards)}: {missing[:3]} ...)")
        return [path / s for s in shards]
    return sorted(path.glob("*.safetensors"))


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header and tensor data are whole, read from its header alone (8 bytes of
    header length, the JSON header, each tensor's data offsets): a truncated copy is named here, before any
    weight loads, instead of failing deep in the loader with a message that names no file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        header_length = int.from_bytes(head, "little") if len(head) == 8 else None
        if header_length is None or 8 + header_length > size:
            raise ValueError(f"{path}: truncated or not a safetensors file (header cut off; file is {size:,} bytes)")
        try:
            header = json.loads(f.read(header_length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path}: corrupt safetensors header (not JSON)") from None
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    needed = 8 + header_length + max(ends, default=0)
    if needed > size:
        raise ValueError(f"{path}: truncated safetensors file: its header needs {needed:,} bytes, the file has "
                         f"{size:,}; copy or save the checkpoint again")


def default_result_name(checkpoint: Path, weights_sha256: str) -> str:
    """A readable result-folder name that tells checkpoints apart: the checkpoint's last two path parts
    (``instruct-model``: every stage saves to ``<stage>/model``) and the first 8 digits of its weights."""
    from medkit.eval.benchmarks.base import safe_name

    parts = [safe_name(p).strip("._") for p in checkpoint.resolve().parts[-2:]]
    return "-".join([*(p for p in parts if p), weights_sha256[:8]])


def weights_fingerprint(model: PreTrainedModel | None, path: Path | None) -> str:
    """sha256 of the checkpoint's safetensors files, or of the in-memory weights when there is no file."""
    files = safetensors_files(path) if path is not None else []
    if files:
        return hashlib.sha256("".join(f"{f.name}:{content_sha256(f)}" for f in files).encode()).hexdigest()
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def prompt_hash(sample: Sample, root: Path) -> str:
    """Hash of the prompt messages and the image bytes (not their paths, which differ between machines)."""
    digest = hashlib.sha256(json.dumps(sample.messages, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    for path in resolve_image_paths(sample, root):
        digest.update(file_sha256(Path(path)).encode())
    return digest.hexdigest()[:16]


class MedkitAdapter:
    """A MedGPT-OSS checkpoint (or an in-memory model) with its processor and the profile's chat settings.

    From a checkpoint folder the weights load lazily, on the first ``generate``: the prediction-store key
    (``fingerprint``) needs only the config and the safetensors hashes, so a rescore or a data-parallel
    parent never holds the model. Weights go to the GPUs this process sees (:mod:`medkit.eval.placement`)
    in the checkpoint's own dtype (bf16 for a paper-profile checkpoint, float32 for a tiny one).
    """

    def __init__(self, model: PreTrainedModel | None, processor: MedGPTOssProcessor, profile: Profile,
                 name: str | None = "medkit", checkpoint: Path | None = None, dtype: str | None = None):
        if model is None and checkpoint is None:
            raise ValueError("MedkitAdapter needs a model or a checkpoint folder")
        self._model = model.eval() if model is not None else None
        self.processor = processor
        self.profile = profile
        self._name = name  # None: derived from the checkpoint path and weights (default_result_name)
        self.checkpoint = checkpoint
        self.dtype = dtype or (str(model.dtype).removeprefix("torch.") if model is not None else profile.model.dtype)
        self._weights: str | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, profile: Profile | None = None, name: str | None = None,
             reasoning_effort: str | None = None) -> "MedkitAdapter":
        """The adapter of a ``save_pretrained`` folder; ``profile`` None: the shipped profile whose
        architecture the checkpoint has (:func:`checkpoint_profile`); ``reasoning_effort`` replaces the
        profile's harmony reasoning setting."""
        from medkit.chat import load_tokenizer
        from medkit.model.configuration import MedGPTOssConfig

        checkpoint = Path(checkpoint)
        config = checkpoint_config(checkpoint)
        for weights in safetensors_files(checkpoint):
            check_safetensors(weights)
        profile = checkpoint_profile(checkpoint, profile)
        if reasoning_effort is not None:
            profile.chat = replace(profile.chat, reasoning_effort=reasoning_effort)
        tokenizer = load_tokenizer(str(checkpoint))
        processor = MedGPTOssProcessor.for_model(MedGPTOssConfig.from_pretrained(checkpoint), tokenizer, profile)
        dtype = checkpoint_dtype(config) or profile.model.dtype
        return cls(None, processor, profile, name, checkpoint, dtype=dtype)

    @property
    def name(self) -> str:
        """Where this model's results go (``results/<name>/``) and how the tables label it: the given name,
        else one made of the checkpoint's path and weights hash (never the bare folder name ``model``
        that every training stage shares)."""
        if self._name is None:
            self._name = (default_result_name(self.checkpoint, self.fingerprint()["weights_sha256"])
                          if self.checkpoint is not None else "medkit")
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            from medkit.eval.placement import model_placement
            from medkit.model.build import load_model

            self._model = load_model(self.checkpoint, dtype=self.dtype, **model_placement()).eval()
        return self._model

    def fingerprint(self) -> dict[str, Any]:
        if self._weights is None:
            self._weights = weights_fingerprint(self._model, self.checkpoint)
        spec = get_encoder(self.profile.model.encoder)
        tiling = self.processor.image_processor
        return {
            "model": "medgpt-oss",
            "weights_sha256": self._weights,
            "template": {"format": "harmony", "date": self.profile.chat.date,
                         "reasoning_effort": self.profile.chat.reasoning_effort},
            "image": {"encoder": spec.name, "tile_size": tiling.tile_size, "max_tiles": tiling.max_tiles,
                      "min_tiles": tiling.min_tiles, "thumbnail": tiling.use_thumbnail,
                      "mean": list(spec.image_mean), "std": list(spec.image_std)},
            "dtype": self.dtype,
        }

    def prompt_length(self, sample: Sample, root: Path) -> int:
        return self.processor.prompt_length(sample, root)

    def generate(self, items: Sequence[tuple[Sample, Path]], settings: DecodeSettings) -> list[Completion]:
        return generate_batch(self.model, self.processor, items, settings)


# Architecture fields that tell the shipped profiles apart in a checkpoint's text config.
ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_local_experts")


def checkpoint_config(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"model {checkpoint}: no config.json (expected a save_pretrained folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def checkpoint_dtype(config: dict[str, Any]) -> str | None:
    """The dtype the checkpoint was saved in (transformers writes ``dtype``, older ones ``torch_dtype``);
    None when its config does not say (the profile's dtype is used then, never a silent float32)."""
    from medkit.model.build import DTYPES

    dtype = config.get("dtype") or config.get("torch_dtype") or config.get("text_config", {}).get("dtype")
    return dtype if dtype in DTYPES else None


def architecture(text_config: dict[str, Any]) -> dict[str, Any]:
    return {k: text_config.get(k) for k in ARCHITECTURE_KEYS}


def checkpoint_profile(checkpoint: Path, profile: Profile | None = None) -> Profile:
    """The profile a medkit checkpoint was built with: the shipped profile (tiny, paper) whose language
    model has the checkpoint's architecture, with the checkpoint's vision encoder. An explicit profile
    must agree with the checkpoint (a paper checkpoint read with tiny settings would be silently wrong)."""
    from medkit.profiles import PROFILE_NAMES, load_profile

    config = checkpoint_config(checkpoint)
    if config.get("model_type") != "medgpt_oss":
        raise ValueError(f"model {checkpoint}: model_type {config.get('model_type')!r} is not a medkit checkpoint "
                         "(medgpt_oss); for a baseline pass its name from medkit/configs/baselines.yaml")
    found = architecture(config.get("text_config", {}))
    encoder = config.get("encoder_name", "clip")
    if profile is not None:
        wanted = architecture(profile.model.text_config)
        if wanted != found:
            raise ValueError(f"--profile {profile.name!r} describes a language model {wanted}, but {checkpoint} "
                             f"holds {found}; omit --profile to use the checkpoint's own")
        if profile.model.encoder != encoder:
            profile.model.encoder = encoder
        return profile
    for name in PROFILE_NAMES:
        candidate = load_profile(name, encoder=encoder)
        if architecture(candidate.model.text_config) == found:
            return candidate
    raise ValueError(f"model {checkpoint}: its language model {found} matches no shipped profile "
                     f"({', '.join(PROFILE_NAMES)}); pass --profile with a profile YAML that describes it")
