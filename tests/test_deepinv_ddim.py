"""Our DDIM (eta = 0) against deepinv's DDIMSolver, the model wrapped as deepinv's denoiser
(models.deepinv.deepinv_vp_sde), from the same starting noise. Offline: nothing is downloaded.

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
from deepinv.sampling import DDIMSolver  # noqa: E402

from diffusion_course.data.toy2d import ring_centers  # noqa: E402
from diffusion_course.diffusion.sampling import sample, timesteps  # noqa: E402
from diffusion_course.diffusion.schedules import NoiseSchedule  # noqa: E402
from diffusion_course.models.deepinv import DeepinvDenoiser, deepinv_vp_sde  # noqa: E402
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
