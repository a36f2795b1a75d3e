"""Small networks for 2-D points (chapters 03, 08 and 14):

    MLPDenoiser         x_t [B, 2] and integer t [B] -> eps (or x0, v) prediction
    MixtureDenoiser     the exact E[eps | x_t] for Gaussian-mixture data (the ideal network)
    ScoreMLP            s_theta(x, sigma) for chapter 08's score matching
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..diffusion.schedules import NoiseSchedule
from .unet import timestep_embedding


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


class ScoreMLP(nn.Module):
    """s_theta(x, sigma) for points: an MLP predicts eps_hat(x, sigma) and the score is
    s = -eps_hat / sigma (the eps <-> score relation; it also makes the sigma^2-weighted DSM
    loss the plain eps-MSE). sigma enters as the sinusoidal embedding of c(sigma) =
    250 log(sigma) (log-noise spread over the embedding's frequency range), added to every
    hidden layer as in toy2d.MLPDenoiser."""

    def __init__(self, hidden: int = 128, depth: int = 3, dim: int = 2, emb_dim: int = 32):
        super().__init__()
        if hidden < 1 or depth < 1:
            raise ValueError("hidden and depth must be positive")
        self.config = dict(hidden=hidden, depth=depth, dim=dim, emb_dim=emb_dim)
        self.emb_dim = emb_dim
        self.time = nn.Linear(emb_dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(dim, hidden)] +
                                    [nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.out = nn.Linear(hidden, dim)

    def eps(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        e = self.time(timestep_embedding(250.0 * sigma.log(), self.emb_dim).to(x.dtype))
        h = x
        for layer in self.layers:
            h = F.silu(layer(h) + e)
        return self.out(h)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return -self.eps(x, sigma) / sigma[:, None]          # s = -eps_hat / sigma
