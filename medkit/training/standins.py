"""The tiny profile's stand-ins for the released checkpoints the paper starts from.

The paper adapts a pretrained GPT-oss-20B and pretrained vision encoders; the tiny profile's toy models
are random. Each is therefore trained once on the synthetic corpus's *training* split and cached beside
the corpus (``<corpus>/../standins/<kind>-<key>/``), keyed by a hash of everything that decides its
weights: the corpus manifest, the profile's model section, the tokenizer's files, the stand-in's settings
and the seed. The ablation (every encoder) and the curriculum's first stage start from the same files,
as both start from the same releases on the paper profile.

* **language model** (the GPT-oss stand-in): the toy LLM trained on the training conversations with
  their images removed, so it knows the corpus's language and the harmony reply format.
* **vision encoder** (one per registry entry): the toy tower trained to name what the generator drew in
  each training image (modality, finding, side, zone, severity, view, organ, density, tissue, region)
  from the pixel-shuffled features the projector reads; the visual vocabulary a released encoder brings
  from its own pretraining. The heads are dropped afterwards; only the tower is kept.

Both run a fixed number of epochs over their data, so a smoke-size corpus trains them in seconds.

The stand-ins of the embedded default (the tiny profile on its default corpus) ship with the kit under
``medkit/assets/standins/``, as released checkpoints are downloaded rather than trained: a run whose keys
match copies them instead of training (about 1.5 min on 2 cores). ``python -m medkit.training.standins
ship <corpus>`` rebuilds that folder after a change to the corpus generator, the tiny profile or the
tokenizer; until then such a run trains its own, and says so.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medkit.chat.tokenizer import tokenizer_fingerprint
from medkit.data.synthetic import MANIFEST_NAME
from medkit.profiles import Profile, StandinEncoder, StandinLM

STANDINS_DIR = "standins"
FORMAT = 1  # bump when a change to the training below changes the weights it makes
LM_FILES = ("language_model.safetensors", "lm_head.safetensors")
TOWER_FILE = "vision_tower.safetensors"
LM_ENCODER = "clip"  # the encoder the language model's stand-in is built with (it trains on text only)
# what the generator records per image (meta.image_labels); "anatomy" is a seed, not something seen
IMAGE_ATTRIBUTES = ("modality", "finding", "side", "zone", "severity", "view", "organ", "density", "tissue",
                    "region")
IMAGE_TASKS = ("vqa_mc", "caption", "report", "report_long", "impression")
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "standins"
SHIPPED_RECORD = "SHIPPED.json"  # the corpus digest the shipped stand-ins were trained on, and their folders


def standins_root(corpus_dir: str | Path) -> Path:
    return Path(corpus_dir).resolve().parent / STANDINS_DIR


def corpus_digest(corpus_dir: Path) -> str:
    """sha256 of the corpus manifest, which lists every file's own sha256."""
    return hashlib.sha256((corpus_dir / MANIFEST_NAME).read_bytes()).hexdigest()


def cache_key(kind: str, profile: Profile, corpus_dir: Path, settings, **extra) -> str:
    return key_for(kind, profile, corpus_digest(corpus_dir), settings, **extra)


