"""Run profiles (``tiny`` and ``paper``) and the vision-encoder registry, both loaded from YAML data.

One code path serves both profiles: a profile only says *which* checkpoints and sizes to use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from medkit.config import ConfigError, from_dict, load_yaml

CONFIG_DIR = Path(str(resources.files("medkit") / "configs"))
# the baselines registry: read by the evaluator (medkit.eval.baselines) and, without torch, by reporting
BASELINES_PATH = CONFIG_DIR / "baselines.yaml"
PROFILE_NAMES = ("tiny", "paper")


@dataclass(frozen=True)
class EncoderSpec:
    """One vision encoder of the registry: where its weights live and how its features are read."""

    name: str
    description: str
    model_type: str  # transformers model_type of the vision config (clip_vision_model, siglip_vision_model, vit)
    hub_id: str
    weights_format: Literal["transformers", "open_clip"]
    feature_layer: int
    select_strategy: Literal["default", "full"]  # "default" drops the CLS token
    image_mean: list[float]
    image_std: list[float]
    paper: dict[str, Any]
    tiny: dict[str, Any]

    def config_kwargs(self, profile: str) -> dict[str, Any]:
        if profile not in PROFILE_NAMES:
            raise ConfigError(f"unknown profile {profile!r}; known: {list(PROFILE_NAMES)}")
        return dict(self.paper if profile == "paper" else self.tiny)


@cache
def encoder_registry() -> dict[str, EncoderSpec]:
    with (CONFIG_DIR / "encoders.yaml").open(encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    return {
        name: from_dict(EncoderSpec, {"name": name, **spec}, where=f"encoders.yaml:{name}")
        for name, spec in raw.items()
    }


def get_encoder(name: str) -> EncoderSpec:
    registry = encoder_registry()
    if name not in registry:
        raise ConfigError(f"unknown vision encoder {name!r}; registered encoders: {sorted(registry)}")
    return registry[name]


@dataclass
class ModelSection:
    encoder: str = "clip"
    language_model: str = "tiny"  # "tiny", a hub id or a local checkpoint folder
    tokenizer: str = "tiny"
    encoder_path: str | None = None  # local folder of the encoder weights; default: the registry's hub id
    # hub id -> the commit (best: a full sha), tag or branch to load it at, for the language model and the
    # encoder; a hub id not listed loads the hub's latest commit. Local folders are read as they are.
    revisions: dict[str, str] = field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # the language model's attention for training: "eager" (dense L x L masks over packed rows),
    # "packed_eager" (the same eager attention run per sample of a row: the tiny profile's, on CPU) or
    # "flex_attention" (document-aware block masks built on the GPU from the packed rows' positions;
    # no L x L tensor). See medkit.model.attention. Evaluation decodes with transformers' default for GptOss
    # (eager: prompts of a few thousand tokens, a KV cache, and no per-shape flex recompiles).
    attn_implementation: Literal["eager", "packed_eager", "flex_attention"] = "eager"
    downsample_ratio: float = 0.5
    projector_hidden_act: str = "gelu"
    text_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class TilingSection:
    max_tiles: int = 12
    min_tiles: int = 1
    use_thumbnail: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ConfigError(f"tiling: need 1 <= min_tiles <= max_tiles, got {self.min_tiles}, {self.max_tiles}")


@dataclass
class ChatSection:
    date: str = "2025-06-28"  # pinned so rendered prompts are reproducible
    reasoning_effort: Literal["low", "medium", "high"] = "low"


@dataclass
class EvalSection:
    """Profile-level evaluation settings."""

    # new tokens per item for every benchmark (null: each benchmark's own budget, which leaves room for
    # GPT-oss's analysis channel; the tiny toy model needs no such room and would only spend CPU time)
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"eval.max_new_tokens must be a positive integer, got {self.max_new_tokens}")


@dataclass
class DataSection:
    corpus_seed: int = 0


@dataclass
class TrainingSection:
    """Profile-level stand-ins for the stage configs' paper values (null: use the stage's own)."""

    per_device_batch_size: int | None = None
    global_batch_size: int | None = None
    max_steps: int | None = None  # optimizer steps of every stage (null: the stage's epochs)
    stage_steps: dict[str, int] = field(default_factory=dict)  # stage name -> steps, overriding max_steps
    # stage name -> one rate for every part, or {vision, projector, llm} rates (parts left out keep the
    # stage config's own)
    learning_rate: dict[str, float | dict[str, float]] = field(default_factory=dict)
    # stage name -> {synthetic task: weight}: how many times each training record of the task is drawn per
    # epoch (2.0: twice; 0.5: a seeded half); tasks left out keep 1. Only the synthetic corpus (tiny
    # profile) is weighted: Table 1's mixture trains every record once, as the paper does, and a stage
    # given a data root refuses weights rather than ignore them.
    task_weights: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from medkit.training.stages import STAGE_NAMES  # the stage configs' names (no cycle: stages reads profiles lazily)

        for setting in ("stage_steps", "learning_rate", "task_weights"):
            unknown = sorted(set(getattr(self, setting)) - set(STAGE_NAMES))
            if unknown:
                raise ConfigError(f"training.{setting}: unknown stage(s) {unknown}; stages: {list(STAGE_NAMES)}")
        for stage, rate in self.learning_rate.items():
            parts = set(rate) if isinstance(rate, dict) else set()
            if parts - {"vision", "projector", "llm"}:
                raise ConfigError(f"training.learning_rate.{stage}: unknown part(s) {sorted(parts - {'vision', 'projector', 'llm'})}; "
                                  "parts: vision, projector, llm")
        for stage, weights in self.task_weights.items():
            bad = {task: w for task, w in weights.items() if not (isinstance(w, (int, float)) and w > 0)}
            if bad:
                raise ConfigError(f"training.task_weights.{stage}: weights must be positive numbers, got {bad}")

    def steps(self, stage: str) -> int | None:
        return self.stage_steps.get(stage, self.max_steps)


@dataclass
class StandinLM:
    """The tiny language model's stand-in for the released GPT-oss (medkit.training.standins)."""

    data: list[str]  # synthetic-corpus tasks whose training conversations it learns, images stripped
    epochs: float
    learning_rate: float
    batch_size: int
    # a pass over these tasks alone, after the mixed one (or before it: focus_first), for tasks the mixed
    # pass under-trains (a release tuned on them)
    focus_data: list[str] = field(default_factory=list)
    focus_epochs: float = 0.0
    # the focus pass before the mixed one (the mixed pass then restores what the focus pass displaced)
    focus_first: bool = False


