"""Mixture-of-Gaussians noise in place of Gaussian noise (Nachmani, San Roman & Wolf 2021,
"Non Gaussian Denoising Diffusion Models", arXiv:2106.07582).

Every coordinate of the noise is drawn independently from a two-component Gaussian mixture
with zero mean and unit variance:

    eps ~ p N(m1, phi^2) + (1 - p) N(m2, phi^2),
    m1 = sqrt((1 - phi^2)(1 - p) / p),    m2 = -p / (1 - p) m1,

so that  E[eps] = p m1 + (1 - p) m2 = 0  and  Var[eps] = p m1^2 + (1 - p) m2^2 + phi^2 = 1.
phi = 1 gives m1 = m2 = 0: plain Gaussian noise. (phi is the paper's name for the common
standard deviation of the components; it is not the angle of ``schedules.angle_betas``.)

What the forward process then is. The paper trains with the one-shot formula

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,        eps from the mixture     (*)

(``q_sample_mixture``). With Gaussian noise (*) is also the t-step marginal of the chain
x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t. With mixture noise it is not: the chain
adds t independent scaled mixtures,

    x_t = sqrt(abar_t) x_0 + sum_{s=1..t} c_s eps_s,     c_s = sqrt(beta_s abar_t / abar_s),

and since cumulants of independent variables add and kappa_n(c X) = c^n kappa_n(X),

    kappa_n(x_t - sqrt(abar_t) x_0) = kappa_n(eps) sum_s c_s^n          (chain)
    kappa_n(sqrt(1 - abar_t) eps)   = kappa_n(eps) (sum_s c_s^2)^{n/2}  (one shot, (*))

with sum_s c_s^2 = 1 - abar_t. For n >= 3 the chain's sum is smaller (a sum of many small
mixtures drifts towards a Gaussian), so the chain's skewness and excess kurtosis shrink
(``chain_cumulants`` vs ``single_shot_cumulants``). The chain's marginal is a mixture of up to
2^t Gaussians with common variance phi^2 (1 - abar_t) (``chain_log_prob``), not of two: the
two-component mixture that matches its first four cumulants (``two_component_fit``) gets the
fifth and sixth wrong. So (*) defines the training distributions directly; it is not the
marginal of any Markov chain of mixture steps of this kind.

Sampling. The DDPM reverse step assumes a Gaussian posterior q(x_{t-1} | x_t, x_0), which
holds only for Gaussian noise; with mixture noise there is no closed-form posterior of this
forward process at all, so DDPM's Gaussian reverse step is a mismatch. The paper keeps
DDPM's update (the posterior mean computed from the predicted eps, the posterior standard
deviation) and draws x_T and the per-step noise z from the mixture as well, a heuristic
that its experiments support rather than a derived reverse process; ``sample_with_noise``
offers both choices.

Training and sampling. ``objectives.diffusion_loss``, ``training.loop.train`` and
``sampling.sample`` take the noise law as ``noise`` (``noise_fn``); ``noise_diffusion_loss``,
``train_toy`` and ``sample_with_noise`` call them with it (with ``noise="gaussian"`` they are
the course's loss, loop and sampler number for number).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .objectives import diffusion_loss
from .sampling import sample
from .schedules import NoiseSchedule

NOISES = ("gaussian", "mixture")


# ---------------------------------------------------------------------------------------
# The noise law
# ---------------------------------------------------------------------------------------
def check_mixture(p: float, phi: float) -> tuple[float, float]:
    """(p, phi) as floats, or a ValueError saying what is allowed."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
        raise ValueError(f"p (the weight of component 1) must lie in (0, 1), got {p!r}")
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not 0 < phi <= 1:
        raise ValueError(f"phi (the common standard deviation of both components) must lie in "
                         f"(0, 1]; 1 is plain Gaussian noise. Got {phi!r}")
    return float(p), float(phi)


def cumulants_from_moments(moments: torch.Tensor) -> torch.Tensor:
    """Cumulants kappa_0..kappa_n from raw moments mu_0 = 1, mu_1, ..., mu_n, by the recursion
    kappa_n = mu_n - sum_{m=1}^{n-1} C(n-1, m-1) kappa_m mu_{n-m}   (kappa_0 = log mu_0 = 0)."""
    mu = torch.as_tensor(moments, dtype=torch.float64)
    kappa = torch.zeros_like(mu)
    for n in range(1, mu.numel()):
        kappa[n] = mu[n] - sum(math.comb(n - 1, m - 1) * kappa[m] * mu[n - m] for m in range(1, n))
    return kappa


