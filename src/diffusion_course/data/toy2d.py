"""2-D toy data sets, as float32 tensors of shape [N, 2] so that ``training.loop.train`` and
``diffusion.sampling.sample`` work on them unchanged (pass ``clip_x0=False`` to the sampler:
clipping to [-1, 1] is for images, not for points).

    ring_of_gaussians   k equal-weight Gaussians N(c_j, std^2 I) on a circle, with mode ids
    two_moons           two interleaved half circles (as in scikit-learn)
    mixture_log_prob    the exact log-density of the ring of Gaussians
"""
from __future__ import annotations

import math

import torch


def ring_centers(k: int = 8, radius: float = 1.5) -> torch.Tensor:
    """k points evenly spaced on a circle: c_j = radius (cos 2 pi j/k, sin 2 pi j/k)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return (radius * torch.stack([angle.cos(), angle.sin()], dim=1)).float()


def ring_of_gaussians(n: int, k: int = 8, radius: float = 1.5, std: float = 0.05,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n points from the equal-weight mixture of N(c_j, std^2 I), j = 0..k-1, c_j on a ring.

    Returns (points [n, 2], mode ids [n]). With radius 1.5 each coordinate has variance
    radius^2 / 2 + std^2, about 1: the scale the unit-variance noise of diffusion expects.
    """
    modes = torch.randint(0, k, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator)
    return ring_centers(k, radius)[modes] + std * noise, modes


def two_moons(n: int, noise: float = 0.05,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles (scikit-learn's ``make_moons``), centred at the origin.

    Returns (points [n, 2], moon ids [n] in {0, 1}).
    """
    moon = torch.randint(0, 2, (n,), generator=generator)
    theta = math.pi * torch.rand(n, generator=generator)
    upper = torch.stack([theta.cos(), theta.sin()], dim=1)
    lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], dim=1)
    pts = torch.where(moon[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25])
    return pts + noise * torch.randn(n, 2, generator=generator), moon


def mixture_log_prob(x: torch.Tensor, centers: torch.Tensor, std: float) -> torch.Tensor:
    """log q(x) of the equal-weight mixture (1/k) sum_j N(c_j, std^2 I), for x [B, d]."""
    x, c = x.double(), centers.double()
    k, d = c.shape
    sq = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    log_n = -sq / (2 * std**2) - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)
    return torch.logsumexp(log_n, dim=1) - math.log(k)