@dataclass
class StandinEncoder:
    """The tiny vision towers' stand-in for their released pretraining (medkit.training.standins)."""

    epochs: float
    learning_rate: float
    batch_size: int


@dataclass
class StandinSection:
    """What the tiny profile trains in place of released checkpoints (none: the profile loads releases)."""

    language_model: StandinLM | None = None
    encoder: StandinEncoder | None = None


@dataclass
class Profile:
    name: str
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    tiling: TilingSection = field(default_factory=TilingSection)
    chat: ChatSection = field(default_factory=ChatSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    standins: StandinSection = field(default_factory=StandinSection)

    @property
    def encoder(self) -> EncoderSpec:
        return get_encoder(self.model.encoder)

    @property
    def is_tiny(self) -> bool:
        return self.model.language_model == "tiny"


def load_profile(name_or_path: str | Path, **model_overrides: Any) -> Profile:
    """Load ``tiny``, ``paper`` or a YAML file path; ``model_overrides`` replace model fields (e.g. encoder)."""
    path = Path(name_or_path)
    if str(name_or_path) in PROFILE_NAMES:
        path = CONFIG_DIR / "profiles" / f"{name_or_path}.yaml"
    elif path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"unknown profile {str(name_or_path)!r}; use one of {list(PROFILE_NAMES)} or a YAML file")
    profile = load_yaml(Profile, path)
    for key, value in model_overrides.items():
        if not hasattr(profile.model, key):
            raise ConfigError(f"unknown model option {key!r}")
        setattr(profile.model, key, value)
    get_encoder(profile.model.encoder)  # fail now on an unknown encoder name
    return profile
