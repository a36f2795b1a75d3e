"""A tiny video for chapter 17's look at video models: a digit sliding across a larger canvas,
one frame per time step."""
from __future__ import annotations

import torch


def moving_digit(image: torch.Tensor, frames: int = 8, size: int = 32,
                 velocity: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """A clip [frames, C, size, size] in [-1, 1]: ``image`` [C, h, w] pasted on a background of
    -1, starting at the top-left corner and moving ``velocity`` = (down, right) pixels per
    frame. The digit must stay on the canvas for the whole clip."""
    c, h, w = image.shape
    dy, dx = velocity
    if min(dy, dx) < 0 or h + dy * (frames - 1) > size or w + dx * (frames - 1) > size:
        raise ValueError(f"a {h}x{w} image moving by {velocity} (down, right; non-negative) for "
                         f"{frames} frames leaves a {size}x{size} canvas")
    clip = torch.full((frames, c, size, size), -1.0, dtype=image.dtype)
    for f in range(frames):
        clip[f, :, f * dy:f * dy + h, f * dx:f * dx + w] = image
    return clip
