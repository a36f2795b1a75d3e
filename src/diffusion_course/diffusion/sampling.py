"""One sampler in which DDPM ancestral sampling and DDIM are settings.

From x_t to an earlier step s < t (s = t - 1 for the full chain), with
x0_hat and eps_hat from the network (see objectives.to_x0_eps):

    sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
    x_s   = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,   z ~ N(0, I)

eta = 0 is deterministic DDIM (Song et al. 2021). eta = 1 with all T steps is exactly
DDPM's ancestral step with the posterior variance (1 - abar_{t-1}) beta_t / (1 - abar_t)
(Ho et al. 2020): tests/test_sampling.py checks this against ``ddpm_step``. Fewer steps
("respacing") pick a sub-sequence of 1..T, uniformly or quadratically spaced, or (``sample``
``spacing="logsnr"``) evenly in log-SNR.

``order = 2`` is DPM-Solver++(2M) (Lu et al. 2022): in log-SNR lambda_t = log(a_t / s_t)
the step above is the exponential integrator with x0_hat held constant over [t, s] (first
order); the multistep solver instead extrapolates x0_hat linearly in lambda from this step's
and the previous step's predictions,

    D = x0_hat_t + (x0_hat_t - x0_hat_prev) h / (2 h_prev),   h = lambda_s - lambda_t,  h_prev = lambda_t - lambda_prev

and takes the same step with D (eps_hat recomputed from x_t and D). eta = 0 gives the ODE
solver DPM-Solver++(2M), eta = 1 its stochastic version DPM-Solver++(2M) SDE (midpoint
form), whose first order is the ancestral step. The first step (no previous prediction) and
the last (to t = 0, where lambda is infinite) stay first order.

``sample_adaptive`` chooses the 2M solver's steps by an error estimate.
``ddim_invert`` runs the eta = 0 update forwards in t (image -> noise), ``sdedit`` noises
an image to some t0 and samples back from there, ``slerp`` interpolates between noises;
classifier-free guidance is ``predict``'s ``labels`` and ``guidance``; the reverse SDE and the probability-flow ODE are in ``sde.py``.
"""
from __future__ import annotations

import math
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


def logsnr_timesteps(schedule: NoiseSchedule, steps: int, top: int | None = None) -> list[int]:
    """Descending steps top = t_n > ... > t_1 = 1, evenly spaced in log-SNR lambda_t (rounded to
    the nearest step, duplicates dropped): the grid DPM-Solver uses (Lu et al. 2022), where a
    multistep solver's steps are equally hard."""
    top = schedule.T if top is None else top
    if not isinstance(steps, int) or not 1 <= steps <= top:
        raise ValueError(f"steps must be an int in 1..{top}, got {steps!r}")
    if steps == 1:
        return [top]
    lam = log_snr(schedule.alpha_bars[1:top + 1])                     # decreasing in t
    targets = torch.linspace(lam[-1].item(), lam[0].item(), steps, dtype=torch.float64)
    nearest = (lam.view(1, -1) - targets.view(-1, 1)).abs().argmin(dim=1) + 1
    return sorted(set(nearest.tolist()), reverse=True)


def guidance_weights(text: str) -> list[float]:
    """Parse a comma-separated list of guidance weights, e.g. "0,0.5,2" -> [0.0, 0.5, 2.0]."""
    try:
        ws = [float(w) for w in str(text).split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"guidance weights must be comma-separated numbers >= 0, e.g. '0,0.5,2'; "
                         f"got {text!r}") from None
    if not ws or any(not w >= 0 for w in ws):
        raise ValueError(f"guidance weights must be comma-separated numbers >= 0, e.g. '0,0.5,2'; got {text!r}")
    return ws


@dataclass
class Trajectory:
    """What ``sample`` returns: the final images, plus snapshots if asked for."""

    x0: torch.Tensor
    steps: list[int]
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> x_t
    predictions: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> x0_hat at t


def null_condition(model) -> int | None:
    """What fills a condition that says nothing: a class model's null label (``num_classes``),
    or a text model's padding id (``null_condition``; the empty caption); None if unconditional."""
    return getattr(model, "null_condition", getattr(model, "num_classes", None))


