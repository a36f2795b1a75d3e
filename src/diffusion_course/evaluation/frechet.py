"""The Frechet distance between the Gaussians fitted to two sets of features (on a small
MNIST classifier's features: the "Frechet LeNet distance", the MNIST analogue of FID).

    FD = ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1^{1/2} C_2 C_1^{1/2})^{1/2})

The matrix square root is taken of a symmetric positive semi-definite matrix through its
eigen-decomposition (negative round-off eigenvalues clipped to 0), so the result is real
and non-negative by construction. Taking scipy.linalg.sqrtm of C_1 C_2 (not symmetric)
is the careless route that can give complex or negative numbers with few samples;
``frechet_distance_naive`` keeps it for teaching.

A second, deliberately weak "metric" for chapter 06: ``pixel_wasserstein``, the 1-D
Wasserstein-1 distance between the distributions of all pixel values, blind to where the
pixels are.
"""
from __future__ import annotations

import numpy as np
import torch


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor,
                     mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2)."""
    s1 = sqrtm_psd(cov1)
    cross = sqrtm_psd(s1 @ cov2 @ s1)
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * torch.trace(cross)
    return max(value.item(), 0.0)


def frechet_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def frechet_distance_naive(mu1, cov1, mu2, cov2, dtype=np.float32) -> tuple[float, float]:
    """The careless route, kept for teaching: the formula with tr((C_1 C_2)^{1/2}) in place of
    tr((C_1^{1/2} C_2 C_1^{1/2})^{1/2}) (equal in exact arithmetic), computed with
    scipy.linalg.sqrtm of the non-symmetric product C_1 C_2 in ``dtype``, imaginary part
    dropped.

    Returns (FD, dropped) where ``dropped`` is the largest |imaginary part| of the matrix
    square root that was thrown away (0 when sqrtm stayed real). With N < feature dim (or
    features that are constant, like dead ReLU units) the covariances are singular, sqrtm
    goes complex, and in float32 FD of a set with itself comes out negative.
    """
    import scipy.linalg

    as_np = lambda a: (a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)).astype(dtype)
    mu1, cov1, mu2, cov2 = map(as_np, (mu1, cov1, mu2, cov2))
    root = scipy.linalg.sqrtm(cov1 @ cov2)
    dropped = float(np.abs(np.imag(root)).max()) if np.iscomplexobj(root) else 0.0
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(np.real(root))
    return float(value), dropped


def frechet_naive_from_features(f1: torch.Tensor, f2: torch.Tensor, dtype=np.float32
                                ) -> tuple[float, float]:
    """``frechet_distance_naive`` of the Gaussians fitted to two feature sets (in ``dtype``)."""
    return frechet_distance_naive(*gaussian_stats(f1), *gaussian_stats(f2), dtype=dtype)


def pixel_wasserstein(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wasserstein-1 distance between the 1-D distributions of all pixel values of ``a`` and
    ``b`` (any shapes; where a pixel sits is ignored):

        W_1 = integral |F_a(v) - F_b(v)| dv = integral_0^1 |F_a^{-1}(u) - F_b^{-1}(u)| du,

    which for two samples of equal size n is exactly mean_i |a_(i) - b_(i)| over the sorted
    values. A weak metric on purpose: shuffling every image's pixels leaves it unchanged.
    """
    a, b = a.detach().flatten().double().cpu(), b.detach().flatten().double().cpu()
    if a.numel() == b.numel():
        return (a.sort().values - b.sort().values).abs().mean().item()
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a.numpy(), b.numpy()))


