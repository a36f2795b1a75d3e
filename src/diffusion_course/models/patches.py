"""Spacetime patches (chapter 17): how a diffusion transformer (Peebles and Xie 2023; OpenAI's
Sora report, 2024) turns a video into tokens. A clip [T, C, H, W] is cut into blocks of
t frames x h x w pixels; each block, flattened, is one token of t*h*w*C numbers, and there are

    N = (T / t) (H / h) (W / w)

of them. The transformer then embeds each token linearly, adds a position embedding for its
(frame, row, column) block and runs self-attention over all N, whose cost grows as N^2."""
from __future__ import annotations

import torch


def patch_count(shape: tuple[int, int, int, int], patch: tuple[int, int, int]) -> tuple[int, int]:
    """(number of tokens N, numbers per token) for a clip of ``shape`` (T, C, H, W) cut into
    ``patch`` = (t, h, w) blocks; each of T, H, W must be a multiple of its patch side."""
    frames, c, height, width = shape
    t, h, w = patch
    if frames % t or height % h or width % w:
        raise ValueError(f"a clip of {frames} frames of {height}x{width} does not cut into "
                         f"{t}x{h}x{w} patches: each side must divide")
    return (frames // t) * (height // h) * (width // w), t * h * w * c


def spacetime_patches(clip: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """[T, C, H, W] -> tokens [N, t*h*w*C], in (frame block, row block, column block) order."""
    frames, c, height, width = clip.shape
    patch_count(tuple(clip.shape), patch)                           # checks the sides divide
    t, h, w = patch
    x = clip.reshape(frames // t, t, c, height // h, h, width // w, w)
    return x.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, t * h * w * c)


def unpatch(tokens: torch.Tensor, shape: tuple[int, int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of ``spacetime_patches``: tokens back to the clip of ``shape``."""
    frames, c, height, width = shape
    t, h, w = patch
    x = tokens.reshape(frames // t, height // h, width // w, t, h, w, c)
    return x.permute(0, 3, 6, 1, 4, 2, 5).reshape(frames, c, height, width)
