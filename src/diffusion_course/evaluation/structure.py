"""Structure agreement (chapter 16): does a sample follow the skeleton it was given?

    agreement = |D(S(sample)) & D(given)| / |D(S(sample)) | D(given)|

the intersection over union of the two skeletons (``data.structure.structure_map``) after a
3 x 3 dilation D, so that strokes one pixel apart still count as the same stroke.
"""
from __future__ import annotations

import torch

from ..data.structure import dilate, structure_map


def structure_iou(samples: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
    """Per image, the IoU of the dilated skeleton of ``samples`` (in [-1, 1]) with the dilated
    ``structure`` maps ({0, 1}, one per sample)."""
    if samples.shape != structure.shape:
        raise ValueError(f"samples {tuple(samples.shape)} and structure maps {tuple(structure.shape)} "
                         f"must have the same shape")
    a, b = dilate(structure_map(samples.float().cpu())), dilate(structure.float().cpu())
    inter, union = (a * b).flatten(1).sum(1), torch.maximum(a, b).flatten(1).sum(1)
    return inter / union.clamp(min=1)
