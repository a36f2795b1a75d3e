"""The course's networks inside deepinv (https://deepinv.github.io), the inverse-problems
toolbox of chapter 12 and the cross-check of chapter 08's samplers:

    DeepinvDenoiser      an (x_t, t) -> eps / x0 / v network as the x0-denoiser deepinv's
                         diffusion SDEs call (model units, [-1, 1])
    deepinv_vp_sde(_clock) deepinv's EDMDiffusionSDE for the course's discrete VP chain (time =
                         the step t, or r = -log abar)
    CourseDenoiser       the chapter-05 model as a deepinv ``Denoiser`` for images in [0, 1],
                         x_noisy = x + sigma n with sigma in [0, 1] units
    AutoencoderDenoiser  chapter 04's denoising autoencoder as a (blind) deepinv ``Denoiser``
    deepinv_dps          deepinv's DPS composed on the course's own chain

Images for ``Denoiser``s are [B, 1, 28, 28] in [0, 1], deepinv's convention; the course's
models keep theirs ([-1, 1]) inside the adapters: x_model = 2 x - 1, so a noise level sigma in
[0, 1] units is 2 sigma in the model's. Nothing is downloaded.
"""
from __future__ import annotations

import torch

try:
    import deepinv as dinv
    from deepinv.models import Denoiser
except ImportError as e:  # pragma: no cover - deepinv is a dependency of the course
    raise ImportError("the course needs deepinv >= 0.5: pip install 'deepinv>=0.5'") from e

from ..diffusion.sampling import predict, timesteps
from ..diffusion.schedules import NoiseSchedule


def _deepinv_edm_sde():
    """deepinv's ``EDMDiffusionSDE`` class, imported only when needed."""
    try:
        from deepinv.sampling import EDMDiffusionSDE
    except ImportError as e:  # pragma: no cover - older deepinv
        raise ImportError("deepinv >= 0.5 (EDMDiffusionSDE, DDIMSolver) is needed: "
                          "pip install 'deepinv>=0.5'") from e
    return EDMDiffusionSDE


class DeepinvDenoiser(torch.nn.Module):
    """Our (x_t, t) -> eps / x0 / v network as the denoiser deepinv's diffusion SDEs call.

    deepinv writes x_t = scale(t) (x_0 + sigma(t) n) and asks the denoiser for x_0 given
    the unscaled input x_t / scale and the noise level sigma. For our VP chain scale =
    a = sqrt(abar_t) and sigma = s / a = sqrt((1 - abar_t) / abar_t); the wrapper finds the
    step t whose sigma_t is nearest to the given one, rebuilds x_t = a (x_t / a), and
    returns our x0_hat (clipped to [-1, 1] if ``clip_x0``). deepinv then forms the score
    (a x0_hat - x_t) / s^2 = -eps_hat / s, the same relation as ``eps_to_score``.
    """

    def __init__(self, model, schedule: NoiseSchedule, kind: str = "eps", clip_x0: bool = True):
        super().__init__()
        self.model, self.kind, self.clip_x0 = model, kind, clip_x0
        self.alpha_bars = schedule.alpha_bars
        self.sigmas = ((1 - self.alpha_bars) / self.alpha_bars).sqrt()  # sigma_t = s / a

    def step_of(self, sigma: torch.Tensor | float) -> int:
        return int(torch.argmin((self.sigmas - float(sigma)).abs()))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        t = self.step_of(sigma)
        ab = self.alpha_bars[t]
        a, s = ab.sqrt().float(), (1 - ab).sqrt().float()
        x0, _ = predict(self.model, a * x.float(), t, self.kind, a, s, clip_x0=self.clip_x0)
        return x0


def deepinv_vp_sde(model, schedule: NoiseSchedule, kind: str = "eps", clip_x0: bool = True,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64):
    """deepinv's ``EDMDiffusionSDE`` for our discrete VP chain and model: time is the step
    index t (a float in [0, T], used at integers only), sigma(t) = sqrt((1 - abar_t) / abar_t),
    scale(t) = 1 / sqrt(1 + sigma^2) = sqrt(abar_t) (``variance_preserving``), data in
    [-1, 1] (``minus_one_one=False``). Solve it with e.g.
    ``deepinv.sampling.DDIMSolver(timesteps=torch.tensor(ts + [0.]))`` where ``ts`` comes from
    ``diffusion.sampling.timesteps``; nothing is downloaded."""
    EDMDiffusionSDE = _deepinv_edm_sde()
    den = DeepinvDenoiser(model, schedule, kind, clip_x0)
    return EDMDiffusionSDE(sigma_t=lambda t: den.sigmas.to(t.device)[t.round().long()],
                           variance_preserving=True, denoiser=den, minus_one_one=False,
                           dtype=dtype, device=torch.device(device))


