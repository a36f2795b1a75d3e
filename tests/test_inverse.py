"""Chapter 12's package: the course model as a deepinv denoiser, the problems, our DPS step
against deepinv's, and the methods' contracts. Offline: nothing is downloaded."""
import math
import types

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from diffusion_course.diffusion.dps import dps_sample, dps_step  # noqa: E402
from diffusion_course.diffusion.sampling import predict  # noqa: E402
from diffusion_course.diffusion.schedules import NoiseSchedule  # noqa: E402
from diffusion_course.models.deepinv import CourseDenoiser, deepinv_dps  # noqa: E402
from diffusion_course.recipes import inverse  # noqa: E402
from diffusion_course.recipes.inverse import MethodSettings, make_problem, restore  # noqa: E402
from diffusion_course.recipes.mnist_ddpm import make_unet  # noqa: E402

SCHED = NoiseSchedule.make("linear", 1000)


class EmpiricalX0(torch.nn.Module):
    """The exact E[x0 | x_t] of a finite data set ([-1, 1] units) under the VP chain, as an
    x0-predicting "network" (x_t, t) -> x0_hat: softmax of -||x_t - a x_k||^2 / (2 s^2)."""

    def __init__(self, data: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.data, self.ab = data.double(), schedule.alpha_bars

    def forward(self, x, t):
        ab = self.ab[t[0]]
        a, s2 = ab.sqrt(), 1 - ab
        d2 = torch.cdist(x.double().flatten(1), a * self.data.flatten(1)).pow(2)
        w = torch.softmax(-d2 / (2 * s2), dim=1)
        return (w @ self.data.flatten(1)).reshape(x.shape).to(x.dtype)


def data_set(n=6, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, side, side, generator=g) > 0.6).double() * 2 - 1   # binary "digits"


def small_unet():
    torch.manual_seed(0)
    net = make_unet(types.SimpleNamespace(patch=2, base_width=16)).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.05)   # an untrained net that outputs something
    return net


# -- the adapter ------------------------------------------------------------------------
@pytest.mark.parametrize("t", [50, 200, 600])
def test_adapter_of_the_exact_denoiser_is_deepinvs_closed_form_mmse(t):
    """Wrapping the exact x0-denoiser of a data set must give deepinv's MMSE denoiser of the
    same data set in [0, 1] units: the unit conversion (x' = 2x - 1, sigma' = 2 sigma) and the
    step lookup are then right."""
    data = data_set()
    den = CourseDenoiser(EmpiricalX0(data, SCHED), SCHED, kind="x0", clip_x0=False)
    ab = SCHED.alpha_bars[t]
    sigma = float(((1 - ab) / ab).sqrt() / 2)               # exactly step t, in [0, 1] units
    assert den.step_of(sigma) == t
    g = torch.Generator().manual_seed(t)
    x01 = (data[[0, 3, 5]] + 1) / 2
    noisy = x01 + sigma * torch.randn(x01.shape, generator=g, dtype=torch.float64)
    ours = den(noisy.float(), sigma)
    mmse = dinv.models.MMSE(dataloader=(data + 1) / 2, device=torch.device("cpu"), dtype=torch.float64)
    theirs = mmse(noisy, sigma)
    assert (ours.double() - theirs).abs().max() < 1e-5


def test_adapter_calls_the_model_at_the_right_step_and_units():
    net, t = small_unet(), 300
    den = CourseDenoiser(net, SCHED, kind="v", clip_x0=True)
    assert isinstance(den, dinv.models.Denoiser)
    ab = SCHED.alpha_bars[t]
    a, s = ab.sqrt().float(), (1 - ab).sqrt().float()
    sigma = float(s / a / 2)
    x01 = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = den(x01, sigma)
        x0, _ = predict(net, a * (2 * x01 - 1), t, "v", a, s, clip_x0=True)
    assert torch.allclose(ours, (x0 + 1) / 2, atol=1e-6)
    assert 0 <= ours.min() and ours.max() <= 1
    assert torch.equal(den(x01, 0.0), x01.clamp(0, 1))       # sigma = 0: step 0, the identity
    # one sigma per image: each image is denoised at its own step
    both = den(x01[:2], torch.tensor([sigma, 0.0]))
    assert torch.allclose(both[0], ours[0], atol=1e-6) and torch.equal(both[1], x01[1])
    with pytest.raises(ValueError, match="one per image"):
        den(x01, torch.tensor([0.1, 0.2]))


def test_adapter_is_differentiable_in_x():
    den = CourseDenoiser(small_unet(), SCHED, kind="v")
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    den(x, 0.3).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# -- the problems -------------------------------------------------------------------------
def test_every_problem_builds_with_its_stated_noise():
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for name in inverse.PROBLEMS:
        physics = make_problem(name, seed=0)
        expected = float(name.split("-")[1]) if name.startswith("denoise") else inverse.MEASUREMENT_NOISE
        assert physics.noise_model.sigma == pytest.approx(expected)
        y = physics(x)
        noise = y - physics.A(x)
        if name.startswith("inpaint"):            # deepinv masks after adding the noise
            noise = noise[physics.mask.expand_as(noise) > 0]
        assert noise.std().item() == pytest.approx(expected, rel=0.05), name
        assert torch.equal(make_problem(name, seed=0)(x), y), "seeded: the same y every time"
    assert inverse.is_decomposable(make_problem("inpaint-random"))
    assert inverse.is_decomposable(make_problem("deblur"))
    assert inverse.is_decomposable(make_problem("denoise-0.2"))
    assert not inverse.is_decomposable(make_problem("sr2"))


