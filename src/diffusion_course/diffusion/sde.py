"""The score view of the same models: score <-> eps, the VP SDE, its reverse SDE
(Euler-Maruyama) and the probability-flow ODE (Song et al. 2021).

Score and eps. With x_t = a x_0 + s eps (a = sqrt(abar_t), s = sqrt(1 - abar_t)),
grad log q(x_t | x_0) = -(x_t - a x_0) / s^2 = -eps / s; averaging over x_0 given x_t
(Tweedie, Vincent 2011) gives the score of the noisy data,

    score(x_t) = grad_x log p_t(x_t) = -E[eps | x_t] / s,   so   score_hat = -eps_hat / s.

The VP SDE is our discrete schedule, exactly. Forward,
dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw has marginals N(sqrt(abar(t)) x_0,
(1 - abar(t)) I) with abar(t) = exp(-int_0^t beta). Measuring t in steps and taking
beta piecewise constant, beta(t) = b_t = -log(1 - beta_t) on (t - 1, t] (~ beta_t: for the
linear schedule this is Song et al.'s 0.1 + 19.9 t / T, on their time axis t / T in [0, 1],
divided by T), gives abar(t) = abar_t at every integer t: the SDE and the discrete chain share their
marginals. In the clock r = -log abar (so beta dt = dr, r_t = sum of b_1..b_t):

    forward            dx = -1/2 x dr + dw
    reverse SDE        dx = [-1/2 x - score(x, r)] dr + dw_bar     (r from r_T to 0)
    probability flow   dx / dr = -1/2 (x + score(x, r))          (same marginals, no noise)

Euler(-Maruyama) from step t down to the next step s of the grid, h = r_t - r_s > 0:

    SDE   x_s = x_t + h (x_t / 2 + score) + sqrt(h) z,   z ~ N(0, I)
    ODE   x_s = x_t + h / 2 (x_t + score)

The step to t = 0 returns x0_hat (Tweedie's denoised estimate), as is usual: an Euler step
there is stiff (the score grows like 1 / s_1).

DDIM (eta = 0) discretises the same ODE differently: in y = x / a and sigma = s / a the flow
reads dy / dsigma = eps(x), and DDIM is Euler in sigma, y_s = y_t + (sigma_s - sigma_t) eps_hat.
With many steps the two agree (tests/test_sde.py checks it).

The EDM view (Karras et al. 2022). y = x / a = x_0 + sigma eps is the "x-tilde" of EDM, with
sigma_t = sqrt((1 - abar_t) / abar_t) (``vp_sigmas``; abar = 1 / (1 + sigma^2)). EDM writes a
denoiser D(y; sigma) ~ x_0 as D = c_skip y + c_out F(c_in y; c_noise); our networks are such
an F with c_in = 1 / sqrt(1 + sigma^2) = a (the input is x_t) and c_noise = t
(``preconditioning``): eps (c_skip, c_out) = (1, -sigma), x0 (0, 1), and v (1 / (1 + sigma^2),
-sigma / sqrt(1 + sigma^2)), which is EDM's own choice with sigma_data = 1 and F = -v. The
PF-ODE is dy / dsigma = (y - D) / sigma = eps_hat; ``solve_sigma_ode`` integrates it with Euler
(= DDIM) or Heun (2nd order, 2n - 1 network calls for n steps: the last step, to sigma = 0, is
Euler), and ``sample_sigma_ode`` does so for our discrete models on EDM's grid
sigma_i = (sigma_max^(1/r) + i / (n - 1) (sigma_min^(1/r) - sigma_max^(1/r)))^r
(``karras_sigmas``, rho = 7) snapped to the model's steps (``edm_timesteps``).

Flow matching / rectified flow (Lipman et al. 2023, Liu et al. 2023) interpolates
z = (1 - u) x_0 + u eps, u in [0, 1]. Dividing x_t = a x_0 + s eps by a + s gives exactly this
with u = s / (a + s) = sigma / (1 + sigma) (``to_flow``): the same family, other coordinates.
There the PF-ODE is dz / du = eps_hat - x0_hat (the rectified-flow velocity), and an Euler step
in u is again the DDIM step: DDIM = Euler in sigma = Euler in u for the same network.
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


def vp_clock(schedule: NoiseSchedule) -> torch.Tensor:
    """r_t = -log abar_t = int_0^t beta = b_1 + ... + b_t (float64, length T + 1, r_0 = 0)."""
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
    ab, r = schedule.alpha_bars, vp_clock(schedule)
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
            h = (r[t] - r[s_]).float()                 # h = r_t - r_s > 0
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
# The EDM view (Karras et al. 2022): sigma, preconditioning, Euler and Heun in sigma
# ---------------------------------------------------------------------------------------
ODE_METHODS = ("euler", "heun")


def vp_sigmas(schedule: NoiseSchedule) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t), the noise level of y = x_t / sqrt(abar_t) = x_0 + sigma eps
    (float64, length T + 1, sigma_0 = 0)."""
    return alpha_bar_to_sigma(schedule.alpha_bars)


def alpha_bar_to_sigma(alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """sigma = sqrt((1 - abar) / abar)."""
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return ((1 - ab) / ab).sqrt()


def sigma_to_alpha_bar(sigma: torch.Tensor | float) -> torch.Tensor:
    """abar = 1 / (1 + sigma^2), the inverse of ``alpha_bar_to_sigma``."""
    return 1 / (1 + torch.as_tensor(sigma, dtype=torch.float64) ** 2)


def preconditioning(kind: str, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) such that our network of ``kind`` (eps, x0 or v), called on
    c_in y = x_t, gives EDM's denoiser D(y; sigma) = c_skip y + c_out F = x0_hat (c_noise = t).
    For ``kind="v"`` these are EDM's own coefficients with sigma_data = 1, and F = -v."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    c_in = 1 / (1 + sigma**2).sqrt()                                  # = sqrt(abar)
    if kind == "eps":
        return torch.ones_like(sigma), -sigma, c_in
    if kind == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), c_in
    if kind == "v":
        return c_in**2, -sigma * c_in, c_in
    raise ValueError(f"unknown kind {kind!r}; allowed: eps, x0, v")


