"""Inverse problems y = A x + n with the course's MNIST model as the prior (chapter 12).

deepinv (https://deepinv.github.io) is the toolbox: its physics build the measurements, its
posterior samplers (DPS, DiffPIR, DDRM) and proximal solvers do the restoring, its metrics
score them. This module supplies what deepinv cannot know about the course:

    CourseDenoiser      the chapter-05 model (eps-, x0- or v-predicting, data in [-1, 1],
                        integer step t) as a deepinv ``Denoiser``: images in [0, 1],
                        x_noisy = x + sigma n with sigma in [0, 1] units
    AutoencoderDenoiser chapter 04's denoising autoencoder as a deepinv ``Denoiser`` (blind:
                        it ignores sigma), the plug-and-play baseline's prior
    make_problem        the chapter's problems, each a deepinv physics with its noise stated
    dps_step, dps_sample  Diffusion Posterior Sampling (Chung et al. 2023) written out with
                        the course's schedule, checked against deepinv's DPS in the tests
    restore             every method of the chapter behind one call

Images here are [B, 1, 28, 28] in [0, 1], deepinv's convention; the course's models keep
theirs ([-1, 1]) inside the adapters: x_model = 2 x - 1, so a noise level sigma in [0, 1]
units is 2 sigma in the model's.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

try:
    import deepinv as dinv
    from deepinv.models import Denoiser
except ImportError as e:  # pragma: no cover - deepinv is a dependency of the course
    raise ImportError("chapter 12 needs deepinv >= 0.5: pip install 'deepinv>=0.5'") from e

from .sampling import predict, step_mean, timesteps
from .schedules import NoiseSchedule
from .sde import DeepinvDenoiser, deepinv_vp_sde


# ---------------------------------------------------------------------------------------
# The course's networks as deepinv denoisers
# ---------------------------------------------------------------------------------------
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
    a_t x' (``sde.DeepinvDenoiser`` does this part). The answer x0_hat in [-1, 1] comes back
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


# ---------------------------------------------------------------------------------------
# The problems
# ---------------------------------------------------------------------------------------
IMG_SIZE = (1, 28, 28)
MEASUREMENT_NOISE = 0.02  # sigma_y of every problem but denoising, in [0, 1] units
BOX = (9, 19)             # the centred 10 x 10 box that box inpainting hides (rows and columns)

PROBLEMS = {
    "inpaint-random": "half of the pixels missing (a random mask, the same for every image)",
    "inpaint-box": "a centred 10 x 10 box missing",
    "deblur": "Gaussian blur, sigma 1.5 px (circular, by FFT)",
    "sr2": "2x super-resolution (bilinear anti-aliasing filter, then every second pixel)",
    "denoise-0.1": "Gaussian denoising, sigma 0.1",
    "denoise-0.2": "Gaussian denoising, sigma 0.2",
    "denoise-0.4": "Gaussian denoising, sigma 0.4",
}


def make_problem(name: str, seed: int = 0, device: torch.device | str = "cpu"):
    """The deepinv physics of problem ``name`` (see ``PROBLEMS``); its noise model draws from a
    generator seeded with ``seed``, so y = physics(x) is reproducible. ``physics.noise_model.sigma``
    is the measurement noise: 0.02 for inpainting, deblurring and super-resolution."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; allowed: {', '.join(PROBLEMS)}")
    rng = torch.Generator(device).manual_seed(seed)
    sigma_y = float(name.split("-")[1]) if name.startswith("denoise-") else MEASUREMENT_NOISE
    noise = dinv.physics.GaussianNoise(sigma=sigma_y, rng=rng)
    if name == "inpaint-random":
        mask = (torch.rand(IMG_SIZE, generator=torch.Generator().manual_seed(seed + 1)) > 0.5).float()
        return dinv.physics.Inpainting(img_size=IMG_SIZE, mask=mask.to(device), noise_model=noise,
                                       device=device)
    if name == "inpaint-box":
        mask = torch.ones(IMG_SIZE)
        mask[:, BOX[0]:BOX[1], BOX[0]:BOX[1]] = 0
        return dinv.physics.Inpainting(img_size=IMG_SIZE, mask=mask.to(device), noise_model=noise,
                                       device=device)
    if name == "deblur":
        from deepinv.physics.functional.blur import gaussian_blur

        kernel = gaussian_blur(sigma=(1.5, 1.5))                  # [1, 1, 13, 13], sums to 1
        return dinv.physics.BlurFFT(img_size=IMG_SIZE, filter=kernel, noise_model=noise, device=device)
    if name == "sr2":
        return dinv.physics.Downsampling(img_size=IMG_SIZE, factor=2, filter="bilinear",
                                         noise_model=noise, device=device)
    return dinv.physics.Denoising(noise_model=noise)