@dataclass(frozen=True)
class TwoComponent:
    """w N(mean1, var) + (1 - w) N(mean2, var): two Gaussians sharing one variance.

    Seen as M + G with M = mean1 (probability w) or mean2, and G ~ N(0, var) independent of M,
    so its cumulants are M's plus var in the second one (``cumulants``)."""

    weight: float
    mean1: float
    mean2: float
    var: float

    @property
    def mean(self) -> float:  # w m1 + (1 - w) m2
        return self.weight * self.mean1 + (1 - self.weight) * self.mean2

    @property
    def variance(self) -> float:  # w m1^2 + (1 - w) m2^2 - mean^2 + var
        w = self.weight
        return w * self.mean1**2 + (1 - w) * self.mean2**2 - self.mean**2 + self.var

    def cumulants(self, order: int = 6) -> torch.Tensor:
        """kappa_0..kappa_order (float64; kappa_0 = 0, kappa_1 the mean, kappa_2 the variance,
        kappa_4 / kappa_2^2 the excess kurtosis)."""
        n = torch.arange(order + 1, dtype=torch.float64)
        w = self.weight
        moments = w * self.mean1**n + (1 - w) * self.mean2**n  # E[M^n] of the two-point part
        kappa = cumulants_from_moments(moments)
        kappa[2] += self.var                                    # the Gaussian part adds var to kappa_2 only
        return kappa

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log(w N(x; m1, var) + (1 - w) N(x; m2, var)), elementwise, in float64."""
        x = torch.as_tensor(x, dtype=torch.float64)
        log_norm = -0.5 * math.log(2 * math.pi * self.var)
        a = math.log(self.weight) + log_norm - (x - self.mean1) ** 2 / (2 * self.var)
        b = math.log1p(-self.weight) + log_norm - (x - self.mean2) ** 2 / (2 * self.var)
        return torch.logaddexp(a, b)

    def sample(self, shape, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Independent draws: the component first (uniform < w), then its Gaussian."""
        first = torch.rand(shape, generator=generator, dtype=torch.float64) < self.weight
        mean = torch.where(first, self.mean1, self.mean2)
        return (mean + math.sqrt(self.var) * torch.randn(shape, generator=generator,
                                                          dtype=torch.float64)).to(dtype)


def mixture_params(p: float, phi: float) -> TwoComponent:
    """The paper's zero-mean, unit-variance mixture: weight p on N(m1, phi^2), 1 - p on N(m2, phi^2)."""
    p, phi = check_mixture(p, phi)
    m1 = math.sqrt((1 - phi**2) * (1 - p) / p)   # m1 = sqrt((1 - phi^2)(1 - p) / p)
    m2 = -p / (1 - p) * m1                       # m2 = -p / (1 - p) m1, so p m1 + (1 - p) m2 = 0
    return TwoComponent(p, m1, m2, phi**2)


def sample_mixture_noise(shape, p: float, phi: float, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise of the given shape, every entry an independent draw from ``mixture_params(p, phi)``."""
    return mixture_params(p, phi).sample(shape, generator, dtype)


def mixture_mean(p: float, phi: float) -> float:
    """E[eps] = p m1 + (1 - p) m2, exactly 0 up to rounding."""
    return mixture_params(p, phi).mean


def mixture_variance(p: float, phi: float) -> float:
    """Var[eps] = p m1^2 + (1 - p) m2^2 + phi^2, exactly 1 up to rounding."""
    return mixture_params(p, phi).variance


def mixture_log_prob(x: torch.Tensor, p: float, phi: float) -> torch.Tensor:
    """log density of the mixture at x, elementwise (float64)."""
    return mixture_params(p, phi).log_prob(x)


def draw_noise(shape, noise: str = "mixture", p: float = 0.5, phi: float = 0.5,
               generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise (``torch.randn``) or mixture noise, both with mean 0 and variance 1."""
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; allowed: {', '.join(NOISES)}")
    if noise == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype)
    return sample_mixture_noise(shape, p, phi, generator, dtype)


# ---------------------------------------------------------------------------------------
# The forward process: one shot against the chain
# ---------------------------------------------------------------------------------------
def q_sample_mixture(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor | int, p: float,
                     phi: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, eps) with x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps from the mixture:
    the paper's training distribution (*) of the module docstring."""
    eps = sample_mixture_noise(x0.shape, p, phi, generator, x0.dtype).to(x0.device)
    return schedule.q_sample(x0, t, noise=eps), eps


def chain_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: int, p: float, phi: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """x_t after t steps of x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps_s with fresh
    mixture noise eps_s at every step s = 1..t."""
    _check_t(schedule, t)
    x = x0
    for s in range(1, t + 1):
        eps = sample_mixture_noise(x0.shape, p, phi, generator, x0.dtype).to(x0.device)
        x = schedule.step_forward(x, s, noise=eps)
    return x


