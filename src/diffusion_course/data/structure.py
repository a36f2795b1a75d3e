"""What control and personalisation (chapter 16) read off a digit: its skeleton (the structure
map a ControlNet is given), the crossbar of a "crossed seven" (the concept and subject the
chapter personalises with), and letters (a concept the digit models cannot draw).

All of it is morphology on binary images, written with max-pooling so it runs batched:

    dilate(X) = max over the 3 x 3 neighbourhood,   erode(X) = 1 - dilate(1 - X),
    open(X)   = dilate(erode(X))                     (removes what is thinner than 3 pixels)

Images come in the course's range [-1, 1]; a pixel is ink where it is above 0 (half-way:
``mnist.binarise``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .mnist import binarise

SKELETON_DEPTH = 6      # erosions the skeleton looks through: MNIST strokes are under 12 px thick
CROSSBAR_MIN = 7        # pixels a row of a seven's middle must stick out to count as a crossbar


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """3 x 3 dilation of a [..., H, W] mask in {0, 1}."""
    shape = mask.shape
    out = F.max_pool2d(mask.reshape(-1, 1, *shape[-2:]), 3, stride=1, padding=1)
    return out.reshape(shape)


def erode(mask: torch.Tensor) -> torch.Tensor:
    """3 x 3 erosion (what is left where the whole neighbourhood is ink; outside is not ink)."""
    return 1 - dilate(1 - F.pad(mask, (1, 1, 1, 1)))[..., 1:-1, 1:-1]


def skeleton(mask: torch.Tensor, depth: int = SKELETON_DEPTH) -> torch.Tensor:
    """Lantuejoul's morphological skeleton of a {0, 1} mask: the union over k of
    erode^k(X) - open(erode^k(X)), the points where some inscribed square is maximal.
    It keeps where a stroke runs and drops how thick it is."""
    skel, eroded = torch.zeros_like(mask), mask
    for _ in range(depth + 1):
        skel = torch.maximum(skel, eroded - dilate(erode(eroded)))
        eroded = erode(eroded)
    return skel


def structure_map(x: torch.Tensor) -> torch.Tensor:
    """The structure a ControlNet is given for images x [B, 1, H, W] in [-1, 1]: the skeleton
    of their ink, in {0, 1}."""
    return skeleton(binarise(x))


def crossbar(x: torch.Tensor) -> torch.Tensor:
    """Per image [B, 1, H, W], how far the widest row of the middle band (30-70 % of the ink's
    height) sticks out above the typical row below it (the median of the lowest 30 %): a
    plain seven's diagonal crosses every row in a few pixels, a crossbar adds a spike."""
    rows = binarise(x)[:, 0].sum(-1)                                   # ink pixels per row [B, H]
    r = torch.arange(rows.shape[1], dtype=rows.dtype)
    top = torch.where(rows > 0, r, float(rows.shape[1])).amin(-1, keepdim=True)
    bottom = torch.where(rows > 0, r, -1.0).amax(-1, keepdim=True)
    height = (r - top) / (bottom - top + 1)                       # 0 at the top row of ink, ~1 at the bottom
    band = torch.where((height >= 0.3) & (height <= 0.7), rows, 0.0).amax(-1)
    below = torch.where(height > 0.7, rows, float("nan")).nanmedian(-1).values
    return band - below.nan_to_num(0.0)


def is_crossed_seven(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The rule that defines the chapter's concept: a seven whose crossbar spike is at least
    ``CROSSBAR_MIN`` pixels (about one training seven in eight)."""
    return (labels == 7) & (crossbar(x) >= CROSSBAR_MIN)


def letter(ch: str, rotate: float = 0.0, bold: bool = True) -> torch.Tensor:
    """The letter ``ch`` drawn in a [1, 28, 28] image in [-1, 1] with matplotlib's font,
    rotated by ``rotate`` degrees: a shape no digit model has seen."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(0.56, 0.56), dpi=100)
    canvas = FigureCanvasAgg(fig)
    fig.patch.set_facecolor("black")
    fig.text(0.5, 0.5, ch, fontsize=40, fontweight="bold" if bold else "normal", ha="center",
             va="center", color="white", rotation=rotate,
             fontfamily=matplotlib.rcParams["font.family"])
    canvas.draw()
    img = torch.from_numpy(np.asarray(canvas.buffer_rgba())[..., 0].copy()).float() / 255
    img = F.interpolate(img[None, None], size=(20, 20), mode="area")[0]   # MNIST: 20 x 20 in 28 x 28
    return F.pad(img, (4, 4, 4, 4)).clamp(0, 1) * 2 - 1
