"""Curation filters remove exactly the planted bad items and say why; unreadable images are named."""

import random

import imagehash
import numpy as np
import pytest
from PIL import Image

from medkit.data.curation import (
    CurationError,
    PHashIndex,
    curate,
    filter_caption_length,
    filter_min_image_size,
    filter_near_duplicate_images,
    filter_near_duplicate_texts,
    filter_single_panel,
    find_gutters,
    text_minhash,
)
from medkit.data.schema import Sample

CAPTION = ("Axial contrast enhanced computed tomography of the abdomen shows a well circumscribed hypodense "
           "lesion in segment seven of the liver measuring about four centimetres with peripheral nodular "
           "enhancement on the arterial phase and progressive centripetal fill in on delayed images typical "
           "of a hepatic haemangioma")
OTHER_CAPTIONS = [
    "Haematoxylin and eosin stained section of skin showing nests of atypical melanocytes at the dermal "
    "epidermal junction with pagetoid spread and a brisk lymphocytic infiltrate in the papillary dermis",
    "Frontal chest radiograph with a right sided pleural effusion blunting the costophrenic angle and "
    "mild cardiomegaly without focal consolidation or pneumothorax in either lung field",
    "Sagittal T2 weighted magnetic resonance image of the lumbar spine demonstrating a posterior disc "
    "protrusion at the L4 L5 level compressing the traversing nerve root on the left side",
]


