"""Diffusion Posterior Sampling (Chung et al. 2023) written out with the course's schedule:
posterior samples for a measurement y = A x + n from an unconditional diffusion model
(chapter 12). ``physics`` is anything with ``A`` and ``A_adjoint`` acting on images in [0, 1]
(a deepinv physics in the chapter); the tests check these against deepinv's DPS.
"""
from __future__ import annotations

import torch

from .sampling import predict, step_mean, timesteps
from .schedules import NoiseSchedule


def dps_step(model, kind: str, schedule: NoiseSchedule, x_t: torch.Tensor, t: int, s: int,
             y: torch.Tensor, physics, weight: float, noise: torch.Tensor,
             clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPS step from step t down to step s < t of ``schedule``; returns (x_s, x0_hat in [0, 1]).

    The score of p_t(x_t | y) = score of p_t(x_t) + grad log p_t(y | x_t), and DPS approximates
    p(y | x_t) by p(y | x0 = x0_hat(x_t)), x0_hat the model's denoised guess (Tweedie):

        L(x_t)  = weight * || y - A((x0_hat(x_t) + 1) / 2) ||   (A works on [0, 1] images)
        score   ~ (a_t x0_hat - x_t) / s_t^2 - grad_{x_t} L

    and takes the ancestral (DDPM) step with that score. Written in x0_hat and eps_hat
    (a = sqrt(abar), s = sqrt(1 - abar)), that is the course's step (``sampling.step_mean``
    with eta = 1, as ``sampling.sample`` takes it) minus a multiple of the gradient:

        x_s     = a_s x0_hat + sqrt(s_s^2 - sigma^2) eps_hat + sigma z - zeta_t grad_{x_t} L
        sigma^2 = s_s^2 (1 - r^2),  r = (s_s / a_s) / (s_t / a_t)   (the posterior variance)
        zeta_t  = a_t a_s ((s_t / a_t)^2 - (s_s / a_s)^2) = (abar_s - abar_t) / sqrt(abar_t abar_s)

    For neighbouring steps of the chain zeta_t = beta_t / sqrt(alpha_t). Chung et al. write the
    correction as zeta_i grad ||y - A x0_hat||^2 with zeta_i = zeta' / ||y - A x0_hat||, which is
    2 zeta' grad ||y - A x0_hat||: the norm, not its square, as in L.
    """
    ab_t, ab_s = schedule.alpha_bars[t], schedule.alpha_bars[s]
    x_t = x_t.detach().requires_grad_(True)
    with torch.enable_grad():
        x0_hat, eps_hat = predict(model, x_t, t, kind, ab_t.sqrt().float(), (1 - ab_t).sqrt().float(),
                                  clip_x0=clip_x0)
        residual = y - physics.A((x0_hat + 1) / 2)
        loss = weight * residual.flatten(1).norm(dim=1)           # one ||.|| per image
        grad = torch.autograd.grad(loss.sum(), x_t)[0]           # images do not interact
    x0_hat, eps_hat = x0_hat.detach(), eps_hat.detach()
    mean, sigma = step_mean(x0_hat, eps_hat, ab_t, ab_s, eta=1.0)
    zeta = (ab_s - ab_t) / (ab_t * ab_s).sqrt()                  # = beta_t / sqrt(alpha_t) for one step
    x_s = mean + sigma.float() * noise - zeta.float() * grad
    return x_s.detach(), (x0_hat + 1) / 2


def dps_sample(model, schedule: NoiseSchedule, kind: str, y: torch.Tensor, physics, steps: int,
               weight: float, generator: torch.Generator | None = None, clip_x0: bool = True,
               x_T: torch.Tensor | None = None, noises: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Posterior samples by DPS (``dps_step``) on the course's respaced chain T -> 0; one per
    measurement in ``y``, in [0, 1]. The last step (to t = 0: a = 1, s = 0) gives x0_hat less
    one last likelihood correction, as deepinv's sampler does.
    x_T and the noise of every step are drawn from ``generator``, unless given (``x_T``, and
    ``noises``: one tensor per step), e.g. to replay another sampler's draws."""
    ts = timesteps(schedule.T, steps)
    shape = physics.A_adjoint(y).shape                 # the image space, whatever y's shape
    x = (torch.randn(shape, generator=generator) if x_T is None else x_T.float()).to(y.device)
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        z = torch.randn(shape, generator=generator) if noises is None else noises[i].float()
        x, _ = dps_step(model, kind, schedule, x, t, s, y, physics, weight, z.to(y.device), clip_x0)
    return ((x + 1) / 2).clamp(0, 1)
