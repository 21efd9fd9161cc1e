"""The paper's baselines (section 4.2) served through transformers with their own chat templates.

Each baseline is one :class:`BaselineSpec` in ``medkit/configs/baselines.yaml`` (hub id, classes, dtype,
system prompt, decoding, answer extraction, image settings; every fact there names its source). An
:class:`HFChatAdapter` turns benchmark samples into the HF multimodal chat format, renders them with the
processor's chat template, decodes greedily in left-padded batches with the KV cache and keeps only the
new tokens. Weights are loaded lazily (on the first ``generate``); the processor and generation config are
loaded on the first ``fingerprint`` too, because the chat template is part of the prediction-store key.

The fingerprint records what is actually loaded, not only what the spec asks for: the hub commit the
revision resolved to (read off the cache snapshot; None for a plain local folder), the sha256 of the
checkpoint's safetensors files (the weights are fetched into the cache if it lacks them) and the image
processor's own config. Hub loads are pinned to that commit, so the processor, generation config and
weights all come from the snapshot the fingerprint names.

System prompts: when a spec has a ``system_prompt`` it comes first and the sample's own system text (the
benchmark's answer-format instruction, if any) follows it after a blank line, so neither is lost; when
the spec has none, the sample's system message is passed through unchanged (and the model's template
adds its default, if it has one).

Hulu-Med runs on its own remote code, whose processor and ``generate`` take another calling convention,
so it has its own :class:`HuluMedAdapter` (chosen by hub id in :func:`adapter_class`), which calls them
the way the model's official inference does (the source is named in the hulu-med entry of the YAML).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from medkit.config import ConfigError, load_yaml
from medkit.data.schema import Sample, content_parts, message_text, resolve_image_paths
from medkit.eval.adapters import weights_fingerprint
from medkit.eval.generation import Completion, DecodeSettings, trim_padding
from medkit.model.image_processing import load_image
from medkit.profiles import BASELINES_PATH

BASELINES_YAML = BASELINES_PATH

Extraction = Literal["plain", "strip_think", "think_answer"]
SYSTEM_PROMPT_POLICY = "spec-first-then-sample"
# Image processor config keys that say how it was loaded, not how it processes images.
VOLATILE_IMAGE_PROCESSOR_KEYS = frozenset({"_processor_class", "processor_class", "transformers_version"})


class BaselineUnavailable(OSError):
    """A baseline whose processor or weights cannot be loaded (offline, gated, or not downloaded)."""


@dataclass(frozen=True)
class ImageSettings:
    """Processor image-size settings a model card recommends; null = the processor's own default."""

    min_pixels: int | None = None
    max_pixels: int | None = None

    def processor_kwargs(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class BaselineSpec:
    name: str
    hub_id: str
    model_class: str  # a transformers class name, e.g. "AutoModelForImageTextToText"
    processor_class: str = "AutoProcessor"
    revision: str | None = None  # null = the hub's latest (the fingerprint records the commit it resolved to)
    trust_remote_code: bool = False
    dtype: str = "bfloat16"
    system_prompt: str | None = None
    max_new_tokens: int | None = None  # null = the runner's DecodeSettings.max_new_tokens
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    answer_extraction: Extraction = "plain"
    image: ImageSettings = field(default_factory=ImageSettings)


@dataclass(frozen=True)
class BaselineRegistry:
    baselines: list[BaselineSpec]


# ---------------------------------------------------------------------------------------------- specs

def check_spec(spec: BaselineSpec, where: str) -> None:
    """Rules the YAML types cannot express: greedy decoding and real transformers classes."""
    import transformers

    if spec.generation_kwargs.get("do_sample", False):
        raise ConfigError(f"{where}: baselines decode greedily (one deterministic decode); do_sample must be false")
    for key in ("max_new_tokens", "temperature", "top_p", "top_k"):
        if key in spec.generation_kwargs:
            raise ConfigError(f"{where}: generation_kwargs.{key} is not allowed (greedy decode; max_new_tokens is its own key)")
    for attr in ("model_class", "processor_class"):
        if not hasattr(transformers, getattr(spec, attr)):
            raise ConfigError(f"{where}: {attr} {getattr(spec, attr)!r} is not a transformers class")
    if spec.max_new_tokens is not None and spec.max_new_tokens <= 0:
        raise ConfigError(f"{where}: max_new_tokens must be positive")


def load_specs(path: str | Path = BASELINES_YAML) -> dict[str, BaselineSpec]:
    registry = load_yaml(BaselineRegistry, path)
    specs: dict[str, BaselineSpec] = {}
    for spec in registry.baselines:
        where = f"{path}: baseline {spec.name!r}"
        if spec.name in specs:
            raise ConfigError(f"{where}: defined twice")
        check_spec(spec, where)
        specs[spec.name] = spec
    return specs


def baseline_names(path: str | Path = BASELINES_YAML) -> list[str]:
    return list(load_specs(path))


def get_spec(name: str, path: str | Path = BASELINES_YAML) -> BaselineSpec:
    specs = load_specs(path)
    if name not in specs:
        raise ConfigError(f"unknown baseline {name!r}; known: {sorted(specs)}")
    return specs[name]


# ------------------------------------------------------------------------------------ answer extraction

THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def strip_think(text: str) -> str:
    """The text outside reasoning blocks. An unclosed ``<think>`` (the budget ran out mid-thought) leaves
    no answer; a lone ``</think>`` (the template opened the block in the prompt) keeps what follows it."""
    text = THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.strip()


def think_answer(text: str) -> str:
    """Think block stripped, then the last ``<answer>...</answer>`` content if there is one."""
    text = strip_think(text)
    answers = ANSWER_BLOCK.findall(text)
    return answers[-1].strip() if answers else text


EXTRACTORS = {"plain": str.strip, "strip_think": strip_think, "think_answer": think_answer}


def extract_answer(text: str, mode: Extraction) -> str:
    return EXTRACTORS[mode](text)


# ------------------------------------------------------------------------------------------- messages

def merged_system_prompt(spec_prompt: str | None, sample_system: list[str]) -> str | None:
    texts = [t for t in [spec_prompt, *sample_system] if t]
    return "\n\n".join(texts) if texts else None


def hf_parts(message: dict[str, Any], image_parts: Any) -> list[dict[str, Any]]:
    """One schema message's parts in the HF format; image parts take the adapter's next image part."""
    parts = []
    for part in content_parts(message):
        if part.get("type") == "image":
            parts.append(next(image_parts))
        else:
            parts.append({"type": "text", "text": part["text"]})
    return parts


def without_answer_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def sha256_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def jsonable(data: Any) -> Any:
    """``data`` as plain JSON values (tuples to lists, enums and other objects to their str), so it can sit
    in a prediction-store key file and compare equal after a round trip."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def image_processor_config(processor: Any) -> dict[str, Any] | None:
    """The image processor's class and its ``to_dict()`` minus load-time keys; None when the processor
    has no separate image processor (e.g. custom remote-code processors)."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not hasattr(image_processor, "to_dict"):
        return None
    config = {k: v for k, v in image_processor.to_dict().items() if k not in VOLATILE_IMAGE_PROCESSOR_KEYS}
    # the class name tells the backends apart (e.g. a PIL fallback resizes differently from torchvision)
    return {"class": type(image_processor).__name__, "config": jsonable(config)}


def commit_of(config_file: Path) -> str | None:
    """The hub commit a file sits in a cache snapshot of (``.../snapshots/<commit>/...``), else None."""
    from transformers.utils.hub import extract_commit_hash

    # transformers 5 no longer sets config._commit_hash; this is how it used to derive it
    return extract_commit_hash(str(config_file), None)


# -------------------------------------------------------------------------------------------- adapter

class HFChatAdapter:
    """A baseline model behind the eval runner's adapter interface (``name``, ``fingerprint``, ``generate``)."""

    def __init__(self, spec: BaselineSpec, model: Any = None, processor: Any = None, local_path: str | Path | None = None):
        self.spec = spec
        self.name = spec.name
        self.local_path = Path(local_path) if local_path is not None else None
        self._model = model
        self._model_given = model is not None
        self._processor = processor
        self._generation_config = getattr(model, "generation_config", None) if model is not None else None
        self._checkpoint: tuple[Path | None, str | None] | None = None
        self._weights: str | None = None

    @classmethod
    def from_spec(cls, spec: BaselineSpec, model: Any = None, processor: Any = None,
                  local_path: str | Path | None = None) -> "HFChatAdapter":
        return cls(spec, model=model, processor=processor, local_path=local_path)

    # -- loading

    @property
    def source(self) -> str:
        return str(self.local_path) if self.local_path is not None else self.spec.hub_id

    def _pretrained_kwargs(self) -> dict[str, Any]:
        # trust_remote_code comes from the spec alone: only adapters that need custom code get it
        return {"revision": self.revision(), "trust_remote_code": self.spec.trust_remote_code}

    def revision(self) -> str | None:
        """What hub loads ask for: the resolved commit, so a hub update between loads cannot mix snapshots."""
        if self.local_path is not None:
            return self.spec.revision
        _, commit = self.checkpoint()
        return commit or self.spec.revision

    def checkpoint(self) -> tuple[Path | None, str | None]:
        """(folder the weights are read from, hub commit that folder is a snapshot of). A model handed in
        without a local path has no folder (its in-memory weights are hashed); a plain local folder has no
        commit."""
        if self._checkpoint is None:
            if self.local_path is not None:
                self._checkpoint = (self.local_path, commit_of(self.local_path.resolve() / "config.json"))
            elif self._model_given:
                self._checkpoint = (None, None)
            else:
                self._checkpoint = self._hub_snapshot()
        return self._checkpoint

    def _hub_snapshot(self) -> tuple[Path, str | None]:
        from transformers.utils import cached_file

        try:
            config = cached_file(self.spec.hub_id, "config.json", revision=self.spec.revision)
        except (OSError, ValueError) as e:
            raise self._unavailable("the config", e) from e
        return Path(config).parent, commit_of(Path(config))

    def weights_sha256(self) -> str:
        """sha256 of the checkpoint's safetensors files (of the in-memory weights for a handed-in model)."""
        if self._weights is None:
            folder, commit = self.checkpoint()
            if folder is not None and self.local_path is None and not any(folder.glob("*.safetensors")):
                self._fetch_weights(commit)  # into the snapshot folder, without building the model
            elif folder is not None and not any(folder.glob("*.safetensors")):
                _ = self.model  # a local folder with legacy .bin weights: hash them as loaded
            self._weights = weights_fingerprint(self._model, folder)
        return self._weights

    def _fetch_weights(self, commit: str | None) -> None:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(self.spec.hub_id, revision=commit or self.spec.revision,
                              allow_patterns=["*.safetensors", "*.safetensors.index.json"])
        except Exception as e:  # offline, gated or missing: say which baseline and why
            raise self._unavailable("the weights", e) from e

    def _unavailable(self, what: str, error: Exception) -> BaselineUnavailable:
        cause = " ".join(str(error).split())  # one line, so logs and tables keep it whole
        return BaselineUnavailable(
            f"baseline {self.name!r}: {what} of {self.source} (revision {self.spec.revision or 'latest'}) "
            f"is not available offline ({type(error).__name__}: {cause}); download it on a machine with hub "
            f"access (accept the model licence first if it is gated) and point HF_HOME at that cache, or pass "
            f"a local path (load_baseline(name, local_path=...))"
        )

    @property
    def processor(self) -> Any:
        if self._processor is None:
            import transformers

            processor_cls = getattr(transformers, self.spec.processor_class)
            kwargs = self._pretrained_kwargs()
            try:
                self._processor = processor_cls.from_pretrained(self.source, **kwargs)
            except (OSError, ValueError) as e:
                raise self._unavailable("the processor", e) from e
        self._processor.tokenizer.padding_side = "left"
        return self._processor

    @property
    def model(self) -> Any:
        if self._model is None:
            import transformers

            from medkit.eval.placement import model_placement

            model_cls = getattr(transformers, self.spec.model_class)
            kwargs = self._pretrained_kwargs()
            try:  # on this rank's GPUs (sharded over several when it has more than one), else the CPU
                self._model = model_cls.from_pretrained(
                    self.source, dtype=getattr(torch, self.spec.dtype), use_safetensors=True,
                    **model_placement(), **kwargs
                )
            except (OSError, ValueError) as e:
                raise self._unavailable("the weights", e) from e
            self._model.eval()
            self._generation_config = self._model.generation_config
        return self._model

    @property
    def generation_config(self) -> Any:
        """The model's shipped generation_config.json (it can carry e.g. a repetition penalty that greedy
        decoding still applies), read without loading weights."""
        if self._generation_config is None:
            from transformers import GenerationConfig

            revision = self.revision()
            try:
                self._generation_config = GenerationConfig.from_pretrained(self.source, revision=revision)
            except OSError as e:
                raise self._unavailable("the generation config", e) from e
        return self._generation_config

    # -- interface

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes outputs, as loaded (module docstring). Loads processor and generation
        config and hashes the weights files; loads the weights only when no safetensors file is at hand."""
        spec = asdict(self.spec)
        spec.pop("name")
        _, commit = self.checkpoint()
        template = getattr(self.processor, "chat_template", None) or getattr(self.processor.tokenizer, "chat_template", None)
        return {
            "adapter": "hf-chat",
            "baseline": self.name,
            **spec,
            "resolved_commit": commit,
            "weights_sha256": self.weights_sha256(),
            "system_prompt_policy": SYSTEM_PROMPT_POLICY,
            "chat_template_sha256": sha256_text(template if isinstance(template, str) else json.dumps(template, sort_keys=True)),
            "generation_config_sha256": sha256_json(self.generation_config.to_diff_dict()),
            "image_processor": image_processor_config(self.processor),
        }

    def image_part(self, path: Path, record: str) -> dict[str, Any]:
        """An image content part with the image loaded (PIL), the form HF processors' templates take."""
        return {"type": "image", "image": load_image(path, record=record)}

    def build_messages(self, sample: Sample, root: Path) -> list[dict[str, Any]]:
        """HF chat messages for a prompt sample: image parts (:meth:`image_part`) in the sample's order, the
        spec's system prompt merged with the sample's (see module docstring), any final answer turn dropped."""
        images = iter([self.image_part(p, sample.id) for p in resolve_image_paths(sample, root)])
        messages = without_answer_turn(sample.messages)
        system = merged_system_prompt(self.spec.system_prompt, [message_text(m) for m in messages if m["role"] == "system"])
        out = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        for message in messages:
            if message["role"] != "system":
                out.append({"role": message["role"], "content": hf_parts(message, images)})
        return out

    def max_new_tokens(self, settings: DecodeSettings) -> int:
        return self.spec.max_new_tokens or settings.max_new_tokens

    def generate(self, items: Sequence[tuple[Sample, Path]], settings: DecodeSettings = DecodeSettings()) -> list[Completion]:
        if settings.do_sample:
            raise ValueError(f"baseline {self.name!r}: only greedy decoding is supported (do_sample=False)")
        completions: list[Completion] = []
        for start in range(0, len(items), settings.batch_size):
            completions.extend(self.generate_batch(items[start : start + settings.batch_size], settings))
        return completions

    def encode(self, items: Sequence[tuple[Sample, Path]]) -> Any:
        """The left-padded batch the processor's chat template makes for these prompts."""
        conversations = [self.build_messages(sample, root) for sample, root in items]
        return self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True, **self.spec.image.processor_kwargs()},
        )

    @torch.no_grad()
    def generate_batch(self, items: Sequence[tuple[Sample, Path]], settings: DecodeSettings) -> list[Completion]:
        model, tokenizer = self.model, self.processor.tokenizer
        batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in self.encode(items).items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        out = model.generate(
            **batch,
            do_sample=False,
            use_cache=True,
            max_new_tokens=self.max_new_tokens(settings),
            pad_token_id=pad_id,
            **self.spec.generation_kwargs,
        )
        prompt_length = batch["input_ids"].shape[1]
        completions = []
        for (sample, _), row in zip(items, out):
            ids = trim_padding(row[prompt_length:], pad_id)
            raw = tokenizer.decode(ids, skip_special_tokens=False)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            completions.append(Completion(sample.id, raw, extract_answer(text, self.spec.answer_extraction)))
        return completions