def predict(model, x: torch.Tensor, t: int, kind: str, a: torch.Tensor, s: torch.Tensor,
            labels: torch.Tensor | None = None, guidance: float | None = None,
            clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) at step t, with optional classifier-free guidance on the output
    out = out_uncond + w (out_cond - out_uncond) and optional clipping of x0_hat to [-1, 1]
    (eps_hat is then recomputed so the two stay consistent).

    With ``guidance`` = w, both branches come from one batched call on [x, x] with labels
    [y, null] (null = ``model.num_classes``; labels above it exist where a model has
    ``num_labels``, e.g. chapter 16's learned ones; for a text model, ``labels`` are token
    ids [B, L] and null the empty caption, ``null_condition``), and the mix is computed as
    (1 - w) out_uncond + w out_cond: the same formula, but w = 0 returns the unconditional
    branch and w = 1 the conditional one exactly, without round-off. All three
    parameterisations are linear in the output, so guiding eps, x0 or v is the same thing.
    """
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    if hasattr(model, "check_condition"):   # a condition other than a label (chapter 17's captions)
        if guidance is not None and labels is None:
            raise ValueError("guidance needs a condition per example")
        if labels is not None:
            model.check_condition(labels, x.shape[0])
    elif labels is not None or guidance is not None:
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            raise ValueError("labels and guidance need a class-conditional model (one with num_classes)")
        if labels is None:
            raise ValueError("guidance needs labels: one class in 0..num_classes - 1 per example")
        top = getattr(model, "num_labels", num_classes + 1) - 1   # labels added after training
        if labels.shape != (x.shape[0],) or labels.min() < 0 or labels.max() > top:
            raise ValueError(f"labels must be {x.shape[0]} integers in 0..{top} "
                             f"({num_classes} = no label), got shape {tuple(labels.shape)}")
    if guidance is None:
        out = model(x, tt, labels) if labels is not None else model(x, tt)
    else:
        null = torch.full_like(labels, null_condition(model))
        both = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        out = (1 - guidance) * uncond + guidance * cond   # = uncond + w (cond - uncond)
    x0, eps = to_x0_eps(kind, out, x, a, s)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = (x - a * x0) / s
    return x0, eps


def log_snr(ab: torch.Tensor) -> torch.Tensor:
    """lambda_t = log(a_t / s_t) = log(abar_t / (1 - abar_t)) / 2."""
    return 0.5 * (ab / (1 - ab)).log()


def multistep_x0(x0: torch.Tensor, x0_prev: torch.Tensor | None, lam_prev: float | None, lam_t: float,
                 lam_s: float) -> torch.Tensor:
    """DPM-Solver++(2M)'s x0_hat for the step t -> s: the linear extrapolation in lambda of this
    step's and the previous step's predictions to the middle of [lambda_t, lambda_s]. Without
    a previous prediction, or on the last step (lambda_s infinite), x0_hat itself."""
    if x0_prev is None or not math.isfinite(lam_s):
        return x0
    ratio = (lam_s - lam_t) / (2 * (lam_t - lam_prev))       # h / (2 h_prev)
    return x0 + ratio * (x0 - x0_prev)


def step_mean(x0: torch.Tensor, eps: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor,
              eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The step from t down to s < t of the respaced chain, given the predictions (x0_hat,
    eps_hat) at t: (mean, sigma), so that x_s = mean + sigma z with z ~ N(0, I):

        mean  = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat
        sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)

    eta = 1: the ancestral (DDPM) step, whose sigma^2 is the posterior variance; eta = 0: DDIM."""
    sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()
    noise_coef = (1 - ab_s - sigma**2).clamp(min=0).sqrt()
    return ab_s.sqrt().float() * x0 + noise_coef.float() * eps, sigma


