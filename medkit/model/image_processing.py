"""Images -> normalised tiles: safe loading, the paper's dynamic tiling and per-encoder normalisation.

Dynamic tiling (as in InternVL, which the paper follows): pick the (cols x rows) grid with at most
``max_tiles`` tiles whose aspect ratio is closest to the image's, resize the image onto that grid of
encoder-sized tiles, and add a whole-image thumbnail when there is more than one tile.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageLoadError(ValueError):
    """An image that is missing, cannot be decoded or is too large; the message names the file (and record)."""


# The most pixels medkit decodes from one image. Real medical images are far below it: chest radiographs
# are ~3,000 x 3,000 (9 M), MIMIC-CXR's largest ~4,000 x 3,000 (12 M), pathology crops and MMMU figures
# smaller still. 50 M (~7,000 x 7,000, 150 MB as RGB) keeps a margin over all of them while refusing a
# decompression bomb (a few-KB PNG declaring 20,000 x 20,000 = 400 M pixels, 1.2 GB as RGB) from its header,
# before a pixel is decoded. PIL's own guard (Image.MAX_IMAGE_PIXELS: a warning above ~89 M, an error above
# ~179 M) is higher and names no record, so medkit checks its own first.
MAX_IMAGE_PIXELS = 50_000_000

PIL_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")  # PIL's "Image size (400000000 pixels) exceeds limit ..."


def image_where(path, record: str | None, name: str | None = None) -> str:
    return f"{name or path}" + (f" (record {record})" if record else "")


def check_pixels(size: tuple[int, int], where: str) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS pixels (a likely decompression bomb)."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageLoadError(f"{where}: image of {width} x {height} = {width * height:,} pixels exceeds medkit's "
                             f"limit of {MAX_IMAGE_PIXELS:,} pixels (MAX_IMAGE_PIXELS); refused before decoding, as a "
                             f"likely decompression bomb")


def bomb_error(error: Exception, where: str) -> ImageLoadError:
    """PIL refused the header first (above its own, higher limit): the same error, with the size PIL saw."""
    found = PIL_BOMB_SIZE.search(str(error))
    size = f"{int(found.group(1)):,} pixels" if found else "more pixels than PIL allows"
    return ImageLoadError(f"{where}: image of {size} exceeds medkit's limit of {MAX_IMAGE_PIXELS:,} pixels "
                          f"(MAX_IMAGE_PIXELS); refused before decoding, as a likely decompression bomb")


@contextmanager
def opened_image(path, where: str) -> Iterator[Image.Image]:
    """The image with its header read and its size checked, pixels not decoded yet; every failure inside,
    decoding included, is an ImageLoadError naming ``where``."""
    try:
        with Image.open(path) as img:
            check_pixels(img.size, where)
            yield img
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{where}: image file not found") from None
    # the warning arrives as an exception only where warnings are errors (python -W error)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise bomb_error(e, where) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{where}: corrupt or unreadable image ({e})") from None


def image_size(path, record: str | None = None, name: str | None = None) -> tuple[int, int]:
    """(width, height) from the file header (a path, or a file object named ``name``), with the same errors
    as :func:`load_image`, the pixel limit included."""
    with opened_image(path, image_where(path, record, name)) as img:
        return img.size


def load_image(path, record: str | None = None, name: str | None = None) -> Image.Image:
    """Open and fully decode an image (a path, or a file object named ``name``) as RGB, failing with a
    message naming the file and record; an image over MAX_IMAGE_PIXELS is refused from its header."""
    with opened_image(path, image_where(path, record, name)) as img:
        img.load()  # decode now, so truncated files fail here and not mid-batch
        return img.convert("RGB")


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """All (cols, rows) grids with min_tiles <= cols*rows <= max_tiles, fewest tiles first."""
    grids = {
        (cols, rows)
        for n in range(min_tiles, max_tiles + 1)
        for cols in range(1, n + 1)
        for rows in range(1, n + 1)
        if min_tiles <= cols * rows <= max_tiles
    }
    return sorted(grids, key=lambda g: (g[0] * g[1], g))


def choose_grid(width: int, height: int, tile_size: int, min_tiles: int = 1, max_tiles: int = 12) -> tuple[int, int]:
    """The (cols, rows) grid whose aspect ratio best matches the image.

    Ties in aspect ratio go to the larger grid only while the image has enough pixels to fill more than
    half of it, so small images are not blown up into many tiles.
    """
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def dynamic_tiles(
    image: Image.Image, tile_size: int, min_tiles: int = 1, max_tiles: int = 12, use_thumbnail: bool = True
) -> list[Image.Image]:
    """Cut an image into grid tiles (row-major) plus a thumbnail when there is more than one tile."""
    cols, rows = choose_grid(image.width, image.height, tile_size, min_tiles, max_tiles)
    resized = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return tiles


@dataclass
class TiledImages:
    pixel_values: torch.Tensor  # (total_tiles, 3, tile_size, tile_size)
    tiles_per_image: list[int]


@dataclass
class TileImageProcessor:
    """Turns a list of images into one stacked tensor of normalised tiles for the vision encoder."""

    tile_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    max_tiles: int = 12
    min_tiles: int = 1
    use_thumbnail: bool = True

    def max_tiles_per_image(self) -> int:
        return self.max_tiles + (1 if self.use_thumbnail and self.max_tiles > 1 else 0)

    def tile_count(self, width: int, height: int) -> int:
        """Tiles an image of this size becomes (grid plus thumbnail), without touching its pixels."""
        cols, rows = choose_grid(width, height, self.tile_size, self.min_tiles, self.max_tiles)
        return cols * rows + (1 if self.use_thumbnail and cols * rows > 1 else 0)

    def normalise(self, tile: Image.Image) -> torch.Tensor:
        array = np.asarray(tile, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def __call__(self, images: list[Image.Image]) -> TiledImages:
        tensors, counts = [], []
        for image in images:
            tiles = dynamic_tiles(image, self.tile_size, self.min_tiles, self.max_tiles, self.use_thumbnail)
            tensors.extend(self.normalise(t) for t in tiles)
            counts.append(len(tiles))
        if not tensors:
            return TiledImages(torch.empty(0, 3, self.tile_size, self.tile_size), [])
        return TiledImages(torch.stack(tensors), counts)
