"""One sampler in which DDPM ancestral sampling and DDIM are settings.

From x_t to an earlier step s < t (s = t - 1 for the full chain), with
x0_hat and eps_hat from the network (see objectives.to_x0_eps):

    sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
    x_s   = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,   z ~ N(0, I)

eta = 0 is deterministic DDIM (Song et al. 2021). eta = 1 with all T steps is exactly
DDPM's ancestral step with the posterior variance (1 - abar_{t-1}) beta_t / (1 - abar_t)
(Ho et al. 2020): tests/test_sampling.py checks this against ``ddpm_step``. Fewer steps
("respacing") pick a sub-sequence of 1..T, uniformly or quadratically spaced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .objectives import to_x0_eps
from .schedules import NoiseSchedule

SPACINGS = ("uniform", "quadratic")


def timesteps(T: int, steps: int, spacing: str = "uniform") -> list[int]:
    """Descending steps T = t_n > ... > t_1 >= 1 to visit; the sampler ends at t = 0."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..{T}, got {steps!r}")
    if steps == 1:
        return [T]
    power = 1.0 if spacing == "uniform" else 2.0
    frac = torch.linspace(0, 1, steps, dtype=torch.float64) ** power
    ts = sorted({int(round(1 + (T - 1) * f)) for f in frac.tolist()}, reverse=True)
    return ts


@dataclass
class Trajectory:
    """What ``sample`` returns: the final images, plus snapshots if asked for."""

    x0: torch.Tensor
    steps: list[int]
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> x_t
    predictions: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> x0_hat at t


def predict(model, x: torch.Tensor, t: int, kind: str, a: torch.Tensor, s: torch.Tensor,
            labels: torch.Tensor | None = None, guidance: float | None = None,
            clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) at step t, with optional classifier-free guidance on the output
    out = out_uncond + w (out_cond - out_uncond) and optional clipping of x0_hat to [-1, 1]
    (eps_hat is then recomputed so the two stay consistent)."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    if guidance is None:
        out = model(x, tt, labels) if labels is not None else model(x, tt)
    else:
        if labels is None:
            raise ValueError("guidance needs labels")
        null = torch.full_like(labels, model.num_classes)
        both = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        out = uncond + guidance * (cond - uncond)
    x0, eps = to_x0_eps(kind, out, x, a, s)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = (x - a * x0) / s
    return x0, eps


@torch.no_grad()
def sample(model, shape: tuple[int, ...], schedule: NoiseSchedule, steps: int | None = None,
           eta: float = 1.0, spacing: str = "uniform", kind: str = "eps", clip_x0: bool = True,
           labels: torch.Tensor | None = None, guidance: float | None = None,
           generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
           snapshot_at: tuple[int, ...] = (), device: torch.device | str = "cpu",
           progress: bool = False) -> Trajectory:
    """Generate ``shape`` images. Defaults are DDPM: all T steps, eta = 1.

    ``steps`` < T respaces; ``eta`` = 0 gives DDIM. All randomness comes from
    ``generator`` (drawn on the CPU, so results match across devices).
    ``snapshot_at`` lists steps t after which x_t and x0_hat are kept.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    ts = timesteps(schedule.T, schedule.T if steps is None else steps, spacing)
    ab = schedule.alpha_bars
    x = (torch.randn(shape, generator=generator) if x_T is None else x_T.cpu()).to(device)
    labels = None if labels is None else labels.to(device)
    traj = Trajectory(x0=x, steps=ts)
    for i, t in enumerate(tqdm(ts, desc="sampling", disable=not progress, leave=False)):
        s_ = ts[i + 1] if i + 1 < len(ts) else 0
        a_t, a_s = ab[t], ab[s_]
        x0, eps = predict(model, x, t, kind, a_t.sqrt().float(), (1 - a_t).sqrt().float(),
                          labels, guidance, clip_x0)
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
        noise_coef = (1 - a_s - sigma**2).clamp(min=0).sqrt()
        x = a_s.sqrt().float() * x0 + noise_coef.float() * eps
        if sigma > 0:
            x = x + sigma.float() * torch.randn(shape, generator=generator).to(device)
        if t in snapshot_at:
            traj.snapshots[t], traj.predictions[t] = x.cpu(), x0.cpu()
    traj.x0 = x.cpu()
    return traj


def ddpm_step(x0_hat: torch.Tensor, eps_hat: torch.Tensor, xt: torch.Tensor, t: int,
              schedule: NoiseSchedule, z: torch.Tensor) -> torch.Tensor:
    """The textbook ancestral step (Ho et al. eq. 11 with the posterior variance):

    x_{t-1} = mean + sqrt(beta_tilde_t) z,  mean from q(x_{t-1} | x_t, x_0 = x0_hat)
    """
    mean, var = schedule.posterior(x0_hat, xt, t)
    return mean + var.sqrt() * z