@torch.no_grad()
def sample(model, shape: tuple[int, ...], schedule: NoiseSchedule, steps: int | None = None,
           eta: float = 1.0, spacing: str = "uniform", kind: str = "eps", clip_x0: bool = True,
           labels: torch.Tensor | None = None, guidance: float | None = None,
           generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
           snapshot_at: tuple[int, ...] = (), device: torch.device | str = "cpu",
           progress: bool = False, start_t: int | None = None, noise=None, order: int = 1,
           times: list[int] | None = None) -> Trajectory:
    """Generate ``shape`` images. Defaults are DDPM: all T steps, eta = 1.

    ``steps`` < T respaces; ``eta`` = 0 gives DDIM; ``order`` = 2 is DPM-Solver++(2M) (with
    eta = 0) or DPM-Solver++(2M) SDE (eta = 1), see the module's docstring. All randomness comes from
    ``generator`` (drawn on the CPU, so results match across devices).
    ``snapshot_at`` lists steps t after which x_t and x0_hat are kept.
    ``start_t`` (default T) starts the chain at that step from ``x_T``, which must then be
    a draw of x_{start_t}; ``steps`` then respaces 1..start_t (see ``sdedit``).
    ``noise(shape, generator)`` draws x_T and every step's z (default ``torch.randn``;
    chapter 14's mixture-noise model passes ``mixture_noise.noise_fn(...)``).
    ``times``: the descending steps t_n > ... > t_1 >= 1 to visit, instead of ``steps`` and
    ``spacing`` (e.g. ``sde.edm_timesteps``' Karras grid, or a distilled model's own grid).
    """
    draw = (lambda shp, g: torch.randn(shp, generator=g)) if noise is None else noise
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (DDPM/DDIM) or 2 (DPM-Solver++(2M)), got {order!r}")
    top = schedule.T if start_t is None else start_t
    if not isinstance(top, int) or not 1 <= top <= schedule.T:
        raise ValueError(f"start_t must be an int in 1..{schedule.T}, got {start_t!r}")
    if start_t is not None and x_T is None:
        raise ValueError("start_t needs x_T: the noisy images x_{start_t} to start from")
    n_steps = top if steps is None else steps
    if start_t is not None:
        n_steps = min(n_steps, top)   # from part-way down there are at most start_t steps
    if times is not None:
        ts = [int(t) for t in times]
        if not ts or any(not 1 <= t <= top for t in ts) or any(a <= b for a, b in zip(ts, ts[1:])):
            raise ValueError(f"times must be strictly decreasing steps in 1..{top}, got {times!r}")
    elif spacing == "logsnr":
        ts = logsnr_timesteps(schedule, n_steps, top)
    else:
        ts = timesteps(top, n_steps, spacing)
    ab = schedule.alpha_bars
    x = (draw(tuple(shape), generator) if x_T is None else x_T.cpu()).to(device)
    labels = None if labels is None else labels.to(device)
    traj = Trajectory(x0=x, steps=ts)
    lam = log_snr(ab).tolist()                  # lambda_0 = inf: abar_0 = 1
    x0_prev, lam_prev = None, None
    for i, t in enumerate(tqdm(ts, desc="sampling", disable=not progress, leave=False)):
        s_ = ts[i + 1] if i + 1 < len(ts) else 0
        a_t, a_s = ab[t], ab[s_]
        at, st = a_t.sqrt().float(), (1 - a_t).sqrt().float()
        x0, eps = predict(model, x, t, kind, at, st, labels, guidance, clip_x0)
        x0_step, eps_step = x0, eps
        if order == 2:
            x0_step = multistep_x0(x0, x0_prev, lam_prev, lam[t], lam[s_])
            eps_step = (x - at * x0_step) / st
            x0_prev, lam_prev = x0, lam[t]
        x, sigma = step_mean(x0_step, eps_step, a_t, a_s, eta)
        if sigma > 0:
            x = x + sigma.float() * draw(tuple(shape), generator).to(device)
        if t in snapshot_at:
            traj.snapshots[t], traj.predictions[t] = x.cpu(), x0.cpu()
    traj.x0 = x.cpu()
    return traj


