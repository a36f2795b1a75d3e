"""Figures shared by chapters: image grids of digits (or any [N, C, H, W] images in [-1, 1])."""
from __future__ import annotations

import math

import torch

from .mnist import to_unit


def tile(images: torch.Tensor, nrow: int, pad: int = 1) -> torch.Tensor:
    """[N, 1, H, W] (or [N, 3, H, W]) in [-1, 1] -> one [rows*(H+2p), nrow*(W+2p)(, 3)] picture
    in [0, 1], nrow images per row, white borders of ``pad`` pixels, white filler cells."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    n, c, h, w = images.shape
    rows, ch, cw = math.ceil(n / nrow), h + 2 * pad, w + 2 * pad
    canvas = torch.ones(c, rows * ch, nrow * cw)
    for i, img in enumerate(to_unit(images.detach().float().cpu().clamp(-1, 1))):
        r, col = divmod(i, nrow)
        canvas[:, r * ch + pad:r * ch + pad + h, col * cw + pad:col * cw + pad + w] = img
    return canvas[0] if c == 1 else canvas.permute(1, 2, 0)


def image_grid(ax, images: torch.Tensor, nrow: int, title: str | None = None) -> None:
    """Draw ``tile(images, nrow)`` on a matplotlib axis, without ticks."""
    ax.imshow(tile(images, nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
    if title:
        ax.set_title(title)