def is_decomposable(physics) -> bool:
    """DDRM needs the singular value decomposition A = U S V^T, which deepinv offers for
    ``DecomposablePhysics`` (inpainting, FFT blur, denoising) and not for general ones."""
    return isinstance(physics, dinv.physics.DecomposablePhysics)


# ---------------------------------------------------------------------------------------
# DPS written out (Chung et al. 2023), on the course's schedule
# ---------------------------------------------------------------------------------------
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


def deepinv_dps(denoiser: CourseDenoiser, steps: int, weight: float,
                rng: torch.Generator | None = None, device: torch.device | str = "cpu"):
    """deepinv's DPS on the course's own chain: ``deepinv.sampling.DPS`` is a
    ``PosteriorDiffusion`` with ``DPSDataFidelity`` (norm guidance) and the DDPM solver on
    deepinv's continuous VP schedule; this is the same composition with the schedule the model
    was trained on (``sde.deepinv_vp_sde``: time = the step t, so every network call is at a
    trained step). Call it as ``deepinv_dps(...)(y, physics)``; images in [0, 1]."""
    ts = timesteps(denoiser.schedule.T, steps) + [0]
    return dinv.sampling.PosteriorDiffusion(
        data_fidelity=dinv.sampling.DPSDataFidelity(weight=weight, clip=[-1.0, 1.0]),
        denoiser=denoiser,                  # [0, 1] images; wrapped to the SDE's [-1, 1] state
        sde=deepinv_vp_sde(denoiser.model, denoiser.schedule, denoiser.kind, denoiser.clip_x0,
                           device=device),
        solver=dinv.sampling.DDPMSolver(timesteps=torch.tensor(ts, dtype=torch.float64), rng=rng),
        minus_one_one=True, device=device)


# ---------------------------------------------------------------------------------------
# Every method behind one call
# ---------------------------------------------------------------------------------------
CLASSICAL = ("pseudo-inverse", "tv", "pnp-dae")
DIFFUSION = ("dps", "diffpir", "ddrm", "dps-ours")
METHODS = CLASSICAL + DIFFUSION


@dataclass
class MethodSettings:
    """The knobs of every method; each problem may override them (``TUNED``)."""

    steps: int = 100            # network calls of the diffusion samplers
    dps_weight: float = 200.0   # lambda of DPS ("norm" guidance, as in Chung et al.)
    diffpir_lambda: float = 7.0  # rho_t = lambda sigma_y^2 / sigma_t^2: weight of the data step
    diffpir_zeta: float = 0.3   # share of fresh noise when DiffPIR re-noises (0: deterministic)
    ddrm_eta: float = 0.85      # DDRM's stochasticity (deepinv's default)
    tv_lambda: float = 0.05     # lambda TV(x) against 1/2 ||A x - y||^2
    tv_iters: int = 100         # proximal gradient iterations (stopped early once converged)
    pnp_iters: int = 20         # half-quadratic splitting iterations
    pnp_stepsize: float = 1.0   # gamma of the data step prox_{gamma f}