def chain_coefficients(schedule: NoiseSchedule, t: int) -> torch.Tensor:
    """c_s = sqrt(beta_s abar_t / abar_s) for s = 1..t: the weight of step s's noise in x_t
    (sum_s c_s^2 = 1 - abar_t)."""
    _check_t(schedule, t)
    ab = schedule.alpha_bars
    return (schedule.betas[1:t + 1] * ab[t] / ab[1:t + 1]).sqrt()


def chain_cumulants(schedule: NoiseSchedule, t: int, p: float, phi: float, x0: float = 0.0,
                    order: int = 6) -> torch.Tensor:
    """Exact kappa_0..kappa_order of one coordinate of the chain's x_t given x_0:
    kappa_1 = sqrt(abar_t) x_0, kappa_n = kappa_n(eps) sum_s c_s^n for n >= 2."""
    c = chain_coefficients(schedule, t)
    kappa_eps = mixture_params(p, phi).cumulants(order)
    kappa = torch.stack([kappa_eps[n] * (c**n).sum() for n in range(order + 1)])
    kappa[0] = 0.0
    kappa[1] = schedule.alpha_bars[t].sqrt() * x0   # kappa_1(eps) = 0
    return kappa


def single_shot_cumulants(schedule: NoiseSchedule, t: int, p: float, phi: float, x0: float = 0.0,
                          order: int = 6) -> torch.Tensor:
    """Exact kappa_0..kappa_order of sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the paper's (*):
    kappa_n = kappa_n(eps) (1 - abar_t)^{n/2} for n >= 2."""
    _check_t(schedule, t)
    ab = schedule.alpha_bars[t]
    kappa = mixture_params(p, phi).cumulants(order) * (1 - ab) ** (torch.arange(order + 1, dtype=torch.float64) / 2)
    kappa[0] = 0.0
    kappa[1] = ab.sqrt() * x0
    return kappa


def single_shot_params(schedule: NoiseSchedule, t: int, p: float, phi: float,
                       x0: float = 0.0) -> TwoComponent:
    """The law of (*) for one coordinate, a two-component mixture again: weight p,
    means sqrt(abar_t) x_0 + sqrt(1 - abar_t) m1 (or m2), variance (1 - abar_t) phi^2."""
    _check_t(schedule, t)
    mix, ab = mixture_params(p, phi), float(schedule.alpha_bars[t])
    shift, scale = math.sqrt(ab) * x0, math.sqrt(1 - ab)
    return TwoComponent(mix.weight, shift + scale * mix.mean1, shift + scale * mix.mean2,
                        (1 - ab) * mix.var)


def standardised(kappa: torch.Tensor) -> torch.Tensor:
    """kappa_n / kappa_2^{n/2}: entry 3 is the skewness, entry 4 the excess kurtosis (both 0
    for a Gaussian); entries 0..2 are returned as 0, 0, 1."""
    kappa = torch.as_tensor(kappa, dtype=torch.float64)
    out = kappa / kappa[2] ** (torch.arange(kappa.numel(), dtype=torch.float64) / 2)
    out[0], out[1] = 0.0, 0.0
    return out


