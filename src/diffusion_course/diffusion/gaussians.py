"""Gaussian densities and KL divergences: closed forms and Monte Carlo estimates.

The normaliser of a 1-D Gaussian is 1 / sqrt(2 pi sigma^2) (sigma squared *inside* the
root), and KL(p || q) for p = N(mu1, s1^2), q = N(mu2, s2^2) is

    KL = log(s2 / s1) + (s1^2 + (mu1 - mu2)^2) / (2 s2^2) - 1/2.

With s1 = s2 = sigma it collapses to (mu1 - mu2)^2 / (2 sigma^2): a squared error, which is
why the diffusion loss ends up as one.
"""
from __future__ import annotations

import math

import torch

Tensorish = torch.Tensor | float


def _t(x: Tensorish) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)


def normal_pdf(x: Tensorish, mean: Tensorish = 0.0, std: Tensorish = 1.0) -> torch.Tensor:
    """p(x) = exp(-(x - mu)^2 / (2 sigma^2)) / sqrt(2 pi sigma^2)."""
    x, mean, std = _t(x), _t(mean), _t(std)
    return torch.exp(-((x - mean) ** 2) / (2 * std**2)) / torch.sqrt(2 * math.pi * std**2)


def normal_log_pdf(x: Tensorish, mean: Tensorish = 0.0, std: Tensorish = 1.0) -> torch.Tensor:
    """log p(x) = -(x - mu)^2 / (2 sigma^2) - log(sigma) - log(2 pi) / 2."""
    x, mean, std = _t(x), _t(mean), _t(std)
    return -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)


def kl_normal(mu1: Tensorish, std1: Tensorish, mu2: Tensorish, std2: Tensorish) -> torch.Tensor:
    """KL(N(mu1, std1^2) || N(mu2, std2^2)) in nats, element-wise."""
    mu1, std1, mu2, std2 = map(_t, (mu1, std1, mu2, std2))
    if (torch.as_tensor(std1) <= 0).any() or (torch.as_tensor(std2) <= 0).any():
        raise ValueError("standard deviations must be positive")
    return torch.log(std2 / std1) + (std1**2 + (mu1 - mu2) ** 2) / (2 * std2**2) - 0.5


def kl_diag_normal(mu1: torch.Tensor, var1: torch.Tensor,
                   mu2: torch.Tensor, var2: torch.Tensor) -> torch.Tensor:
    """KL between diagonal Gaussians, summed over the last dimension:

    sum_i [ log(v2_i / v1_i) + (v1_i + (m1_i - m2_i)^2) / v2_i - 1 ] / 2
    """
    mu1, var1, mu2, var2 = map(_t, (mu1, var1, mu2, var2))
    terms = torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1.0
    return 0.5 * terms.sum(dim=-1)


def kl_monte_carlo(mu1: float, std1: float, mu2: float, std2: float, n: int,
                   generator: torch.Generator | None = None) -> tuple[float, float]:
    """Estimate KL(p || q) = E_{x~p}[log p(x) - log q(x)] from n draws of p.

    Returns (estimate, standard error of the estimate). Draws use the reparameterisation
    x = mu1 + std1 * eps with eps ~ N(0, 1).
    """
    if n < 2:
        raise ValueError(f"need at least 2 draws, got n={n}")
    eps = torch.randn(n, generator=generator, dtype=torch.float64)
    x = mu1 + std1 * eps
    log_ratio = normal_log_pdf(x, mu1, std1) - normal_log_pdf(x, mu2, std2)
    return log_ratio.mean().item(), (log_ratio.std() / math.sqrt(n)).item()


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