def restore(method: str, y: torch.Tensor, physics, settings: MethodSettings,
            denoiser: CourseDenoiser | None = None, dae: AutoencoderDenoiser | None = None,
            seed: int = 0) -> torch.Tensor:
    """The restoration of ``y`` by ``method`` (see ``METHODS``), images in [0, 1].

    Classical: ``pseudo-inverse`` (A^+ y, the least-squares solution of least norm), ``tv``
    (total variation, proximal gradient descent), ``pnp-dae`` (plug-and-play half-quadratic
    splitting with chapter 04's autoencoder as the denoiser, ``dae``). Diffusion, with
    ``denoiser`` as the prior: deepinv's ``dps`` (through ``deepinv_dps``), ``diffpir`` and ``ddrm``
    (decomposable physics only), and ``dps-ours`` (``dps_sample``). All randomness is seeded
    by ``seed``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if method in DIFFUSION and denoiser is None:
        raise ValueError(f"{method} needs the diffusion model as `denoiser` (a CourseDenoiser)")
    if method == "pnp-dae" and dae is None:
        raise ValueError("pnp-dae needs chapter 04's autoencoder as `dae` (an AutoencoderDenoiser)")
    torch.manual_seed(seed)
    l2 = dinv.optim.data_fidelity.L2()
    with torch.no_grad():
        if method == "pseudo-inverse":
            return physics.A_dagger(y).clamp(0, 1)
        if method == "tv":
            solver = dinv.optim.PGD(data_fidelity=l2, prior=dinv.optim.prior.TVPrior(n_it_max=50),
                                    lambda_reg=settings.tv_lambda, stepsize=1.0,
                                    max_iter=settings.tv_iters, early_stop=True)
            return solver(y, physics).clamp(0, 1)
        if method == "pnp-dae":
            solver = dinv.optim.HQS(data_fidelity=l2, prior=dinv.optim.prior.PnP(denoiser=dae),
                                    stepsize=settings.pnp_stepsize, g_param=0.1,  # blind: unused
                                    max_iter=settings.pnp_iters)
            return solver(y, physics).clamp(0, 1)
        if method == "diffpir":
            sampler = dinv.sampling.DiffPIR(model=denoiser, data_fidelity=l2, max_iter=settings.steps,
                                            zeta=settings.diffpir_zeta, lambda_=settings.diffpir_lambda,
                                            sigma=physics.noise_model.sigma, device=y.device)
            return sampler(y, physics, seed=seed).clamp(0, 1)
        if method == "ddrm":
            if not is_decomposable(physics):
                raise ValueError(f"ddrm needs a decomposable physics (inpainting, FFT blur, "
                                 f"denoising), not {type(physics).__name__}")
            sampler = dinv.sampling.DDRM(denoiser=denoiser, eta=settings.ddrm_eta,
                                         sigmas=np.linspace(1, 0, settings.steps))
            return sampler(y, physics, seed=seed).clamp(0, 1)
    if method == "dps":
        rng = torch.Generator(y.device).manual_seed(seed)
        sampler = deepinv_dps(denoiser, settings.steps, settings.dps_weight, rng, y.device)
        return sampler(y, physics).float().clamp(0, 1)
    return dps_sample(denoiser.model, denoiser.schedule, denoiser.kind, y, physics, settings.steps,
                      settings.dps_weight, torch.Generator().manual_seed(seed), denoiser.clip_x0)


# ---------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------
def psnr_ssim(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """deepinv's PSNR (peak 1) and SSIM, one value per image, for images in [0, 1]."""
    return (dinv.loss.metric.PSNR(max_pixel=1)(x_hat, x).cpu(),
            dinv.loss.metric.SSIM(max_pixel=1)(x_hat, x).cpu())


