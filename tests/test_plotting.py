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


def test_log_axes_label_ticks_as_plain_numbers():
    """After setup_matplotlib, a log axis reads "2", "0.1", "300", never "2 x 10^0"."""
    import matplotlib.pyplot as plt

    from diffusion_course.course.report import setup_matplotlib

    setup_matplotlib()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 5], [0.05, 0.3, 300])
    ax.set_xscale("log")
    ax.set_yscale("log")
    fig.canvas.draw()
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    major = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert "2" in minor and "3" in minor and "0.1" in major and "100" in major
    assert not any("10^" in t or "times" in t or "$" in t for t in minor + major), minor + major
