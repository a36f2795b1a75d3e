"""Noise schedules of the discrete (DDPM) forward process.

Convention used throughout the course: arrays have length T + 1 and are indexed by the
paper's t = 0..T, so the formulas read exactly as written. Index 0 is the clean data:
beta_0 = 0 and abar_0 = 1. The forward step and its closed form are

    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps,                    t = 1..T
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("linear", "scaled_linear", "cosine", "angle")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020): beta_t rises linearly from 1e-4 (t = 1) to 0.02 (t = T)."""
    _check_T(T)
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int) -> torch.Tensor:
    """The linear schedule rescaled by 1000 / T so any T ends as noisy as T = 1000 does
    (Nichol & Dhariwal 2021). Betas are capped below 1 for very small T.

    Not diffusers' ``scaled_linear`` (nor deepinv's ``scaled_linear=True``): there the name
    means Stable Diffusion's schedule, linear in sqrt(beta_t)."""
    _check_T(T)
    scale = 1000.0 / T
    return linear_betas(T, 1e-4 * scale, min(0.02 * scale, 0.999))


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): abar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2),
    beta_t = 1 - abar_t / abar_{t-1}, clipped at max_beta to avoid a singular last step."""
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def angle_betas(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """The angle schedule of v-diffusion (Salimans & Ho 2022; Crowson's audio-diffusion): the
    signal and noise scales are cos(phi) and sin(phi) of an angle phi = pi tau / 2 linear in
    tau = t / T in [0, 1] (papers write them alpha(tau), sigma(tau); the course keeps alpha_t
    for 1 - beta_t, see docs/notation.md), i.e.

        sqrt(abar_t) = cos(pi t / (2T)),   sqrt(1 - abar_t) = sin(pi t / (2T)),   beta_t = 1 - abar_t / abar_{t-1}

    (the cosine schedule with offset s = 0). abar_T = cos^2(pi / 2) = 0 would need
    beta_T = 1, which a NoiseSchedule refuses (eps- and x0-forms divide by sqrt(abar_t) or
    by the SNR there), so beta_T is clipped at ``max_beta``: abar_T = (1 - max_beta)
    abar_{T-1}, about 2.5e-9 for T = 1000. Every other step is exact."""
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    abar = torch.cos(t / T * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(name: str, T: int) -> torch.Tensor:
    """betas for t = 1..T of a schedule named in ``SCHEDULES``."""
    makers = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas,
              "angle": angle_betas}
    if name not in makers:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    return makers[name](T)


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")


@dataclass(frozen=True)
class NoiseSchedule:
    """All the per-step quantities of one schedule, as float64 tensors of length T + 1."""

    betas: torch.Tensor  # beta_t, with beta_0 = 0
    name: str = "custom"

    @classmethod
    def make(cls, name: str = "linear", T: int = 1000) -> "NoiseSchedule":
        return cls.from_betas(make_betas(name, T), name=name)

    @classmethod
    def from_betas(cls, betas_1_to_T: torch.Tensor, name: str = "custom") -> "NoiseSchedule":
        betas = torch.as_tensor(betas_1_to_T, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must lie in (0, 1)")
        return cls(torch.cat([torch.zeros(1, dtype=torch.float64), betas]), name)

    @property
    def T(self) -> int:
        return self.betas.numel() - 1

    @property
    def alphas(self) -> torch.Tensor:  # alpha_t = 1 - beta_t
        return 1.0 - self.betas

    @property
    def alpha_bars(self) -> torch.Tensor:  # abar_t = prod_{s=1..t} alpha_s, abar_0 = 1
        return torch.cumprod(self.alphas, dim=0)

    @property
    def snr(self) -> torch.Tensor:  # signal-to-noise ratio abar_t / (1 - abar_t); inf at t=0
        ab = self.alpha_bars
        return ab / (1.0 - ab)

    def _at(self, values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """values[t], shaped to broadcast against a batch ``like`` of shape [B, ...]."""
        t = torch.as_tensor(t, device=values.device).long()
        if (t < 0).any() or (t > self.T).any():
            raise ValueError(f"t must lie in 0..{self.T}")
        out = values[t].to(device=like.device, dtype=like.dtype)
        return out.reshape(out.shape + (1,) * (like.dim() - out.dim()))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) in one step."""
        noise = torch.randn_like(x0) if noise is None else noise
        ab = self._at(self.alpha_bars, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def step_forward(self, x_prev: torch.Tensor, t: torch.Tensor | int,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
        """One step of the chain: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps."""
        noise = torch.randn_like(x_prev) if noise is None else noise
        beta = self._at(self.betas, t, x_prev)
        return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor,
                  t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) for t >= 1:

        mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t)(1 - abar_{t-1})/(1 - abar_t) x_t
        var  = (1 - abar_{t-1}) beta_t / (1 - abar_t)
        """
        t = torch.as_tensor(t).long()
        if (t < 1).any():
            raise ValueError("the posterior q(x_{t-1} | x_t, x_0) needs t >= 1")
        ab, ab_prev = self._at(self.alpha_bars, t, x0), self._at(self.alpha_bars, t - 1, x0)
        beta, alpha = self._at(self.betas, t, x0), self._at(self.alphas, t, x0)
        coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
        coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
        var = (1 - ab_prev) * beta / (1 - ab)
        return coef_x0 * x0 + coef_xt * xt, var.expand_as(x0)