def key_for(kind: str, profile: Profile, corpus: str, settings, **extra) -> str:
    """The cache key of a stand-in trained on the corpus whose manifest digest is ``corpus``."""
    tokenizer = profile.model.tokenizer
    payload = {"format": FORMAT, "kind": kind, "seed": profile.seed, "model": asdict(profile.model),
               "tiling": asdict(profile.tiling), "chat": asdict(profile.chat), "settings": asdict(settings),
               "corpus": corpus,
               # the profile names its tokenizer; a rebuild changes the vocabulary under the same name
               "tokenizer": tokenizer_fingerprint(tokenizer, profile.model.revisions.get(tokenizer)), **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(target: Path, files: tuple[str, ...], build) -> Path:
    """``target`` holding ``files``: reused when complete, else copied from the kit's shipped stand-ins
    when they hold the same key, else built by ``build(folder)``; either way into a temporary folder that
    is then renamed, so a killed copy or build leaves nothing that looks complete."""
    if all((target / f).is_file() for f in files):
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shipped = SHIPPED_DIR / target.name
    if all((shipped / f).is_file() for f in files):
        shutil.copytree(shipped, partial)
        print(f"[standins] {target.name}: the kit's shipped copy ({SHIPPED_DIR.relative_to(SHIPPED_DIR.parents[2])}), "
              f"not trained; cached in {target.parent}", flush=True)
    else:
        partial.mkdir(parents=True)
        build(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def text_only_profile(profile: Profile) -> Profile:
    """``profile`` with the registry's first encoder: the language model's stand-in learns text alone, and its
    seeded initial weights must not depend on which encoder the caller pairs it with (one stand-in for all)."""
    from dataclasses import replace

    return replace(profile, model=replace(profile.model, encoder=LM_ENCODER))


def ensure_standin_lm(profile: Profile, corpus_dir: str | Path) -> Path:
    """The folder of the language-model stand-in for ``profile`` on this corpus (trained if missing), the
    same for every encoder."""
    corpus_dir = Path(corpus_dir)
    profile = text_only_profile(profile)
    settings = require(profile.standins.language_model, profile, "language_model")
    key = cache_key("language_model", profile, corpus_dir, settings)
    target = standins_root(corpus_dir) / f"language_model-{key}"
    return cached(target, LM_FILES, lambda out: train_standin_lm(profile, settings, corpus_dir, out))


def ensure_standin_encoder(profile: Profile, corpus_dir: str | Path) -> Path:
    """The folder of the stand-in for the profile's vision encoder on this corpus (trained if missing)."""
    corpus_dir = Path(corpus_dir)
    settings = require(profile.standins.encoder, profile, "encoder")
    key = cache_key("encoder", profile, corpus_dir, settings, encoder=asdict(profile.encoder))
    target = standins_root(corpus_dir) / f"encoder-{profile.encoder.name}-{key}"
    return cached(target, (TOWER_FILE,), lambda out: train_standin_encoder(profile, settings, corpus_dir, out))


def require(settings, profile: Profile, part: str):
    if settings is None:
        raise ValueError(f"profile {profile.name!r} has no standins.{part}: it starts from released checkpoints")
    return settings


def load_standins(model, profile: Profile, corpus_dir: str | Path) -> None:
    """Put the stand-in language model and vision tower into ``model`` (a freshly built tiny model)."""
    lm = ensure_standin_lm(profile, corpus_dir)
    model.model.language_model.load_state_dict(load_file(lm / LM_FILES[0]))
    model.lm_head.load_state_dict(load_file(lm / LM_FILES[1]))
    tower = ensure_standin_encoder(profile, corpus_dir)
    model.model.vision_tower.load_state_dict(load_file(tower / TOWER_FILE))


def compose_tiny(profile: Profile, tokenizer, corpus_dir: str | Path):
    """The tiny profile's starting model: stand-in encoder and language model, a fresh projector (seeded)."""
    from medkit.model.build import build_tiny_model

    model = build_tiny_model(profile, tokenizer)
    load_standins(model, profile, corpus_dir)
    return model


# --------------------------------------------------------------------------------------------------
# the language model


def lm_passes(settings: StandinLM) -> list[tuple[list[str], float]]:
    """(tasks, epochs) of each training pass of the language-model stand-in, in order: the mixed pass and
    the focus pass, the focus pass first where ``focus_first``."""
    passes = [(settings.data, settings.epochs)]
    if settings.focus_data and settings.focus_epochs > 0:
        focus = (settings.focus_data, settings.focus_epochs)
        passes = [focus] + passes if settings.focus_first else passes + [focus]
    return passes


def train_standin_lm(profile: Profile, settings: StandinLM, corpus_dir: Path, out: Path) -> None:
    """The toy LLM trained on the corpus's training conversations, images stripped (one process)."""
    from medkit.chat import load_tokenizer
    from medkit.data.dataset import ConversationDataset
    from medkit.model.attention import use_attention
    from medkit.model.build import build_tiny_model
    from medkit.model.processor import MedGPTOssProcessor
    from medkit.training.ablation import load_items, text_only
    from medkit.training.packing import PackingCollator
    from medkit.training.run import single_process_args, train
    from medkit.training.stages import Trainable, apply_trainable

    passes = lm_passes(settings)
    described = ", then ".join(f"{', '.join(tasks)} ({epochs:g} epoch(s))" for tasks, epochs in passes)
    print(f"[standins] training the language-model stand-in on {described}; cached in {out.parent}", flush=True)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = build_tiny_model(profile, tokenizer)
    use_attention(model, profile.model.attn_implementation)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile)
    apply_trainable(model, Trainable(vision=False, projector=False, llm=True))
    rows = PackingCollator(tokenizer.pad_token_id, model.config.text_config.max_position_embeddings)
    losses = []
    for tasks, epochs in passes:
        items = [(text_only(s), root) for s, root in load_items(tasks, corpus_dir, "train")]
        args = single_process_args(out / "trainer", seed=profile.seed, learning_rate=settings.learning_rate,
                                   epochs=epochs, batch_size=settings.batch_size)
        losses += train(model, ConversationDataset(items, processor), rows, args).losses
    shutil.rmtree(out / "trainer", ignore_errors=True)
    save_file(model.model.language_model.state_dict(), out / LM_FILES[0])
    save_file(model.lm_head.state_dict(), out / LM_FILES[1])
    (out / "losses.json").write_text(json.dumps(losses))


# --------------------------------------------------------------------------------------------------
# the vision encoder


def training_images(corpus_dir: Path) -> list[tuple[Path, dict]]:
    """(image file, its generator labels) for every image of the corpus's training split."""
    images = []
    for task in IMAGE_TASKS:
        path = corpus_dir / f"{task}.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["meta"]["split"] == "train":
                images.extend((corpus_dir / name, label)
                              for name, label in zip(record["images"], record["meta"]["image_labels"]))
    return images


def label_targets(labels: list[dict]) -> tuple[dict[str, list[str]], dict[str, torch.Tensor]]:
    """Per attribute: its classes (a missing value is the class "None") and each image's class index, or
    -100 for images the attribute does not apply to (no organ on a radiograph)."""
    classes = {a: sorted({str(l[a]) for l in labels if a in l}) for a in IMAGE_ATTRIBUTES}
    targets = {a: torch.tensor([classes[a].index(str(l[a])) if a in l else -100 for l in labels])
               for a in IMAGE_ATTRIBUTES if classes[a]}
    return classes, targets


def thumbnails(files: list[Path], processor, corpus: str) -> torch.Tensor:
    """Each image as the whole-image tile the model sees (its thumbnail), normalised for the encoder;
    ``corpus`` is the corpus's digest, so a corpus rewritten in place is decoded afresh."""
    return torch.stack([processor.normalise(tile) for tile in resized(tuple(files), processor.tile_size, corpus)])


@functools.lru_cache(maxsize=2)
def resized(files: tuple[Path, ...], size: int, corpus: str) -> tuple:
    """The images decoded and resized to ``size`` (the encoders of one size share them: decoding the
    corpus's ~7,300 training images is a third of a stand-in's time)."""
    from PIL import Image

    return tuple(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC) for f in files)