def sample_cumulants(x: torch.Tensor, order: int = 6) -> torch.Tensor:
    """Plug-in estimates of kappa_0..kappa_order from draws x (all entries pooled), in float64:
    the cumulants of the empirical distribution (biased by O(1/n), fine for n >= 1e5)."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    mean = x.mean()
    centred = x - mean
    moments = torch.stack([(centred**n).mean() for n in range(order + 1)])
    kappa = cumulants_from_moments(moments)
    kappa[1] = mean
    return kappa


def two_component_fit(kappa: torch.Tensor) -> TwoComponent:
    """The two-component, equal-variance Gaussian mixture with the given kappa_1..kappa_4.

    Write it as kappa_1 + M + G: M a zero-mean two-point variable of variance V and skewness
    g, G ~ N(0, kappa_2 - V). Then kappa_3 = g V^{3/2} and kappa_4 = (g^2 - 2) V^2 (a
    two-point law has excess kurtosis g^2 - 2), so V solves 2 V^3 + kappa_4 V - kappa_3^2 = 0
    (one positive root), and the weight of the upper point is w = (1 - g / sqrt(g^2 + 4)) / 2.
    Its kappa_5, kappa_6 are then fixed: comparing them with a distribution's own tells
    whether that distribution is such a mixture at all.
    """
    k1, k2, k3, k4 = (float(v) for v in torch.as_tensor(kappa, dtype=torch.float64)[1:5])
    if not k2 > 0:
        raise ValueError(f"kappa_2 (the variance) must be > 0, got {k2}")
    if k3 == 0 and k4 == 0:
        return TwoComponent(0.5, k1, k1, k2)   # a single Gaussian
    roots = np.roots([2.0, 0.0, k4, -k3**2])
    real = roots[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)].real
    if real.size == 0 or real.max() > k2 * (1 + 1e-12):
        raise ValueError(f"no two-component equal-variance mixture has kappa_2..4 = {k2}, {k3}, {k4} "
                         f"(it needs kappa_4 >= kappa_3^2 / kappa_2 - 2 kappa_2^2, and kappa_4 < 0 "
                         f"when kappa_3 = 0)")
    V = min(float(real.max()), k2)
    g = k3 / V**1.5
    w = (1 - g / math.sqrt(g * g + 4)) / 2
    return TwoComponent(w, k1 + math.sqrt(V * (1 - w) / w), k1 - math.sqrt(V * w / (1 - w)), k2 - V)


def chain_log_prob(x: torch.Tensor, schedule: NoiseSchedule, t: int, p: float, phi: float,
                   x0: float = 0.0) -> torch.Tensor:
    """Exact log density of the chain's x_t given x_0 (one coordinate), for t <= 16.

    x_t = sqrt(abar_t) x_0 + sum_s c_s M_s + G with M_s = m1 or m2 and G ~ N(0, phi^2 (1 - abar_t)):
    a mixture of 2^t Gaussians, one per choice of components, with weight prod p or (1 - p)."""
    if t > 16:
        raise ValueError(f"the chain's marginal has 2^t components; chain_log_prob allows t <= 16, got {t}")
    mix = mixture_params(p, phi)
    c = chain_coefficients(schedule, t)
    atoms, log_w = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    for cs in c:   # every step doubles the atoms: a + c_s m1 (weight p) and a + c_s m2 (1 - p)
        atoms = torch.cat([atoms + cs * mix.mean1, atoms + cs * mix.mean2])
        log_w = torch.cat([log_w + math.log(p), log_w + math.log1p(-p)])
    var = phi**2 * float((c**2).sum())
    x = torch.as_tensor(x, dtype=torch.float64)
    z = x[..., None] - schedule.alpha_bars[t].sqrt() * x0 - atoms
    log_n = -z**2 / (2 * var) - 0.5 * math.log(2 * math.pi * var)
    return torch.logsumexp(log_w + log_n, dim=-1)


def l1_distance(log_prob_a, log_prob_b, lo: float = -8.0, hi: float = 8.0, n: int = 16_001) -> float:
    """int |q_a(x) - q_b(x)| dx over [lo, hi] by the trapezoid rule, for two log densities
    given as callables (twice the total-variation distance; 0 for equal laws, at most 2)."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return float(torch.trapezoid((log_prob_a(x).exp() - log_prob_b(x).exp()).abs(), x))


def _check_t(schedule: NoiseSchedule, t: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= schedule.T:
        raise ValueError(f"t must be an int in 1..{schedule.T}, got {t!r}")


# ---------------------------------------------------------------------------------------
# Training and sampling with either noise, at the same budget
# ---------------------------------------------------------------------------------------
def noise_fn(noise: str = "mixture", p: float = 0.5, phi: float = 0.5):
    """The law of the noise as a callable ``(shape, generator) -> tensor``: what
    ``objectives.diffusion_loss``, ``training.loop.train`` and ``sampling.sample`` take as ``noise``."""
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; allowed: {', '.join(NOISES)}")
    if noise == "mixture":
        check_mixture(p, phi)
    return lambda shape, generator=None: draw_noise(shape, noise, p, phi, generator)


def noise_diffusion_loss(model, x0: torch.Tensor, schedule: NoiseSchedule, noise: str = "mixture",
                         p: float = 0.5, phi: float = 0.5, kind: str = "eps",
                         min_snr_gamma: float | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """``objectives.diffusion_loss`` with eps drawn from ``noise``: t ~ U{1..T},
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, loss = mean || net(x_t, t) - target ||^2
    (min-SNR weighted if asked); with ``noise="gaussian"`` it is ``diffusion_loss`` itself."""
    return diffusion_loss(model, x0, schedule, kind, min_snr_gamma, None, generator, noise_fn(noise, p, phi))


def sample_with_noise(model, schedule: NoiseSchedule, n: int, noise: str = "mixture", p: float = 0.5,
                      phi: float = 0.5, dim: int = 2, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """DDPM ancestral sampling (``sampling.sample``: all T steps, eta = 1, no clipping) of an
    eps-predicting ``model`` with x_T and every step's z drawn from ``noise`` ("mixture": what
    the paper does, our reading; "gaussian": the standard sampler):

        x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t) + sigma_t z,
        sigma_t^2 = (1 - abar_{t-1}) beta_t / (1 - abar_t)     (no noise at t = 1).

    Neither choice is the exact reverse of the mixture forward process (see the module
    docstring); the mean is DDPM's posterior mean given the predicted x_0."""
    return sample(model, (n, dim), schedule, clip_x0=False, generator=generator, device=device,
                  noise=noise_fn(noise, p, phi)).x0
