"""The score view of the same models: score <-> eps, the VP SDE, its reverse SDE
(Euler-Maruyama) and the probability-flow ODE (Song et al. 2021).

Score and eps. With x_t = a x_0 + s eps (a = sqrt(abar_t), s = sqrt(1 - abar_t)),
grad log q(x_t | x_0) = -(x_t - a x_0) / s^2 = -eps / s; averaging over x_0 given x_t
(Tweedie, Vincent 2011) gives the score of the noisy data,

    score(x_t) = grad_x log p_t(x_t) = -E[eps | x_t] / s,   so   score_hat = -eps_hat / s.

The VP SDE is our discrete schedule, exactly. Forward,
dx = -1/2 beta(tau) x dtau + sqrt(beta(tau)) dw has marginals N(sqrt(abar(tau)) x_0,
(1 - abar(tau)) I) with abar(tau) = exp(-int_0^tau beta). Measuring tau in steps and taking
beta piecewise constant, beta(tau) = b_t = -log(1 - beta_t) on (t - 1, t] (~ beta_t: for the
linear schedule this is Song et al.'s beta(tau) = 0.1 + 19.9 tau with tau = t / T, divided by
T), gives abar(t) = abar_t at every integer t: the SDE and the discrete chain share their
marginals. In the time rho = -log abar (so beta dtau = drho, rho_t = sum of b_1..b_t):

    forward            dx = -1/2 x drho + dw
    reverse SDE        dx = [-1/2 x - score(x, rho)] drho + dw_bar     (rho from rho_T to 0)
    probability flow   dx / drho = -1/2 (x + score(x, rho))          (same marginals, no noise)

Euler(-Maruyama) from step t down to the next step s of the grid, h = rho_t - rho_s > 0:

    SDE   x_s = x_t + h (x_t / 2 + score) + sqrt(h) z,   z ~ N(0, I)
    ODE   x_s = x_t + h / 2 (x_t + score)

The step to t = 0 returns x0_hat (Tweedie's denoised estimate), as is usual: an Euler step
there is stiff (the score grows like 1 / s_1).

DDIM (eta = 0) discretises the same ODE differently: in y = x / a and sigma = s / a the flow
reads dy / dsigma = eps(x), and DDIM is Euler in sigma, y_s = y_t + (sigma_s - sigma_t) eps_hat.
With many steps the two agree (tests/test_sde.py checks it).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .sampling import Trajectory, predict, timesteps
from .schedules import NoiseSchedule

METHODS = ("sde", "ode")


def eps_to_score(eps: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """score = -eps / sqrt(1 - abar_t)."""
    return -eps / torch.as_tensor(1 - alpha_bar, dtype=eps.dtype, device=eps.device).sqrt()


def score_to_eps(score: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """eps = -sqrt(1 - abar_t) score."""
    return -torch.as_tensor(1 - alpha_bar, dtype=score.dtype, device=score.device).sqrt() * score


def vp_beta(schedule: NoiseSchedule) -> torch.Tensor:
    """The VP SDE's beta per unit step, b_t = -log(1 - beta_t) = log abar_{t-1} - log abar_t
    (float64, length T + 1, b_0 = 0): with it the SDE's marginals are the chain's, exactly."""
    return -torch.log1p(-schedule.betas)


def vp_rho(schedule: NoiseSchedule) -> torch.Tensor:
    """rho_t = -log abar_t = int_0^t beta = b_1 + ... + b_t (float64, length T + 1, rho_0 = 0)."""
    return -torch.log(schedule.alpha_bars)


@torch.no_grad()
def sample_sde(model, shape: tuple[int, ...], schedule: NoiseSchedule, steps: int | None = None,
               method: str = "sde", spacing: str = "uniform", kind: str = "eps",
               clip_x0: bool = True, labels: torch.Tensor | None = None,
               guidance: float | None = None, generator: torch.Generator | None = None,
               x_T: torch.Tensor | None = None, snapshot_at: tuple[int, ...] = (),
               device: torch.device | str = "cpu", progress: bool = False) -> Trajectory:
    """Sample with the reverse VP SDE (``method="sde"``, Euler-Maruyama) or the
    probability-flow ODE (``method="ode"``, Euler), on the time grid of ``sample`` (same
    ``steps`` and ``spacing``) and with the same model arguments. All noise comes from
    ``generator``, drawn on the CPU. See the module docstring for the update rules.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    ts = timesteps(schedule.T, schedule.T if steps is None else steps, spacing)
    ab, rho = schedule.alpha_bars, vp_rho(schedule)
    x = (torch.randn(shape, generator=generator) if x_T is None else x_T.cpu()).to(device)
    labels = None if labels is None else labels.to(device)
    traj = Trajectory(x0=x, steps=ts)
    for i, t in enumerate(tqdm(ts, desc=f"{method} sampling", disable=not progress, leave=False)):
        s_ = ts[i + 1] if i + 1 < len(ts) else 0
        a_t, s_t = ab[t].sqrt().float(), (1 - ab[t]).sqrt().float()
        x0, eps = predict(model, x, t, kind, a_t, s_t, labels, guidance, clip_x0)
        if s_ == 0:
            x = x0                                         # last step: the denoised estimate
        else:
            score = -eps / s_t                             # score = -eps / sqrt(1 - abar_t)
            h = (rho[t] - rho[s_]).float()                 # h = rho_t - rho_s > 0
            if method == "ode":
                x = x + 0.5 * h * (x + score)              # x_s = x_t + h/2 (x_t + score)
            else:
                z = torch.randn(shape, generator=generator).to(device)
                x = x + h * (0.5 * x + score) + h.sqrt() * z   # + sqrt(h) z
        if t in snapshot_at:
            traj.snapshots[t], traj.predictions[t] = x.cpu(), x0.cpu()
    traj.x0 = x.cpu()
    return traj


