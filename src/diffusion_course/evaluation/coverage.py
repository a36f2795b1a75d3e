"""Does a generator cover its data, or copy it? Mode coverage on the 2-D toys (how many of the
k modes get samples, and how many samples fall between modes), and the distance from each
generated image to its nearest training image (the memorisation check).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Coverage:
    """What ``mode_coverage`` measured."""

    fractions: torch.Tensor  # [k] share of *all* samples within `radius` of mode j
    covered: int             # modes whose share is at least min_fraction
    quality: float           # share of samples within `radius` of some mode (not in between)
    nearest: torch.Tensor    # [n] index of the mode each sample belongs to, -1 if near none

    @property
    def k(self) -> int:
        return self.fractions.numel()


def mode_coverage(points: torch.Tensor, centers: torch.Tensor, radius: float,
                  min_fraction: float | None = None) -> Coverage:
    """Assign each point to its nearest centre if it lies within ``radius`` of it.

    A mode counts as covered when at least ``min_fraction`` of all samples land on it
    (default: a quarter of its fair share, 1 / (4k)). For a Gaussian mode of standard
    deviation std in 2-D, radius = 3 std holds 99 % of its mass.
    """
    points, centers = points.detach().float().cpu(), centers.float().cpu()
    k = centers.shape[0]
    min_fraction = 0.25 / k if min_fraction is None else min_fraction
    dist = torch.cdist(points, centers)
    d, idx = dist.min(dim=1)
    near = d <= radius
    nearest = torch.where(near, idx, torch.full_like(idx, -1))
    counts = torch.bincount(idx[near], minlength=k).float()
    fractions = counts / max(1, points.shape[0])
    return Coverage(fractions, int((fractions >= min_fraction).sum()),
                    near.float().mean().item(), nearest)


@torch.no_grad()
def nearest_neighbour_distances(x: torch.Tensor, reference: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """For each image of ``x``, the Euclidean pixel distance to its nearest image in
    ``reference`` (any shapes [N, ...], same per-image size), computed in batches:
    ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2. The memorisation check: a generator that copies
    its training set puts its samples much closer to it than held-out real digits are."""
    a = x.detach().flatten(1).double().cpu()
    b = reference.detach().flatten(1).double().cpu()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"images of {a.shape[1]} and {b.shape[1]} values do not compare")
    b_sq = (b * b).sum(1)
    out = []
    for chunk in a.split(batch):
        d2 = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ b.T + b_sq
        out.append(d2.min(1).values.clamp_min(0).sqrt())
    return torch.cat(out).float()
