"""Score matching and Langevin dynamics on low-dimensional data (chapter 08).

The score of a density p is s(x) = grad_x log p(x): it points uphill in log-density and
needs no normaliser (grad log (p / Z) = grad log p). Three pieces:

Denoising score matching (Vincent 2011). Perturb the data, x = x_0 + sigma z, z ~ N(0, I).
The perturbed density p_sigma = p * N(0, sigma^2 I) has score s_sigma, and

    E || s(x) - s_sigma(x) ||^2 = E || s(x) + z / sigma ||^2 + const,

because grad_x log N(x; x_0, sigma^2 I) = -(x - x_0) / sigma^2 = -z / sigma and
E[-z / sigma | x] = s_sigma(x) (Tweedie). So the regression target is -z / sigma, which is
known, and the minimiser is the true score of p_sigma. Weighted by lambda(sigma) = sigma^2
(Song & Ermon 2019) the loss is || sigma s(x) + z ||^2: with s = -eps_hat / sigma this is
exactly the eps-prediction loss || eps_hat - z ||^2 of DDPM.

Langevin dynamics. x_{k+1} = x_k + (delta / 2) s(x_k) + sqrt(delta) z_k has p as its
stationary law as delta -> 0 (for finite delta it is the "unadjusted" Langevin algorithm,
with an O(delta) bias: for N(mu, v I) the stationary variance is v / (1 - delta / (4 v))).
It mixes slowly between modes separated by low density: the score there is ~ 0 or points
back. Annealed Langevin (Song & Ermon 2019) runs it on p_{sigma_1}, ..., p_{sigma_L} with
sigma_1 large (one broad blob, fast mixing) down to sigma_L small, step delta_i =
step_lr * sigma_i^2 / sigma_L^2, so that each level starts where the previous one ended.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, d], sigma [B]) -> score [B, d]


# ---------------------------------------------------------------------------------------
# Noise levels and exact scores
# ---------------------------------------------------------------------------------------
def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """n noise levels from sigma_max down to sigma_min with a constant ratio (float64)."""
    if not (sigma_max > sigma_min > 0) or n < 2:
        raise ValueError(f"need sigma_max > sigma_min > 0 and n >= 2, got {sigma_max}, {sigma_min}, {n}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n, dtype=torch.float64)


def gaussian_score(x: torch.Tensor, mean: torch.Tensor | float, var: float) -> torch.Tensor:
    """Score of N(mean, var I): -(x - mean) / var."""
    return -(x - mean) / var


def autograd_score(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x) for a batch x [B, d], by automatic differentiation (log_prob -> [B])."""
    with torch.enable_grad():
        x = x.detach().double().requires_grad_(True)
        g, = torch.autograd.grad(log_prob(x).sum(), x)
    return g


# ---------------------------------------------------------------------------------------
# Denoising score matching and a noise-conditional score network
# ---------------------------------------------------------------------------------------
def dsm_loss(score_fn: ScoreFn, x0: torch.Tensor, sigma: torch.Tensor,
             z: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching with weight sigma^2 (one sigma per row):

        x = x_0 + sigma z,   loss = mean_i  sigma_i^2 || s(x_i, sigma_i) + z_i / sigma_i ||^2
                                  = mean_i  || sigma_i s(x_i, sigma_i) + z_i ||^2

    summed over dimensions, averaged over the batch."""
    sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).reshape(-1).expand(x0.shape[0])
    if z is None:
        z = torch.randn(x0.shape, generator=generator).to(x0)
    sb = sigma.reshape(-1, *([1] * (x0.dim() - 1)))
    x = x0 + sb * z                                         # x = x_0 + sigma z
    s = score_fn(x, sigma)
    return (sb * s + z).pow(2).flatten(1).sum(1).mean()     # || sigma s + z ||^2


# ---------------------------------------------------------------------------------------
# Langevin dynamics
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def langevin(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step_size: float,
             n_steps: int, generator: torch.Generator | None = None,
             keep_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Unadjusted Langevin: x_{k+1} = x_k + (delta / 2) s(x_k) + sqrt(delta) z_k.

    ``score_fn(x) -> s(x)``. Returns (x after n_steps, [x_0, x_k, ...] every ``keep_every``
    steps (empty if 0))."""
    if step_size <= 0 or n_steps < 0:
        raise ValueError(f"need step_size > 0 and n_steps >= 0, got {step_size}, {n_steps}")
    kept = [x.clone()] if keep_every else []
    for k in range(1, n_steps + 1):
        z = torch.randn(x.shape, generator=generator).to(x)
        x = x + 0.5 * step_size * score_fn(x) + math.sqrt(step_size) * z   # x + delta/2 s + sqrt(delta) z
        if keep_every and k % keep_every == 0:
            kept.append(x.clone())
    return x, kept


@torch.no_grad()
def annealed_langevin(score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, n_steps_each: int,
                      step_lr: float, generator: torch.Generator | None = None,
                      denoise: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), sigmas decreasing:

        for each level i:  delta_i = step_lr * sigma_i^2 / sigma_L^2
                           n_steps_each Langevin steps with s(., sigma_i)

    ``denoise`` ends with one Tweedie step x + sigma_L^2 s(x, sigma_L) = E[x_0 | x], which
    removes the last level's noise (Song & Ermon 2020). Returns (x, [x after each level])."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.numel() < 1 or (sigmas.numel() > 1 and not (sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be a non-empty, strictly decreasing sequence")
    per_level = []
    for sigma in sigmas.tolist():
        delta = step_lr * sigma**2 / sigmas[-1].item() ** 2          # delta_i ~ sigma_i^2
        sig = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        x, _ = langevin(lambda y: score_fn(y, sig), x, delta, n_steps_each, generator)
        per_level.append(x.clone())
    if denoise:
        sig = torch.full((x.shape[0],), sigmas[-1].item(), dtype=x.dtype, device=x.device)
        x = x + sigmas[-1].item() ** 2 * score_fn(x, sig)            # Tweedie: E[x_0 | x]
    return x, per_level