def timed(fn, *args, **kwargs):
    """(result, seconds) of fn(*args, **kwargs)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# The study: every method on every problem, scored the same way
# ---------------------------------------------------------------------------------------
# Per-problem method settings: the best mean PSNR of the grid in
# ``benchmarks/inverse_problems.py --tune`` (cpu profile, reference model, 100 steps) on test
# digits 9,000-9,031, never the digits the chapter and the benchmark score (those start at 0).
# The plug-and-play step size saturates (within 0.1 dB from 100 up): large steps make the data
# step put back the measured values almost exactly. dps-ours uses DPS's weight.
TUNED: dict[str, dict] = {
    "inpaint-random": dict(tv_lambda=0.03, pnp_stepsize=1000, dps_weight=400, diffpir_lambda=0.3),
    "inpaint-box": dict(tv_lambda=0.1, pnp_stepsize=1000, dps_weight=800, diffpir_lambda=3),
    "deblur": dict(tv_lambda=0.001, pnp_stepsize=300, dps_weight=800, diffpir_lambda=1),
    "sr2": dict(tv_lambda=0.003, pnp_stepsize=1000, dps_weight=800, diffpir_lambda=0.3),
    "denoise-0.1": dict(tv_lambda=0.1, pnp_stepsize=1000, dps_weight=800, diffpir_lambda=1),
    "denoise-0.2": dict(tv_lambda=0.1, pnp_stepsize=1000, dps_weight=200, diffpir_lambda=1),
    "denoise-0.4": dict(tv_lambda=0.3, pnp_stepsize=3, dps_weight=100, diffpir_lambda=1),
}


def settings_for(problem: str, steps: int) -> MethodSettings:
    """The method settings of ``problem`` (``TUNED``) with ``steps`` network calls."""
    return MethodSettings(steps=steps, **TUNED.get(problem, {}))


def study(problems, methods, x: torch.Tensor, labels: torch.Tensor, denoiser: CourseDenoiser,
          dae: AutoencoderDenoiser, judge, steps: int, seed: int = 0) -> dict:
    """Measure every method on every problem on the test digits ``x`` ([N, 1, 28, 28] in
    [0, 1], true ``labels``): y = physics(x) once per problem (seeded), then per method the
    restorations, PSNR and SSIM (mean, sd), the judge's accuracy on the restorations (does the
    digit keep its identity?) and seconds per image. DDRM is skipped where the physics is not
    decomposable. Returns {problem: {"measurement": y, "settings": the ``MethodSettings`` used
    (``settings_for``), "methods": {method: {...}}}}."""
    out = {}
    for name in problems:
        physics = make_problem(name, seed, device=x.device)
        y = physics(x)
        cfg = settings_for(name, steps)
        rows = {}
        for method in methods:
            if method == "ddrm" and not is_decomposable(physics):
                continue
            x_hat, seconds = timed(restore, method, y, physics, cfg, denoiser, dae, seed)
            psnr, ssim = psnr_ssim(x_hat, x)
            correct = (judge.labels(2 * x_hat - 1) == labels.cpu()).float()
            rows[method] = {"restored": x_hat.cpu(), "psnr": psnr.mean().item(), "psnr_sd": psnr.std().item(),
                            "ssim": ssim.mean().item(), "ssim_sd": ssim.std().item(),
                            "judge_accuracy": correct.mean().item(), "seconds_per_image": seconds / len(x)}
        out[name] = {"measurement": y.cpu(), "description": PROBLEMS[name], "settings": asdict(cfg),
                     "noise_sigma": round(float(physics.noise_model.sigma), 6), "methods": rows}
    return out


def summary(results: dict) -> dict:
    """Per problem: the best diffusion method against the best classical one, in PSNR (dB) and
    judge accuracy (points)."""
    out = {}
    for name, r in results.items():
        rows = r["methods"]
        diff = [m for m in DIFFUSION if m in rows]
        clas = [m for m in CLASSICAL if m in rows]
        if not diff or not clas:
            continue
        best_d = max(diff, key=lambda m: rows[m]["psnr"])
        best_c = max(clas, key=lambda m: rows[m]["psnr"])
        accuracy_gain = max(rows[m]["judge_accuracy"] for m in diff) - max(rows[m]["judge_accuracy"] for m in clas)
        out[name] = {"best_diffusion": best_d, "best_classical": best_c,
                     "psnr_gain_db": round(rows[best_d]["psnr"] - rows[best_c]["psnr"], 3),
                     "accuracy_gain_points": round(100 * accuracy_gain, 1)}
    return out
