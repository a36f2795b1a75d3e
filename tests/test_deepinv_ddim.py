"""Our DDIM (eta = 0) against deepinv's DDIMSolver, the model wrapped as deepinv's denoiser
(models.deepinv.deepinv_vp_sde), from the same starting noise. Offline: nothing is downloaded.
The last test runs the other three pairs of chapter 08's samplers on an image network the way
the chapter samples MNIST (v-prediction, x0_hat clipped, float32 network): DDPM against
DDPMSolver, and the PF-ODE and reverse SDE (Euler in rho = -log abar) against EulerSolver.

deepinv's ancestral step x_s = (a_s / a_t) x_t + a_t a_s sigma_t^2 (1 - sigma_s / sigma_t) score
with score = -eps_hat / s_t is, in exact arithmetic, the DDIM step a_s x0_hat + s_s eps_hat, and
its last step (sigma = 0) returns x0_hat, as ours does. So the two must agree to round-off: ours
runs in float32, deepinv's coefficients and state in float64 (the network in float32 in both).
Measured on images (linear schedule, values up to ~5): max |difference| 2e-6 (v, 20 steps),
7e-7 (v, clipped), 1e-5 (eps, 10 steps, where x0_hat = (x_t - s eps_hat) / a divides the float32
round-off by a_T = 0.006): tolerance 1e-4. With the cosine schedule a_T = 5e-5 amplifies
round-off 100x more in the first step: measured 6e-5, tolerance 5e-4.
"""
import types

import pytest
import torch

deepinv = pytest.importorskip("deepinv")
from deepinv.sampling import DDIMSolver, DDPMSolver, EulerSolver  # noqa: E402

from diffusion_course.data.toy2d import ring_centers  # noqa: E402
from diffusion_course.diffusion.sampling import predict, sample, timesteps  # noqa: E402
from diffusion_course.diffusion.schedules import NoiseSchedule  # noqa: E402
from diffusion_course.diffusion.sde import sample_sde, vp_clock  # noqa: E402
from diffusion_course.models.deepinv import DeepinvDenoiser, deepinv_vp_sde, deepinv_vp_sde_clock  # noqa: E402
from diffusion_course.models.toy2d import MixtureDenoiser  # noqa: E402
from diffusion_course.recipes.mnist_ddpm import make_unet  # noqa: E402

TOL = 1e-4


def small_unet():
    torch.manual_seed(0)
    net = make_unet(types.SimpleNamespace(patch=2, base_width=16)).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.05)   # an untrained net that outputs something
    return net


@pytest.mark.parametrize("kind,clip_x0,steps", [("v", False, 20), ("v", True, 20), ("eps", True, 10)])
def test_our_ddim_matches_deepinv_ddim_solver_on_images(kind, clip_x0, steps):
    sched, net = NoiseSchedule.make("linear", 1000), small_unet()
    x_T = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ours = sample(net, x_T.shape, sched, steps=steps, eta=0.0, kind=kind, clip_x0=clip_x0, x_T=x_T).x0
    solver = DDIMSolver(timesteps=torch.tensor(timesteps(1000, steps) + [0], dtype=torch.float64))
    theirs = solver.sample(deepinv_vp_sde(net, sched, kind, clip_x0), x_T.clone()).sample
    assert theirs.shape == ours.shape and ours.abs().max() > 0.5
    assert (ours - theirs.float()).abs().max() < TOL


def test_our_ddim_matches_deepinv_with_the_exact_mixture_denoiser():
    """The same on 2-D points with the exact denoiser of a Gaussian mixture, 50 cosine-schedule
    steps (a schedule deepinv does not ship: it comes in through sigma(t))."""
    sched = NoiseSchedule.make("cosine", 1000)
    den = MixtureDenoiser(ring_centers(8, 1.5), 0.1, sched)
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    ours = sample(den, x_T.shape, sched, steps=50, eta=0.0, clip_x0=False, x_T=x_T).x0
    solver = DDIMSolver(timesteps=torch.tensor(timesteps(1000, 50) + [0], dtype=torch.float64))
    theirs = solver.sample(deepinv_vp_sde(den, sched, "eps", clip_x0=False), x_T.clone()).sample
    assert (ours - theirs.float()).abs().max() < 5 * TOL


def test_wrapper_maps_sigma_back_to_the_step():
    sched = NoiseSchedule.make("linear", 1000)
    den = DeepinvDenoiser(lambda x, t: x, sched)
    for t in (1, 17, 500, 1000):
        assert den.step_of(den.sigmas[t]) == t


@pytest.mark.parametrize("sampler", ["ddpm", "ode", "sde"])
def test_our_ddpm_pf_ode_and_reverse_sde_match_deepinv_solvers_on_images(sampler):
    """Chapter 08's side-by-side, ci-sized: from the same x_T and, for the stochastic samplers,
    the same generator seed (both draw one N(0, I) per step, in float32), ours and deepinv's
    agree to float round-off. DDPM: sample(eta=1) against DDPMSolver on deepinv_vp_sde; PF-ODE
    and reverse SDE: sample_sde against EulerSolver on deepinv_vp_sde_clock (alpha = 0, 1), which
    stops at t_1, then our last step (x0_hat at t_1, clipped). Measured on the reference MNIST
    model (50 steps) max |difference| 4e-6 to 3e-5; tolerance 1e-3, as the chapter had."""
    sched, net, steps, kind = NoiseSchedule.make("linear", 1000), small_unet(), 10, "v"
    x_T = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(16))
    ts = timesteps(1000, steps)
    with torch.no_grad():
        if sampler == "ddpm":
            ours = sample(net, x_T.shape, sched, steps=steps, eta=1.0, kind=kind, x_T=x_T,
                          generator=torch.Generator().manual_seed(17)).x0
            solver = DDPMSolver(timesteps=torch.tensor(ts + [0], dtype=torch.float32),
                                rng=torch.Generator().manual_seed(17))
            theirs = solver.sample(deepinv_vp_sde(net, sched, kind, dtype=torch.float32), x_T.clone()).sample
        else:
            ours = sample_sde(net, x_T.shape, sched, steps=steps, method=sampler, kind=kind, x_T=x_T,
                              generator=torch.Generator().manual_seed(17)).x0
            solver = EulerSolver(timesteps=vp_clock(sched)[ts].float(), rng=torch.Generator().manual_seed(17))
            sde = deepinv_vp_sde_clock(net, sched, kind, alpha=0.0 if sampler == "ode" else 1.0, dtype=torch.float32)
            x1 = solver.sample(sde, x_T.clone()).sample                         # x at t_1 = ts[-1]
            a1 = sched.alpha_bars[ts[-1]]
            theirs = predict(net, x1.float(), ts[-1], kind, a1.sqrt().float(), (1 - a1).sqrt().float())[0]
    assert theirs.shape == ours.shape and ours.abs().max() > 0.5
    assert (ours - theirs.float()).abs().max() < 1e-3, (ours - theirs.float()).abs().max()