@torch.no_grad()
def sample_adaptive(model, shape: tuple[int, ...], schedule: NoiseSchedule, tol: float, kind: str = "eps",
                    first_step: float = 1.0, max_growth: float = 2.0, clip_x0: bool = True,
                    x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> Trajectory:
    """DPM-Solver++(2M) with its steps chosen on the way by an error estimate that costs no
    network call.

    From t, the 2M step to s differs from the first-order (DDIM) step by
    a_s (1 - e^{-h}) (D - x0_hat) = a_s (1 - e^{-h}) h / (2 h_prev) (x0_hat - x0_hat_prev): the
    extrapolation's correction, an estimate of the first-order step's local error. The next
    step goes to the smallest s (the longest step) whose estimate, as a root mean square over
    the batch, is at most ``tol``, and at most ``max_growth`` times the previous step in lambda
    (the estimate extrapolates from the last step: at high noise x0_hat hardly moves, and
    without the cap one step would jump to the end). The first step advances lambda by
    ``first_step``; the last goes from t = 1 to 0. Smaller ``tol``: more calls;
    ``Trajectory.steps`` lists the steps visited, one network call each.
    """
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    ab = schedule.alpha_bars
    lam = log_snr(ab).double()                                   # lambda_0 = inf
    x = (torch.randn(tuple(shape), generator=generator) if x_T is None else x_T.cpu()).to(device)
    t, x0_prev, lam_prev, h_prev, visited = schedule.T, None, None, None, []
    while True:
        visited.append(t)
        at, st = ab[t].sqrt().float(), (1 - ab[t]).sqrt().float()
        x0 = predict(model, x, t, kind, at, st, clip_x0=clip_x0)[0]
        if t == 1:
            break                                                # the last step, to t = 0, returns x0_hat
        cand = torch.arange(1, t)                                # every s < t, ascending
        h = lam[cand] - lam[t]
        if x0_prev is None:
            ok = h <= first_step
        else:
            change = (x0 - x0_prev).float().pow(2).mean().sqrt().item()
            err = ab[cand].sqrt() * (1 - (-h).exp()) * h / (2 * h_prev) * change
            ok = (err <= tol) & (h <= max_growth * h_prev)
        s_ = int(cand[ok].min()) if ok.any() else t - 1          # the longest step allowed
        x0_step = multistep_x0(x0, x0_prev, lam_prev, lam[t].item(), lam[s_].item())
        x = step_mean(x0_step, (x - at * x0_step) / st, ab[t], ab[s_], 0.0)[0]
        x0_prev, lam_prev, h_prev, t = x0, lam[t].item(), (lam[s_] - lam[t]).item(), s_
    return Trajectory(x0=x0.cpu(), steps=visited)


@torch.no_grad()
def sdedit(model, x0: torch.Tensor, t0: int, schedule: NoiseSchedule, steps: int | None = None,
           eta: float = 0.0, spacing: str = "uniform", kind: str = "eps", clip_x0: bool = True,
           labels: torch.Tensor | None = None, guidance: float | None = None,
           generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
           device: torch.device | str = "cpu", progress: bool = False) -> Trajectory:
    """SDEdit (Meng et al. 2022): noise the images ``x0`` to step t0 with the forward
    marginal and run the sampler from there down to 0,

        x_t0 = sqrt(abar_t0) x0 + sqrt(1 - abar_t0) eps,   eps ~ N(0, I)   (q(x_t0 | x0))

    then ``sample(..., start_t=t0, x_T=x_t0)`` with ``steps`` spread over 1..t0 (default
    all t0 of them; at most t0). Small t0 keeps the input almost unchanged, t0 = T forgets
    it: an edit trades faithfulness to the input for realism under the model (and, with
    ``labels``/``guidance``, for the requested class). ``noise`` replaces the draw of eps
    (otherwise from ``generator``, which the sampler then goes on using for eta > 0).
    t0 = 0 returns the input unchanged. The returned ``Trajectory`` has x_t0 under
    ``snapshots[t0]``.
    """
    if not isinstance(t0, int) or not 0 <= t0 <= schedule.T:
        raise ValueError(f"t0 must be an int in 0..{schedule.T}, got {t0!r}")
    eps = torch.randn(x0.shape, generator=generator) if noise is None else noise.cpu()
    if eps.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(eps.shape)}, the images {tuple(x0.shape)}")
    if t0 == 0:
        return Trajectory(x0=x0.cpu().clone(), steps=[], snapshots={0: x0.cpu().clone()})
    ab = schedule.alpha_bars[t0]
    x_t0 = ab.sqrt().float() * x0.cpu().float() + (1 - ab).sqrt().float() * eps.float()
    traj = sample(model, tuple(x0.shape), schedule, steps=steps, eta=eta, spacing=spacing, kind=kind,
                  clip_x0=clip_x0, labels=labels, guidance=guidance, generator=generator, x_T=x_t0,
                  device=device, progress=progress, start_t=t0)
    traj.snapshots[t0] = x_t0
    return traj