def edm_preconditioning(sigma: torch.Tensor | float, sigma_data: float = 0.5
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's (c_skip, c_out, c_in, c_noise) (Karras et al. 2022, Table 1): c_skip =
    sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2),
    c_noise = log(sigma) / 4; they make the network's input and target unit-variance for data
    of standard deviation sd = ``sigma_data``."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    norm = (sigma**2 + sigma_data**2).sqrt()
    return sigma_data**2 / norm**2, sigma * sigma_data / norm, 1 / norm, sigma.log() / 4


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """EDM's n noise levels from sigma_max down to sigma_min, equally spaced in sigma^(1/rho)
    (float64; the sampler then steps on to sigma = 0)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + i * (lo - hi)) ** rho


def edm_timesteps(schedule: NoiseSchedule, steps: int, rho: float = 7.0) -> list[int]:
    """EDM's grid for a discrete model: ``karras_sigmas(sigma_T, sigma_1, steps, rho)``, each level
    snapped to the step t whose sigma_t is nearest in log sigma; descending, duplicates dropped
    (so very large ``steps`` may give fewer steps). Use it like ``sampling.timesteps``."""
    sig = vp_sigmas(schedule)
    levels = karras_sigmas(sig[-1].item(), sig[1].item(), steps, rho)
    t = (sig[1:].log()[None] - levels.log()[:, None]).abs().argmin(1) + 1
    return sorted(set(t.tolist()), reverse=True)


def solve_sigma_ode(eps_fn, y: torch.Tensor, sigmas, method: str = "heun") -> torch.Tensor:
    """Integrate the PF-ODE dy / dsigma = eps(y, sigma) through ``sigmas`` (descending; it may end
    at 0) from y at sigmas[0]. ``eps_fn(y, k)`` is eps_hat at y and the k-th level. Euler:
    y' = y + (sigma' - sigma) d. Heun (Karras et al. 2022, Algorithm 1 without churn): the Euler
    guess, a second slope d' there, and y' = y + (sigma' - sigma) (d + d') / 2, except into
    sigma' = 0, where the step stays Euler. Network calls: n (Euler), 2n - 1 (Heun, ending at 0)."""
    if method not in ODE_METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(ODE_METHODS)}")
    sigmas = [float(s) for s in sigmas]
    for k in range(len(sigmas) - 1):
        h = sigmas[k + 1] - sigmas[k]
        d = eps_fn(y, k)
        y_next = y + h * d
        if method == "heun" and sigmas[k + 1] > 0:
            y_next = y + h * 0.5 * (d + eps_fn(y_next, k + 1))
        y = y_next
    return y


@torch.no_grad()
def sample_sigma_ode(model, shape: tuple[int, ...], schedule: NoiseSchedule, steps: int,
                     method: str = "heun", grid: str = "edm", rho: float = 7.0, kind: str = "eps",
                     clip_x0: bool = True, labels: torch.Tensor | None = None,
                     guidance: float | None = None, generator: torch.Generator | None = None,
                     x_T: torch.Tensor | None = None, device: torch.device | str = "cpu") -> Trajectory:
    """The deterministic EDM sampler for our discrete VP model: the PF-ODE dy / dsigma = eps_hat in
    y = x / sqrt(abar) (``solve_sigma_ode``, Euler or Heun), from sigma_T through the grid's steps
    to sigma = 0. ``grid="edm"``: ``edm_timesteps(schedule, steps, rho)``; ``"uniform"`` or
    ``"quadratic"``: ``sampling.timesteps``. The network is called at integer steps t only, with
    the same arguments as ``sample`` (x0_hat clipped if ``clip_x0``); Euler is exactly DDIM
    (eta = 0) on the same steps. Heun calls the network 2 len(steps) - 1 times."""
    ts = edm_timesteps(schedule, steps, rho) if grid == "edm" else timesteps(schedule.T, steps, grid)
    ab, sig = schedule.alpha_bars, vp_sigmas(schedule)
    x = (torch.randn(shape, generator=generator) if x_T is None else x_T.cpu()).to(device)
    labels = None if labels is None else labels.to(device)
    grid_t = ts + [0]

    def eps_fn(y, k):
        t = grid_t[k]
        a_t, s_t = ab[t].sqrt().float(), (1 - ab[t]).sqrt().float()
        return predict(model, a_t * y, t, kind, a_t, s_t, labels, guidance, clip_x0)[1]

    y = x / ab[ts[0]].sqrt().float()                                  # y = x_T / sqrt(abar_T)
    y = solve_sigma_ode(eps_fn, y, sig[grid_t], method)
    return Trajectory(x0=y.float().cpu(), steps=ts)


def to_flow(x: torch.Tensor, alpha_bar: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, u): x_t = a x_0 + s eps in flow-matching coordinates z = x_t / (a + s) = (1 - u) x_0 + u eps,
    u = s / (a + s) = sigma / (1 + sigma)."""
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    return x / (a + s).to(x.dtype), s / (a + s)


def from_flow(z: torch.Tensor, u: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, abar): the inverse of ``to_flow``, sigma = u / (1 - u), abar = 1 / (1 + sigma^2)."""
    u = torch.as_tensor(u, dtype=torch.float64)
    ab = sigma_to_alpha_bar(u / (1 - u))
    return z * (ab.sqrt() + (1 - ab).sqrt()).to(z.dtype), ab
