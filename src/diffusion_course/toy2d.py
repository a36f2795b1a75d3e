"""2-D toy problems: data sets, a small MLP denoiser, the exact denoiser of a Gaussian
mixture, mode coverage, and a small GAN to compare against.

Points are float32 tensors of shape [N, 2], so ``training.train`` and ``sampling.sample``
work on them unchanged (pass ``clip_x0=False`` to the sampler: clipping to [-1, 1] is for
images, not for points).

    ring_of_gaussians   k equal-weight Gaussians N(c_j, std^2 I) on a circle, with mode ids
    two_moons           two interleaved half circles (as in scikit-learn)
    mode_coverage       how many samples land near each mode, and how many modes are covered
    MLPDenoiser         x_t [B, 2] and integer t [B] -> eps (or x0, v) prediction
    MixtureDenoiser     the exact E[eps | x_t] for Gaussian-mixture data (the ideal network)
    Generator, Discriminator, train_toy_gan   a standard non-saturating GAN (gan.py's loop)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gan import GANRun, train_gan
from .schedules import NoiseSchedule
from .unet import timestep_embedding


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Denoisers
# ---------------------------------------------------------------------------------------
class MLPDenoiser(nn.Module):
    """A small MLP that maps (x_t, t) to a prediction of the same shape as x_t.

    t (integers 1..T) enters through the sinusoidal embedding of the U-Net, evaluated at
    t * 1000 / T so that its frequencies suit any T, then a linear layer; the result is
    added to every hidden layer:  h_1 = SiLU(W_1 x + e(t)),  h_i = SiLU(W_i h_{i-1} + e(t)),
    output = W_out h_depth.
    """

    def __init__(self, hidden: int = 128, depth: int = 3, T: int = 1000, dim: int = 2,
                 emb_dim: int = 32):
        super().__init__()
        if depth < 1 or hidden < 1 or T < 1:
            raise ValueError("hidden, depth and T must be positive")
        self.config = dict(hidden=hidden, depth=depth, T=T, dim=dim, emb_dim=emb_dim)
        self.T, self.emb_dim = T, emb_dim
        self.time = nn.Linear(emb_dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(dim, hidden)] +
                                    [nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        e = self.time(timestep_embedding(t * (1000.0 / self.T), self.emb_dim))
        h = x
        for layer in self.layers:
            h = F.silu(layer(h) + e)
        return self.out(h)


class MixtureDenoiser(nn.Module):
    """The exact eps-prediction E[eps | x_t] when the data are the equal-weight mixture
    (1/k) sum_j N(c_j, std^2 I): the network every trained denoiser tries to become.

    Given mode j, x_t = a x_0 + s eps is Gaussian: N(a c_j, (a^2 std^2 + s^2) I), and
        E[x_0 | x_t, j] = c_j + a std^2 / (a^2 std^2 + s^2) (x_t - a c_j).
    Averaging over the posterior mode probabilities r_j(x_t) gives E[x_0 | x_t], and
    E[eps | x_t] = (x_t - a E[x_0 | x_t]) / s.
    """

    def __init__(self, centers: torch.Tensor, std: float, schedule: NoiseSchedule):
        super().__init__()
        self.register_buffer("centers", centers.double())
        self.register_buffer("alpha_bars", schedule.alpha_bars.double())
        self.std = float(std)

    def x0_mean(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """E[x_0 | x_t] for x [B, d] and t [B] (or an int), in x's dtype."""
        xd = x.double()
        t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(x.shape[0])
        ab = self.alpha_bars[t][:, None]                          # [B, 1]
        a, s2 = ab.sqrt(), 1 - ab
        var = a**2 * self.std**2 + s2                             # [B, 1]
        diff = xd[:, None, :] - a[:, None] * self.centers[None]   # [B, k, d]: x_t - a c_j
        logits = -(diff**2).sum(-1) / (2 * var)                   # log r_j up to a constant
        r = torch.softmax(logits, dim=1)                          # [B, k]
        x0_given_j = self.centers[None] + (a * self.std**2 / var)[:, None] * diff
        return (r[..., None] * x0_given_j).sum(1).to(x.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(x.shape[0])
        ab = self.alpha_bars[t][:, None].to(x.dtype)
        return (x - ab.sqrt() * self.x0_mean(x, t)) / (1 - ab).sqrt()


def mixture_log_prob(x: torch.Tensor, centers: torch.Tensor, std: float) -> torch.Tensor:
    """log q(x) of the equal-weight mixture (1/k) sum_j N(c_j, std^2 I), for x [B, d]."""
    x, c = x.double(), centers.double()
    k, d = c.shape
    sq = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    log_n = -sq / (2 * std**2) - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)
    return torch.logsumexp(log_n, dim=1) - math.log(k)


# ---------------------------------------------------------------------------------------
# A small GAN
# ---------------------------------------------------------------------------------------
def _mlp(d_in: int, hidden: int, depth: int, d_out: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), act()]
    return nn.Sequential(*layers, nn.Linear(hidden, d_out))


class Generator(nn.Module):
    """z ~ N(0, I_latent) -> a point in 2-D, through a ReLU MLP: one network call per sample."""

    def __init__(self, latent_dim: int = 2, hidden: int = 128, depth: int = 3, dim: int = 2):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp(latent_dim, hidden, depth, dim, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self(z.to(next(self.parameters()).device)).cpu()


class Discriminator(nn.Module):
    """A point -> one logit (real vs generated), through a LeakyReLU MLP."""

    def __init__(self, hidden: int = 128, depth: int = 3, dim: int = 2):
        super().__init__()
        self.net = _mlp(dim, hidden, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def train_toy_gan(data: torch.Tensor, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3,
                  latent_dim: int = 2, hidden: int = 128, depth: int = 3, seed: int = 0,
                  snapshot_every: int | None = None, n_snapshot: int = 1000,
                  progress: bool = False, device: torch.device | str = "cpu") -> GANRun:
    """The course's GAN (``gan.train_gan``: non-saturating loss, Adam with betas (0.5, 0.999))
    with this module's MLP generator and discriminator, for points of ``data`` [N, dim].
    Deterministic under ``seed`` on the CPU (the weights are initialised from it too)."""
    torch.manual_seed(seed)  # the weight initialisation
    G = Generator(latent_dim, hidden, depth, data.shape[1])
    D = Discriminator(hidden, depth, data.shape[1])
    return train_gan(G, D, data, steps, batch_size=batch_size, lr=lr, seed=seed,
                     snapshot_every=snapshot_every, n_snapshot=n_snapshot, progress=progress, device=device)