# ---------------------------------------------------------------------------------------
# The same model inside deepinv (>= 0.5: EDMDiffusionSDE, DDIMSolver), for cross-checks
# ---------------------------------------------------------------------------------------
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
    ``sampling.timesteps``; nothing is downloaded."""
    EDMDiffusionSDE = _deepinv_edm_sde()
    den = DeepinvDenoiser(model, schedule, kind, clip_x0)
    return EDMDiffusionSDE(sigma_t=lambda t: den.sigmas.to(t.device)[t.round().long()],
                           variance_preserving=True, denoiser=den, minus_one_one=False,
                           dtype=dtype, device=torch.device(device))


def deepinv_vp_sde_rho(model, schedule: NoiseSchedule, kind: str = "eps", clip_x0: bool = True,
                       alpha: float = 1.0, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float64):
    """deepinv's ``EDMDiffusionSDE`` for our VP chain with rho = -log abar as its time, so that
    deepinv's own Euler(-Maruyama) solvers take exactly the steps of ``sample_sde``:

        sigma(rho) = sqrt(e^rho - 1) = s / a,   scale(rho) = 1 / sqrt(1 + sigma^2) = e^(-rho/2) = a
        forward drift f = scale' / scale x = -x / 2,   g^2 = scale^2 2 sigma sigma' = e^-rho e^rho = 1

    i.e. dx = -1/2 x drho + dw, and deepinv's reverse drift -f + (1 + alpha)/2 g^2 score gives
    alpha = 0: the probability-flow ODE, alpha = 1: the reverse SDE. sigma is smooth in rho
    (deepinv differentiates it), and at rho = rho_t it equals our sigma_t, so the wrapped model
    (``DeepinvDenoiser``) is called at step t. Solve with e.g.
    ``deepinv.sampling.EulerSolver(timesteps=vp_rho(schedule)[ts])`` (ts from
    ``sampling.timesteps``) and finish with the denoiser at the last step, as ``sample_sde``
    does."""
    EDMDiffusionSDE = _deepinv_edm_sde()
    den = DeepinvDenoiser(model, schedule, kind, clip_x0)
    return EDMDiffusionSDE(sigma_t=lambda rho: torch.expm1(rho).sqrt(),     # sigma = sqrt(e^rho - 1)
                           variance_preserving=True, alpha=alpha, denoiser=den, minus_one_one=False,
                           dtype=dtype, device=torch.device(device))
