import pytest
import torch
from PIL import Image

from medkit.model.image_processing import (
    ImageLoadError,
    TileImageProcessor,
    candidate_grids,
    choose_grid,
    dynamic_tiles,
    load_image,
)


def test_candidate_grids_respect_bounds():
    grids = candidate_grids(1, 12)
    assert all(1 <= c * r <= 12 for c, r in grids)
    assert (3, 4) in grids and (12, 1) in grids and (1, 1) in grids
    assert (5, 3) not in grids  # 15 tiles
    assert [c * r for c, r in grids] == sorted(c * r for c, r in grids)


@pytest.mark.parametrize(
    "size, expected",
    [
        ((336, 336), (1, 1)),  # exactly one tile
        ((672, 672), (2, 2)),  # square, enough pixels to fill 4 tiles
        ((1008, 336), (3, 1)),  # wide 3:1
        ((336, 1344), (1, 4)),  # tall 1:4
        ((4000, 100), (12, 1)),  # extreme aspect capped at 12 tiles
        ((400, 300), (4, 3)),  # 4:3 ratio matched exactly even when upscaling
    ],
)
def test_choose_grid_matches_aspect_ratio(size, expected):
    assert choose_grid(*size, tile_size=336, max_tiles=12) == expected


def test_small_square_image_not_blown_up():
    # a 200x200 image has too few pixels to fill 2x2 tiles of 336: stays one tile
    assert choose_grid(200, 200, tile_size=336) == (1, 1)


@pytest.mark.parametrize("w,h", [(50, 2000), (2000, 50), (999, 998), (1337, 421), (64, 64), (3000, 3000)])
def test_tile_count_never_exceeds_13(w, h):
    tiles = dynamic_tiles(Image.new("RGB", (w, h)), tile_size=336, max_tiles=12, use_thumbnail=True)
    assert 1 <= len(tiles) <= 13
    assert all(t.size == (336, 336) for t in tiles)
    if len(tiles) > 1:  # thumbnail only with more than one grid tile
        cols, rows = choose_grid(w, h, 336)
        assert len(tiles) == cols * rows + 1


def test_tiles_are_row_major_and_thumbnail_last():
    img = Image.new("RGB", (128, 64))
    img.paste((255, 0, 0), (0, 0, 64, 64))  # left half red
    img.paste((0, 0, 255), (64, 0, 128, 64))  # right half blue
    tiles = dynamic_tiles(img, tile_size=64, max_tiles=4)
    assert len(tiles) == 3
    assert tiles[0].getpixel((32, 32)) == (255, 0, 0)
    assert tiles[1].getpixel((32, 32)) == (0, 0, 255)
    assert tiles[2].getpixel((8, 32))[0] > 200 and tiles[2].getpixel((56, 32))[2] > 200


def test_processor_normalises_and_counts_tiles():
    proc = TileImageProcessor(tile_size=64, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), max_tiles=4)
    out = proc([Image.new("RGB", (64, 64), (255, 255, 255)), Image.new("RGB", (128, 64), (0, 0, 0))])
    assert out.tiles_per_image == [1, 3]
    assert out.pixel_values.shape == (4, 3, 64, 64)
    assert torch.allclose(out.pixel_values[0], torch.ones(3, 64, 64))
    assert torch.allclose(out.pixel_values[1:], -torch.ones(3, 3, 64, 64))


def test_missing_image_error_names_file_and_record(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.png \(record case-7\): image file not found"):
        load_image(tmp_path / "nope.png", record="case-7")


def test_corrupt_image_error_names_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageLoadError, match=r"bad\.png.*corrupt or unreadable"):
        load_image(bad)


def test_truncated_image_fails_at_load(tmp_path):
    good = tmp_path / "x.png"
    Image.effect_noise((64, 64), 50).save(good)
    truncated = tmp_path / "t.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match=r"t\.png"):
        load_image(truncated)
