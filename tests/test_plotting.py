import pytest
import torch

from diffusion_course.course.plotting import tile


def test_tile_places_each_image_and_leaves_white_borders():
    imgs = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # 3 images, 2x3
    canvas = tile(imgs, nrow=2, pad=1)
    assert canvas.shape == (2 * 4, 2 * 5)
    assert torch.all(canvas[1:3, 1:4] == 0.0)      # image 0: -1 -> 0
    assert torch.all(canvas[1:3, 6:9] == 0.5)      # image 1: 0 -> 0.5, second column
    assert torch.all(canvas[5:7, 1:4] == 1.0)      # image 2: next row
    assert torch.all(canvas[4:8, 5:10] == 1.0)     # empty cell stays white
    assert canvas[0].eq(1).all() and canvas[:, 0].eq(1).all()   # borders


def test_tile_clamps_out_of_range_values_and_rejects_bad_shapes():
    assert tile(torch.full((1, 1, 2, 2), 5.0), nrow=1, pad=0).eq(1).all()
    with pytest.raises(ValueError, match=r"\[N, 1 or 3, H, W\]"):
        tile(torch.zeros(2, 28, 28), nrow=2)
    with pytest.raises(ValueError, match="nrow"):
        tile(torch.zeros(2, 1, 28, 28), nrow=0)