# ------------------------------------------------------------------------------------------- Hulu-Med

def hulu_med_modals(n_images: int) -> list[str]:
    """``modals`` for a Hulu-Med prompt, as its official inference passes them: one "image" per image,
    because its model pairs each entry with one image's patch grid (image prompts fail without them), and
    ["text"] for a text-only prompt."""
    return ["image"] * n_images if n_images else ["text"]


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(part["type"] == "image" for message in messages for part in message["content"])


def hulu_med_processor_kwargs(with_images: bool) -> dict[str, Any]:
    """The options of the official processor call: a generation prompt and PyTorch tensors, plus the
    template's default system prompt for prompts with images (the official text-only example omits it)."""
    kwargs: dict[str, Any] = {"add_generation_prompt": True, "return_tensors": "pt"}
    if with_images:
        kwargs["add_system_prompt"] = True
    return kwargs


class HuluMedAdapter(HFChatAdapter):
    """Hulu-Med through its remote code, called as its official inference calls it: image parts by path
    (its processor loads them), one conversation per processor call, ``modals`` passed to ``generate``,
    and the output decoded by the processor with its think blocks removed."""

    def __init__(self, spec: BaselineSpec, model: Any = None, processor: Any = None,
                 local_path: str | Path | None = None):
        if spec.image.processor_kwargs():
            # its image processor sizes images by a token budget (min_tokens/max_tokens), not by pixels
            raise ConfigError(f"baseline {spec.name!r}: Hulu-Med's processor takes no min_pixels/max_pixels; "
                              f"leave image settings null")
        super().__init__(spec, model=model, processor=processor, local_path=local_path)

    def fingerprint(self) -> dict[str, Any]:
        # the calling convention changes the outputs, so it belongs in the prediction-store key
        return {**super().fingerprint(), "adapter": "hulu-med"}

    def image_part(self, path: Path, record: str) -> dict[str, Any]:
        load_image(path, record=record)  # a missing or corrupt file fails here, naming the file and record
        return {"type": "image", "image": {"image_path": str(path)}}

    def encode_prompt(self, sample: Sample, root: Path) -> tuple[Any, list[str]]:
        """The processor's inputs for one prompt, and the prompt's ``modals``."""
        messages = self.build_messages(sample, root)
        n_images = count_image_parts(messages)
        inputs = self.processor(conversation=messages, **hulu_med_processor_kwargs(n_images > 0))
        return inputs, hulu_med_modals(n_images)

    @torch.no_grad()
    def generate_batch(self, items: Sequence[tuple[Sample, Path]], settings: DecodeSettings) -> list[Completion]:
        # one prompt per call whatever the batch size: its processor encodes a single conversation (it
        # drops padding) and its model's visual token compression asserts a batch of one
        return [self.generate_one(sample, root, settings) for sample, root in items]

    def generate_one(self, sample: Sample, root: Path, settings: DecodeSettings) -> Completion:
        model, processor = self.model, self.processor
        inputs, modals = self.encode_prompt(sample, root)
        batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        # set here rather than left to the processor: the official text-only call passes ["text"] itself
        batch["modals"] = modals
        out = model.generate(
            **batch,
            do_sample=False,
            use_cache=True,
            max_new_tokens=self.max_new_tokens(settings),
            pad_token_id=processor.tokenizer.eos_token_id,
            **self.spec.generation_kwargs,
        )
        # its generate embeds the prompt and passes only the embeddings on, so ``out`` holds just new tokens
        raw = processor.tokenizer.decode(out[0], skip_special_tokens=False)
        text = processor.batch_decode(out, skip_special_tokens=True, use_think=False)[0].strip()
        # the official decode drops closed think blocks; the spec's extraction also makes an unfinished
        # one (the budget ran out mid-thought) score as no answer, as for the other baselines
        return Completion(sample.id, raw, extract_answer(text, self.spec.answer_extraction))


# Baselines whose remote code needs an adapter of its own, by the hub repo that ships that code.
REMOTE_CODE_ADAPTERS: dict[str, type[HFChatAdapter]] = {"ZJU-AI4H/Hulu-Med-32B": HuluMedAdapter}


def adapter_class(spec: BaselineSpec) -> type[HFChatAdapter]:
    return REMOTE_CODE_ADAPTERS.get(spec.hub_id, HFChatAdapter)


def load_baseline(name: str, local_path: str | Path | None = None, path: str | Path = BASELINES_YAML) -> HFChatAdapter:
    """The adapter for a baseline by name; nothing is loaded until it is used."""
    spec = get_spec(name, path)
    return adapter_class(spec).from_spec(spec, local_path=local_path)