def ddpm_step(x0_hat: torch.Tensor, eps_hat: torch.Tensor, xt: torch.Tensor, t: int,
              schedule: NoiseSchedule, z: torch.Tensor) -> torch.Tensor:
    """The textbook ancestral step (Ho et al. eq. 11 with the posterior variance):

    x_{t-1} = mean + sqrt(beta_tilde_t) z,  mean from q(x_{t-1} | x_t, x_0 = x0_hat)
    """
    mean, var = schedule.posterior(x0_hat, xt, t)
    return mean + var.sqrt() * z


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, schedule: NoiseSchedule, steps: int | None = None,
                spacing: str = "uniform", kind: str = "eps", clip_x0: bool = False,
                labels: torch.Tensor | None = None, guidance: float | None = None,
                refine: int = 0, device: torch.device | str = "cpu",
                progress: bool = False) -> Trajectory:
    """DDIM inversion: run the deterministic (eta = 0) update forwards, image -> noise.

    It visits the steps of ``sample(..., steps, spacing)`` in reverse, 0 = s < t_1 < ... < t_n,
    and from x_s at the lower step s to x_t at the next one:

        x0_hat = (x_s - sqrt(1 - abar_s) eps_hat) / sqrt(abar_s)
        x_t    = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps_hat,   eps_hat = eps_theta(x_t, t)

    which is the sampler's eta = 0 step solved for x_t. eps_theta(x_t, t) needs the unknown
    x_t: the usual inversion uses eps_theta(x_s, t) instead (``refine = 0``), an O(step)
    error; ``refine = k`` then re-evaluates eps_hat at the current guess of x_t k times
    (fixed-point iteration), so that sampling with eta = 0 from the result returns x0 almost
    exactly. Returns a ``Trajectory`` whose ``x0`` field holds the noise x_T and whose
    ``snapshots`` hold every x_t visited (with x_0 under key 0).
    """
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}")
    ts = timesteps(schedule.T, schedule.T if steps is None else steps, spacing)[::-1]  # ascending
    ab = schedule.alpha_bars
    x = x0.to(device)
    labels = None if labels is None else labels.to(device)
    traj = Trajectory(x0=x, steps=ts, snapshots={0: x.cpu()})
    s_ = 0
    for t in tqdm(ts, desc="inverting", disable=not progress, leave=False):
        a_s, a_t = ab[s_], ab[t]
        at, st = a_t.sqrt().float(), (1 - a_t).sqrt().float()
        guess = x
        for _ in range(refine + 1):
            _, eps = predict(model, guess, t, kind, at, st, labels, guidance, clip_x0)
            x0_hat = (x - (1 - a_s).sqrt().float() * eps) / a_s.sqrt().float()
            guess = at * x0_hat + st * eps
        x = guess
        traj.snapshots[t] = x.cpu()
        s_ = t
    traj.x0 = x.cpu()
    return traj


def slerp(z0: torch.Tensor, z1: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises (per example, over all other dims):

        theta = arccos(<z0, z1> / (|z0| |z1|))
        slerp = sin((1 - lam) theta) / sin(theta) z0 + sin(lam theta) / sin(theta) z1

    Gaussian noise in high dimension lives near the sphere of radius sqrt(d); slerp stays
    there, while the straight line (1 - lam) z0 + lam z1 cuts inside it (its norm at
    lam = 1/2 is about sqrt(d / 2) for independent z0, z1): a kind of input the model
    never saw.
    """
    flat0, flat1 = z0.flatten(1).double(), z1.flatten(1).double()
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = cos.clamp(-1, 1).arccos()
    lam = torch.as_tensor(lam, dtype=torch.float64)
    sin = theta.sin().clamp(min=1e-12)
    w0 = torch.where(theta < 1e-6, 1 - lam, ((1 - lam) * theta).sin() / sin)
    w1 = torch.where(theta < 1e-6, lam + 0 * theta, (lam * theta).sin() / sin)
    shape = (-1,) + (1,) * (z0.dim() - 1)
    return (w0.view(shape) * z0.double() + w1.view(shape) * z1.double()).to(z0.dtype)
