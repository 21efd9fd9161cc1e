"""The model side of evaluation: an adapter turns benchmark prompts into completions.

Every adapter has ``name``, ``fingerprint()`` (what the prediction store is keyed by) and
``generate(items, settings)``. :class:`MedkitAdapter` serves medkit checkpoints (tiny and paper) with
the harmony format; the baselines' adapters live in :mod:`medkit.eval.baselines`.
"""

from __future__ import annotations

import hashlib
import json
import re
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
    """A MedGPT-OSS checkpoint (or an in-memory model) with its processor and the profile's chat settings."""

    def __init__(self, model: PreTrainedModel, processor: MedGPTOssProcessor, profile: Profile,
                 name: str = "medkit", checkpoint: Path | None = None):
        self.model = model.eval()
        self.processor = processor
        self.profile = profile
        self.name = name
        self.checkpoint = checkpoint
        self._weights: str | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, profile: Profile, name: str | None = None) -> "MedkitAdapter":
        from medkit.chat import load_tokenizer
        from medkit.model.build import load_model

        checkpoint = Path(checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise FileNotFoundError(f"model {checkpoint}: no config.json (expected a save_pretrained folder)")
        model = load_model(checkpoint, dtype=profile.model.dtype)
        tokenizer = load_tokenizer(str(checkpoint))
        processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
        return cls(model, processor, profile, name or checkpoint.name, checkpoint)

    def fingerprint(self) -> dict[str, Any]:
        if self._weights is None:
            self._weights = weights_fingerprint(self.model, self.checkpoint)
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
            "dtype": self.profile.model.dtype,
        }

    def generate(self, items: Sequence[tuple[Sample, Path]], settings: DecodeSettings) -> list[Completion]:
        return generate_batch(self.model, self.processor, items, settings)