def blob(seed: int, size: tuple[int, int] = (256, 256)) -> Image.Image:
    """A smooth random colour image: distinct seeds give pHashes ~30 bits apart."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def two_panel(seed: int) -> Image.Image:
    image = Image.new("RGB", (256, 256), "white")
    image.paste(blob(seed, (120, 256)), (0, 0))
    image.paste(blob(seed + 1, (120, 256)), (136, 0))  # 16 px white gutter between the panels
    return image


def framed(seed: int) -> Image.Image:
    image = Image.new("RGB", (256, 256), "black")
    image.paste(blob(seed, (216, 216)), (20, 20))  # a dark border is not a gutter
    return image


def pair(sample_id: str, image: str | None, caption: str) -> Sample:
    user = [{"type": "image"}, {"type": "text", "text": "Describe the image."}] if image else "Describe."
    return Sample(id=sample_id, images=[image] if image else [],
                  messages=[{"role": "user", "content": user}, {"role": "assistant", "content": caption}])


@pytest.fixture
def corpus(tmp_path):
    """Four clean pairs plus one planted item per filter."""
    files = {
        "a.png": blob(10), "b.png": blob(11), "c.png": blob(12), "d.png": framed(13),
        "two_panel.png": two_panel(20), "tiny.png": blob(30, (40, 40)),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    blob(10).resize((180, 180)).save(tmp_path / "a_copy.jpg", quality=60)  # re-encoded, resized copy of a.png
    blob(40).save(tmp_path / "e.png")
    samples = [
        pair("a", "a.png", CAPTION), pair("b", "b.png", OTHER_CAPTIONS[0]), pair("c", "c.png", OTHER_CAPTIONS[1]),
        pair("d", "d.png", OTHER_CAPTIONS[2]),
        pair("multi", "two_panel.png", "Two panels: left axial and right coronal reformats of the same study"),
        pair("small", "tiny.png", "A small thumbnail of a dermoscopy image with a pigmented lesion"),
        pair("img_dup", "a_copy.jpg", "An unrelated caption about an ultrasound of the thyroid gland nodule"),
        pair("short", "b.png", "CT scan"),
        pair("txt_dup", "e.png", CAPTION.replace("haemangioma", "hemangioma")),
    ]
    return samples, tmp_path


def ids(samples):
    return [s.id for s in samples]


def test_gutter_heuristic():
    assert find_gutters(two_panel(1)) == [("column", 127)]
    assert find_gutters(blob(1)) == []
    assert find_gutters(framed(1)) == []
    stacked = Image.new("L", (200, 300), 0)  # black horizontal gutter between two stacked panels
    stacked.paste(blob(2, (200, 140)).convert("L"), (0, 0))
    stacked.paste(blob(3, (200, 140)).convert("L"), (0, 160))
    assert find_gutters(stacked) == [("row", 149)]


def test_single_panel_filter_removes_the_two_panel_figure(corpus):
    samples, root = corpus
    result = filter_single_panel(samples, root)
    assert result.report.removed == {"multi_panel": ["multi"]}
    assert ids(result.kept) == [i for i in ids(samples) if i != "multi"]


def test_min_image_size_filter(corpus):
    samples, root = corpus
    result = filter_min_image_size(samples, root, min_side=64)
    assert result.report.removed == {"image_too_small": ["small"]}
    assert result.report.counts == {"image_too_small": 1} and result.report.n_in == len(samples)


def test_caption_length_bounds(corpus):
    samples, _ = corpus
    result = filter_caption_length(samples, min_words=5, max_words=40)
    assert result.report.removed == {"caption_too_short": ["short"], "caption_too_long": ["a", "txt_dup"]}
    assert filter_caption_length(samples, min_words=5, max_words=512).report.removed_ids == {"short"}


def test_near_duplicate_images_keep_the_first(corpus):
    samples, root = corpus
    result = filter_near_duplicate_images(samples, root, max_distance=6)
    # "short" reuses b.png verbatim; "img_dup" is a.png resized and re-encoded as JPEG
    assert result.report.removed == {"near_duplicate_image": ["img_dup", "short"]}
    assert result.report.duplicate_of == {"img_dup": "a", "short": "b"}


def test_near_duplicate_caption_with_one_word_changed(corpus):
    samples, _ = corpus
    result = filter_near_duplicate_texts(samples, threshold=0.7)
    assert result.report.removed == {"near_duplicate_text": ["txt_dup"]}
    assert result.report.duplicate_of == {"txt_dup": "a"}
    exact = text_minhash(CAPTION.upper() + " !").jaccard(text_minhash(CAPTION))
    assert exact == 1.0  # case and punctuation are normalised away


def test_curate_runs_every_filter_and_is_deterministic(corpus):
    samples, root = corpus
    kept, reports = curate(samples, root)
    assert ids(kept) == ["a", "b", "c", "d"]
    removed = {r.filter: r.removed for r in reports}
    assert removed == {
        "caption_length": {"caption_too_short": ["short"]},
        "min_image_size": {"image_too_small": ["small"]},
        "single_panel": {"multi_panel": ["multi"]},
        "near_duplicate_images": {"near_duplicate_image": ["img_dup"]},
        "near_duplicate_texts": {"near_duplicate_text": ["txt_dup"]},
    }
    assert ids(curate(samples, root)[0]) == ids(kept)


def test_unreadable_image_names_file_and_record(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bad = pair("rec-7", "broken.png", CAPTION)
    with pytest.raises(CurationError, match=r"broken\.png.*'rec-7'"):
        filter_single_panel([bad], tmp_path)
    with pytest.raises(CurationError, match=r"missing\.png.*'rec-8'"):
        filter_min_image_size([pair("rec-8", "missing.png", CAPTION)], tmp_path)


def random_phash(rng: random.Random) -> imagehash.ImageHash:
    return imagehash.hex_to_hash(f"{rng.getrandbits(64):016x}")


def flip_bits(phash: imagehash.ImageHash, n: int, rng: random.Random) -> imagehash.ImageHash:
    value = int(str(phash), 16)
    for bit in rng.sample(range(64), n):
        value ^= 1 << bit
    return imagehash.hex_to_hash(f"{value:016x}")


@pytest.mark.parametrize("radius", [0, 1, 6, 10, 20])
def test_phash_index_finds_exactly_what_a_linear_scan_finds(radius):
    """Every indexed hash within the radius, none beyond, distances as ImageHash computes them, in
    insertion order; queries include hashes a few bits either side of the radius from indexed ones."""
    rng = random.Random(radius)
    indexed = [random_phash(rng) for _ in range(1100)]  # past the index's first allocation of 1,024
    indexed += [flip_bits(h, rng.randint(0, radius + 2), rng) for h in indexed[:100]]  # near neighbours
    index = PHashIndex(radius)
    for i, h in enumerate(indexed):
        index.add(h, f"img-{i}")
    queries = [flip_bits(rng.choice(indexed), rng.randint(0, radius + 3), rng) for _ in range(100)]
    queries += [random_phash(rng) for _ in range(20)]
    hits = 0
    for query in queries:
        linear = [(f"img-{i}", query - h) for i, h in enumerate(indexed) if query - h <= radius]
        assert index.within(query) == linear
        hits += bool(linear)
    assert hits >= 20 and len(index) == 1200  # the check above compared real matches, not empty lists


def test_phash_index_radius_must_fit_the_hash():
    with pytest.raises(ValueError, match="0..63"):
        PHashIndex(64)
    with pytest.raises(ValueError, match="-1"):
        PHashIndex(-1)
