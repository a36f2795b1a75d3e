"""Parameterisations (what the network predicts) and the training loss.

With x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, write a = sqrt(abar), s = sqrt(1 - abar)
(so a^2 + s^2 = 1). The network can predict any one of

    eps                      the noise that was added
    x0                       the clean image
    v  = a eps - s x_0       the "velocity" (Salimans & Ho 2022)

and the others follow from x_t:

    x0  = (x_t - s eps) / a          eps = (x_t - a x0) / s
    x0  = a x_t - s v                eps = s x_t + a v
"""
from __future__ import annotations

import torch

from .schedules import NoiseSchedule

PARAMETERISATIONS = ("eps", "x0", "v")


def _check(kind: str) -> None:
    if kind not in PARAMETERISATIONS:
        raise ValueError(f"unknown parameterisation {kind!r}; allowed: {', '.join(PARAMETERISATIONS)}")


def to_x0_eps(kind: str, output: torch.Tensor, xt: torch.Tensor,
              a: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) implied by a network ``output`` of the given kind, with a = sqrt(abar),
    s = sqrt(1 - abar) broadcastable against xt."""
    _check(kind)
    if kind == "eps":
        return (xt - s * output) / a, output
    if kind == "x0":
        return output, (xt - a * output) / s
    return a * xt - s * output, s * xt + a * output  # v


def target(kind: str, x0: torch.Tensor, eps: torch.Tensor,
           a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """What a network of the given kind should output for (x0, eps)."""
    _check(kind)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    return a * eps - s * x0  # v


def loss_weight(kind: str, snr: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
    """Per-example weight that turns the plain MSE on ``kind`` into min-SNR-gamma weighting
    (Hang et al. 2023), i.e. an x0-error weighted by min(SNR, gamma). The x0-MSE equals
    eps-MSE / SNR and v-MSE / (SNR + 1), hence the divisions. ``None``: weight 1, the
    simplified loss of Ho et al."""
    _check(kind)
    if min_snr_gamma is None:
        return torch.ones_like(snr)
    clipped = snr.clamp(max=min_snr_gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[kind]


def draw_noise(x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator | None = None,
               noise=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, eps) for a batch: t ~ U{1..T}, then eps ~ N(0, I) (or ``noise(shape, generator)``),
    drawn in that order from ``generator``, on x0's device."""
    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator).to(x0.device)
    eps = (torch.randn(x0.shape, generator=generator) if noise is None
           else noise(tuple(x0.shape), generator)).to(x0.device)
    return t, eps


def diffusion_loss(model, x0: torch.Tensor, schedule: NoiseSchedule, kind: str = "eps",
                   min_snr_gamma: float | None = None, labels: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, noise=None,
                   t: torch.Tensor | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
    """The simplified DDPM loss: t ~ U{1..T}, eps ~ N(0, I), x_t = a x0 + s eps,
    loss = mean_t w(t) || net(x_t, t) - target ||^2 (w = 1 unless min-SNR weighting).

    ``noise(shape, generator)`` replaces the law of eps (default ``torch.randn``; chapter 14
    passes ``mixture_noise.noise_fn(...)``, a zero-mean unit-variance mixture). ``t`` and
    ``eps``, when given, are used instead of drawing them (``draw_noise``)."""
    if t is None or eps is None:
        t, eps = draw_noise(x0, schedule, generator, noise)
    ab = schedule.alpha_bars.to(x0.device)[t].float()
    a, s = _bc(ab.sqrt(), x0), _bc((1 - ab).sqrt(), x0)
    xt = a * x0 + s * eps
    out = model(xt, t, labels) if labels is not None else model(xt, t)
    per_example = (out - target(kind, x0, eps, a, s)).pow(2).flatten(1).mean(1)
    return (loss_weight(kind, ab / (1 - ab), min_snr_gamma) * per_example).mean()


def _bc(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))