def projector_inputs(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The pixel-shuffled features the projector reads for these tiles, flattened per tile."""
    from medkit.model.projector import pixel_shuffle

    config = model.config
    hidden = model.model.vision_tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    features = hidden[config.vision_feature_layer]
    if config.vision_feature_select_strategy == "default":
        features = features[:, 1:]  # drop CLS
    return pixel_shuffle(features, config.downsample_ratio).flatten(1)


def train_standin_encoder(profile: Profile, settings: StandinEncoder, corpus_dir: Path, out: Path) -> None:
    """The toy vision tower trained with one linear head per image attribute (summed cross-entropy)."""
    from medkit.chat import load_tokenizer
    from medkit.model.build import build_tiny_model
    from medkit.model.processor import MedGPTOssProcessor

    print(f"[standins] training the {profile.encoder.name} encoder stand-in on the training images "
          f"({settings.epochs:g} epochs); cached in {out.parent}", flush=True)
    tokenizer = load_tokenizer(profile.model.tokenizer)
    model = build_tiny_model(profile, tokenizer)
    processor = MedGPTOssProcessor.for_model(model.config, tokenizer, profile).image_processor
    files, labels = zip(*training_images(corpus_dir))
    pixels = thumbnails(list(files), processor, corpus_digest(corpus_dir))
    classes, targets = label_targets(list(labels))
    torch.manual_seed(profile.seed)
    width = projector_inputs(model, pixels[:1]).shape[1]
    heads = nn.ModuleDict({a: nn.Linear(width, len(classes[a])) for a in targets})
    tower = model.model.vision_tower.train()
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=settings.learning_rate,
                                  weight_decay=0.05)
    steps = max(1, round(settings.epochs * len(pixels) / settings.batch_size))
    generator = torch.Generator().manual_seed(profile.seed)
    losses = []
    for _ in range(steps):
        batch = torch.randint(len(pixels), (settings.batch_size,), generator=generator)
        features = projector_inputs(model, pixels[batch])
        loss = sum(nn.functional.cross_entropy(heads[a](features), t[batch], ignore_index=-100)
                   for a, t in targets.items() if (t[batch] != -100).any())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    save_file(tower.state_dict(), out / TOWER_FILE)
    (out / "losses.json").write_text(json.dumps(losses))
    (out / "classes.json").write_text(json.dumps(classes, indent=1))


# --------------------------------------------------------------------------------------------------
# the shipped copies


def default_standins(corpus_dir: Path) -> list[Path]:
    """The tiny profile's language-model stand-in and every registry encoder's, for this corpus (trained
    where not cached): the folders a ``make reproduce`` run reads."""
    from medkit.profiles import encoder_registry, load_profile

    folders = [ensure_standin_lm(load_profile("tiny"), corpus_dir)]
    folders += [ensure_standin_encoder(load_profile("tiny", encoder=name), corpus_dir) for name in encoder_registry()]
    return folders


def ship(corpus_dir: str | Path, into: Path = SHIPPED_DIR) -> list[str]:
    """Replace the shipped stand-ins with those of ``corpus_dir`` (the default corpus, generated by
    ``medkit corpus`` or notebook 01), recording the corpus digest they belong to."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"{corpus_dir / MANIFEST_NAME}: not a corpus folder (write one with `medkit corpus`)")
    folders = default_standins(corpus_dir)
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    for folder in folders:
        shutil.copytree(folder, into / folder.name)
    record = {"corpus": corpus_digest(corpus_dir), "folders": [f.name for f in folders]}
    (into / SHIPPED_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record["folders"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medkit.training.standins", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ship", help="train (or reuse) the tiny stand-ins of a corpus and ship them with the kit")
    p.add_argument("corpus", help="the default corpus folder, e.g. runs/<run id>/work/corpus")
    args = parser.parse_args(argv)
    for name in ship(args.corpus):
        print(f"shipped {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