def deepinv_vp_sde_clock(model, schedule: NoiseSchedule, kind: str = "eps", clip_x0: bool = True,
                       alpha: float = 1.0, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float64):
    """deepinv's ``EDMDiffusionSDE`` for our VP chain with r = -log abar as its time, so that
    deepinv's own Euler(-Maruyama) solvers take exactly the steps of ``sample_sde``:

        sigma(r) = sqrt(e^r - 1) = s / a,   scale(r) = 1 / sqrt(1 + sigma^2) = e^(-r/2) = a
        forward drift f = scale' / scale x = -x / 2,   g^2 = scale^2 2 sigma sigma' = e^-r e^r = 1

    i.e. dx = -1/2 x dr + dw, and deepinv's reverse drift -f + (1 + alpha)/2 g^2 score gives
    alpha = 0: the probability-flow ODE, alpha = 1: the reverse SDE. sigma is smooth in r
    (deepinv differentiates it), and at r = r_t it equals our sigma_t, so the wrapped model
    (``DeepinvDenoiser``) is called at step t. Solve with e.g.
    ``deepinv.sampling.EulerSolver(timesteps=vp_clock(schedule)[ts])`` (ts from
    ``diffusion.sampling.timesteps``) and finish with the denoiser at the last step, as ``diffusion.sde.sample_sde``
    does."""
    EDMDiffusionSDE = _deepinv_edm_sde()
    den = DeepinvDenoiser(model, schedule, kind, clip_x0)
    return EDMDiffusionSDE(sigma_t=lambda rho: torch.expm1(rho).sqrt(),     # sigma = sqrt(e^rho - 1)
                           variance_preserving=True, alpha=alpha, denoiser=den, minus_one_one=False,
                           dtype=dtype, device=torch.device(device))


def _sigma_values(sigma, batch: int) -> torch.Tensor:
    """sigma as one float per image (deepinv passes a number, a 0-d or a [B] tensor)."""
    s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().flatten()
    if s.numel() not in (1, batch):
        raise ValueError(f"sigma must be one number or one per image ({batch}), got {s.numel()}")
    return s.expand(batch) if s.numel() == 1 else s


class CourseDenoiser(Denoiser):
    """D(x, sigma) = E[x_0 | x_0 + sigma n = x] for images in [0, 1], from a diffusion model.

    The model sees x_t = a x0 + s eps in [-1, 1] units; x / a = x0 + (s / a) eps. So an image
    x in [0, 1] with noise sigma is, in model units, x' = 2 x - 1 with noise sigma' = 2 sigma,
    and the model is asked at the step t whose s_t / a_t is nearest to sigma', on the input
    a_t x' (``DeepinvDenoiser`` does this part). The answer x0_hat in [-1, 1] comes back
    as (x0_hat + 1) / 2. Differentiable in x (DPS needs the gradient); sigma = 0 returns x
    (step 0: a = 1, s = 0). A sigma per image is allowed (images are grouped by step).
    """

    def __init__(self, model, schedule: NoiseSchedule, kind: str = "v", clip_x0: bool = True):
        super().__init__()
        self.model, self.schedule, self.kind, self.clip_x0 = model, schedule, kind, clip_x0
        self.inner = DeepinvDenoiser(model, schedule, kind, clip_x0)

    def step_of(self, sigma: float) -> int:
        """The model's step t for a noise level sigma in [0, 1] units."""
        return self.inner.step_of(2 * sigma)

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        sig = _sigma_values(sigma, x.shape[0])
        if bool((sig == sig[0]).all()):
            return (self.inner(2 * x - 1, 2 * sig[0]) + 1) / 2
        out = torch.empty_like(x)
        for s in sig.unique():
            rows = sig == s
            out[rows] = (self.inner(2 * x[rows] - 1, 2 * s) + 1) / 2
        return out


class AutoencoderDenoiser(Denoiser):
    """Chapter 04's denoising autoencoder (trained on sigma ~ U(0, max) in [-1, 1] units) as a
    deepinv denoiser for [0, 1] images. It is blind: sigma is accepted and ignored, which is
    what chapter 04 trained it for (one network for every noise level)."""

    def __init__(self, autoencoder: torch.nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor, sigma=None, *args, **kwargs) -> torch.Tensor:
        return ((self.autoencoder(2 * x - 1) + 1) / 2).clamp(0, 1)


def deepinv_dps(denoiser: CourseDenoiser, steps: int, weight: float,
                rng: torch.Generator | None = None, device: torch.device | str = "cpu"):
    """deepinv's DPS on the course's own chain: ``deepinv.sampling.DPS`` is a
    ``PosteriorDiffusion`` with ``DPSDataFidelity`` (norm guidance) and the DDPM solver on
    deepinv's continuous VP schedule; this is the same composition with the schedule the model
    was trained on (``deepinv_vp_sde``: time = the step t, so every network call is at a
    trained step). Call it as ``deepinv_dps(...)(y, physics)``; images in [0, 1]."""
    ts = timesteps(denoiser.schedule.T, steps) + [0]
    return dinv.sampling.PosteriorDiffusion(
        data_fidelity=dinv.sampling.DPSDataFidelity(weight=weight, clip=[-1.0, 1.0]),
        denoiser=denoiser,                  # [0, 1] images; wrapped to the SDE's [-1, 1] state
        sde=deepinv_vp_sde(denoiser.model, denoiser.schedule, denoiser.kind, denoiser.clip_x0,
                           device=device),
        solver=dinv.sampling.DDPMSolver(timesteps=torch.tensor(ts, dtype=torch.float64), rng=rng),
        minus_one_one=True, device=device)
