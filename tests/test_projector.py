import pytest
import torch
from transformers.models.internvl.modeling_internvl import InternVLModel

from medkit.model.projector import pixel_shuffle


@pytest.mark.parametrize("side, channels", [(24, 1024), (8, 16), (32, 8), (14, 4)])
def test_pixel_shuffle_shapes(side, channels):
    x = torch.randn(3, side * side, channels)
    out = pixel_shuffle(x, 0.5)
    assert out.shape == (3, (side // 2) ** 2, channels * 4)


def test_pixel_shuffle_matches_transformers_internvl():
    x = torch.randn(2, 64, 6)
    ref = InternVLModel.pixel_shuffle(None, x.reshape(2, 8, 8, 6), 0.5).reshape(2, 16, 24)
    assert torch.equal(pixel_shuffle(x, 0.5), ref)


def test_pixel_shuffle_merges_2x2_neighbourhoods():
    side = 4
    grid = torch.arange(side * side, dtype=torch.float32).reshape(1, side * side, 1)  # patch index as feature
    out = pixel_shuffle(grid, 0.5)
    # each output token holds exactly the 4 patches of one 2x2 block
    blocks = [sorted(int(v) for v in out[0, t]) for t in range(4)]
    assert blocks == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_pixel_shuffle_rejects_odd_or_non_square_grids():
    with pytest.raises(ValueError, match="cannot be pixel-shuffled"):
        pixel_shuffle(torch.randn(1, 27 * 27, 4), 0.5)
    with pytest.raises(ValueError, match="square patch grid"):
        pixel_shuffle(torch.randn(1, 50, 4), 0.5)
