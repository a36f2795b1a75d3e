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
except ImportError as e:  # pragma: no cover - deepinv is a dependency of the course
    raise ImportError("chapter 12 needs deepinv >= 0.5: pip install 'deepinv>=0.5'") from e

from ..diffusion.dps import dps_sample
from ..models.deepinv import AutoencoderDenoiser, CourseDenoiser, deepinv_dps

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
