"""Small transforms shared by the image data sets."""
from __future__ import annotations

import torch


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] images back to [0, 1] for display (channels first; permute for imshow)."""
    return ((x + 1) / 2).clamp(0, 1)
