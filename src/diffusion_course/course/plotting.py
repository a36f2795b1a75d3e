"""Figures shared by chapters: image grids of digits (or any [N, C, H, W] images in [-1, 1])."""
from __future__ import annotations

import torch

from ..data.transforms import to_unit


def tile(images: torch.Tensor, nrow: int, pad: int = 1) -> torch.Tensor:
    """[N, 1, H, W] (or [N, 3, H, W]) in [-1, 1] -> one picture in [0, 1] (``[rows*(H+2p),
    cols*(W+2p)]``, or ``[..., 3]`` for colour), ``nrow`` images per row, white borders of
    ``pad`` pixels around each image, white filler cells: ``torchvision.utils.make_grid``."""
    from torchvision.utils import make_grid

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    # make_grid puts 2 * pad between images and at the edges; crop the edges to pad
    grid = make_grid(to_unit(images.detach().float().cpu().clamp(-1, 1)), nrow=nrow, padding=2 * pad,
                     pad_value=1.0)
    grid = grid[:, pad:grid.shape[1] - pad, pad:grid.shape[2] - pad]
    return grid[0] if images.shape[1] == 1 else grid.permute(1, 2, 0)


def image_grid(ax, images: torch.Tensor, nrow: int, title: str | None = None) -> None:
    """Draw ``tile(images, nrow)`` on a matplotlib axis, without ticks."""
    ax.imshow(tile(images, nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
    if title:
        ax.set_title(title)


def plain_log_labels() -> None:
    """Every log axis from now on labels its ticks as plain numbers ("2", "0.05", "300"), not
    matplotlib's "2 x 10^0": ``report.setup_matplotlib`` calls it for every chapter."""
    from matplotlib import scale, ticker

    class PlainLogFormatter(ticker.LogFormatter):
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    class PlainLogScale(scale.LogScale):
        def set_default_locators_and_formatters(self, axis):
            super().set_default_locators_and_formatters(axis)
            axis.set_major_formatter(PlainLogFormatter(self.base))
            axis.set_minor_formatter(PlainLogFormatter(self.base, labelOnlyBase=False))

    scale.register_scale(PlainLogScale)