def test_the_masks_hide_what_they_say():
    random_mask = make_problem("inpaint-random").mask
    assert 0.45 < random_mask.mean().item() < 0.55
    box = make_problem("inpaint-box").mask
    assert (box == 0).sum().item() == 100 and box[..., 14, 14].item() == 0 and box[..., 5, 5].item() == 1
    assert make_problem("sr2")(torch.rand(1, 1, 28, 28)).shape == (1, 1, 14, 14)


def test_bad_requests_say_what_is_allowed():
    with pytest.raises(ValueError, match="allowed: inpaint-random"):
        make_problem("colorise")
    y = torch.rand(1, 1, 14, 14)
    with pytest.raises(ValueError, match="allowed: pseudo-inverse"):
        restore("magic", y, make_problem("sr2"), MethodSettings())
    with pytest.raises(ValueError, match="CourseDenoiser"):
        restore("dps", y, make_problem("sr2"), MethodSettings())
    with pytest.raises(ValueError, match="decomposable"):
        restore("ddrm", y, make_problem("sr2"), MethodSettings(),
                denoiser=CourseDenoiser(small_unet(), SCHED))


# -- DPS: ours against deepinv's -----------------------------------------------------------
@pytest.mark.parametrize("name", ["inpaint-random", "deblur"])
def test_our_dps_matches_deepinvs_on_the_same_input_and_noise(name):
    """deepinv's PosteriorDiffusion + DPSDataFidelity + DDPMSolver (``deepinv_dps``) against
    ``dps_sample``, the noise of every step shared. deepinv carries the state in float64 and
    converts units twice ([-1, 1] <-> [0, 1]); measured max |difference| after 8 steps 3e-7 to 5e-7,
    against a guidance effect of ~0.9
    (the network runs in float32 in both): tolerance 1e-4."""
    net, steps, weight = small_unet(), 8, 50.0
    den = CourseDenoiser(net, SCHED, kind="v")
    physics = make_problem(name, seed=0)
    y = physics(torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    theirs_sampler = deepinv_dps(den, steps, weight)
    draws = [torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(10 + i))
             for i in range(steps + 1)]
    x_T, noises = draws[0], iter(draws[1:])
    theirs_sampler.solver.randn_like = lambda x: next(noises).to(x)
    theirs = theirs_sampler(y, physics, x_init=x_T.double()).float()

    ours = dps_sample(net, SCHED, "v", y, physics, steps, weight, x_T=x_T, noises=draws[1:])
    assert ours.shape == theirs.shape == (3, 1, 28, 28)
    assert (ours - theirs.clamp(0, 1)).abs().max() < 1e-4


def test_one_dps_step_is_the_ddpm_step_minus_the_likelihood_gradient():
    """weight = 0 gives exactly the course's ancestral step; the correction is
    zeta_t grad L with zeta_t = beta_t / sqrt(alpha_t) for neighbouring steps."""
    net, t = small_unet(), 400
    ab = SCHED.alpha_bars
    a_t = float(ab[t].sqrt())
    s_t = math.sqrt(1 - a_t**2)
    physics = make_problem("inpaint-box")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = physics(torch.rand(2, 1, 28, 28))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    free, _ = dps_step(net, "v", SCHED, x, t, t - 1, y, physics, 0.0, z)
    with torch.no_grad():
        x0, eps = predict(net, x, t, "v", torch.tensor(a_t).float(), torch.tensor(s_t).float())
    mean, var = SCHED.posterior(x0.double(), x.double(), t)
    assert torch.allclose(free.double(), mean + var.sqrt() * z.double(), atol=1e-5)
    guided, _ = dps_step(net, "v", SCHED, x, t, t - 1, y, physics, 1.0, z)
    xg = x.clone().requires_grad_(True)
    x0g, _ = predict(net, xg, t, "v", torch.tensor(a_t).float(), torch.tensor(s_t).float())
    (y - physics.A((x0g + 1) / 2)).flatten(1).norm(dim=1).sum().backward()
    beta = float(SCHED.betas[t])
    assert torch.allclose(free - guided, beta / math.sqrt(1 - beta) * xg.grad, atol=1e-5)


def test_dps_with_the_exact_prior_recovers_the_hidden_image():
    """A data set of six binary 8x8 images, the exact denoiser as the prior, half the pixels
    observed: the posterior is (almost) a point mass on the true image, and DPS finds it."""
    data = data_set()
    sched = NoiseSchedule.make("linear", 1000)
    model = EmpiricalX0(data, sched)
    truth = (data[[1, 4]] + 1) / 2
    mask = (torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=mask,
                                      noise_model=dinv.physics.GaussianNoise(0.02, rng=torch.Generator().manual_seed(0)))
    y = physics(truth.float())
    x = dps_sample(model, sched, "x0", y, physics, steps=50, weight=20.0,
                   generator=torch.Generator().manual_seed(0))
    assert (x.double() - truth).abs().max() < 0.05
