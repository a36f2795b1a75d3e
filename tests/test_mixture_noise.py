"""Mixture-of-Gaussians noise (chapter 14): the law's exact moments against Monte Carlo and
numerical integration, the chain's t-step marginal against its closed-form cumulants, and
the measures that show it is neither the one-shot mixture nor any two-component mixture;
the loss and loop at equal budget, and the sampler on a case with a known answer."""
import math

import pytest
import torch

from diffusion_course.diffusion import mixture_noise as mn
from diffusion_course.recipes import variants
from diffusion_course.diffusion.objectives import diffusion_loss
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.models.toy2d import MLPDenoiser
from diffusion_course.training.loop import train, TrainConfig

SETTINGS = [(0.5, 0.5), (0.2, 0.5), (0.1, 0.3), (0.7, 0.8), (0.3, 1.0)]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------
# The law
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,phi", SETTINGS)
def test_mean_zero_and_variance_one_exactly(p, phi):
    mix = mn.mixture_params(p, phi)
    assert mix.mean1 == pytest.approx(math.sqrt((1 - phi**2) * (1 - p) / p))
    assert mix.mean2 == pytest.approx(-p / (1 - p) * mix.mean1)
    assert p * mix.mean1 + (1 - p) * mix.mean2 == pytest.approx(0, abs=1e-15)
    assert p * mix.mean1**2 + (1 - p) * mix.mean2**2 + phi**2 == pytest.approx(1, abs=1e-14)
    assert mn.mixture_mean(p, phi) == pytest.approx(0, abs=1e-15)
    assert mn.mixture_variance(p, phi) == pytest.approx(1, abs=1e-14)
    kappa = mix.cumulants(4)
    assert kappa[1].item() == pytest.approx(0, abs=1e-14) and kappa[2].item() == pytest.approx(1)


def test_phi_one_is_gaussian_noise():
    mix = mn.mixture_params(0.3, 1.0)
    assert mix.mean1 == 0 and mix.mean2 == 0 and mix.var == 1
    assert torch.allclose(mix.cumulants(6)[3:], torch.zeros(4, dtype=torch.float64), atol=1e-15)
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(mn.mixture_log_prob(x, 0.3, 1.0),
                          -x.double()**2 / 2 - 0.5 * math.log(2 * math.pi))


@pytest.mark.parametrize("p,phi", [(0.5, 0.5), (0.2, 0.5), (0.1, 0.3)])
def test_monte_carlo_moments_match(p, phi):
    n = 400_000
    eps = mn.sample_mixture_noise((n,), p, phi, gen(1), dtype=torch.float64)
    assert abs(eps.mean().item()) < 5 / math.sqrt(n)                  # 5 standard errors
    assert eps.var().item() == pytest.approx(1, abs=0.015)
    exact, mc = mn.standardised(mn.mixture_params(p, phi).cumulants(4)), mn.standardised(mn.sample_cumulants(eps, 4))
    assert mc[3].item() == pytest.approx(exact[3].item(), abs=0.03)  # skewness
    assert mc[4].item() == pytest.approx(exact[4].item(), abs=0.08)  # excess kurtosis
    # the component is drawn with probability p: the share of draws nearer m1 than m2
    mix = mn.mixture_params(p, phi)
    mid = (mix.mean1 + mix.mean2) / 2
    if phi < 0.6:
        assert (eps > mid).double().mean().item() == pytest.approx(p, abs=0.03)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_cumulants_equal_the_two_point_formulas(p):
    """With d = m1 - m2 the two-point part has kappa_3 = p(1-p)(1-2p) d^3 and
    kappa_4 = p(1-p)(1-6p+6p^2) d^4; the Gaussian part adds nothing beyond kappa_2."""
    mix = mn.mixture_params(p, 0.4)
    d = mix.mean1 - mix.mean2
    kappa = mix.cumulants(4)
    assert kappa[3].item() == pytest.approx(p * (1 - p) * (1 - 2 * p) * d**3, abs=1e-12)
    assert kappa[4].item() == pytest.approx(p * (1 - p) * (1 - 6 * p + 6 * p * p) * d**4, abs=1e-12)


@pytest.mark.parametrize("p,phi", [(0.5, 0.5), (0.1, 0.3), (0.3, 0.1), (0.6, 1.0)])
def test_log_pdf_integrates_to_one(p, phi):
    x = torch.linspace(-14, 14, 56_001, dtype=torch.float64)
    q = mn.mixture_log_prob(x, p, phi).exp()
    assert torch.trapezoid(q, x).item() == pytest.approx(1, abs=1e-9)
    assert torch.trapezoid(x * q, x).item() == pytest.approx(0, abs=1e-9)
    assert torch.trapezoid(x**2 * q, x).item() == pytest.approx(1, abs=1e-9)


def test_log_pdf_matches_a_histogram_of_draws():
    p, phi = 0.2, 0.4
    eps = mn.sample_mixture_noise((200_000,), p, phi, gen(2), dtype=torch.float64)
    edges = torch.linspace(-3, 4, 71, dtype=torch.float64)
    hist = torch.histogram(eps, edges).hist / (eps.numel() * (edges[1] - edges[0]))
    centres = (edges[1:] + edges[:-1]) / 2
    assert (hist - mn.mixture_log_prob(centres, p, phi).exp()).abs().max() < 0.03


@pytest.mark.parametrize("p,phi", [(0, 0.5), (1, 0.5), (-0.1, 0.5), (True, 0.5), (0.5, 0), (0.5, 1.2),
                                   (0.5, float("nan"))])
def test_bad_parameters_say_what_is_allowed(p, phi):
    with pytest.raises(ValueError, match=r"must lie in \(0, 1"):
        mn.mixture_params(p, phi)


def test_unknown_noise_name():
    with pytest.raises(ValueError, match="allowed: gaussian, mixture"):
        mn.draw_noise((3,), "laplace")


def test_sampling_is_deterministic_under_a_generator():
    a = mn.sample_mixture_noise((5, 2), 0.3, 0.5, gen(7))
    assert torch.equal(a, mn.sample_mixture_noise((5, 2), 0.3, 0.5, gen(7)))
    assert a.dtype == torch.float32 and a.shape == (5, 2)


# ---------------------------------------------------------------------------------------
# The forward process: the chain's marginal
# ---------------------------------------------------------------------------------------
FOUR_STEPS = NoiseSchedule.from_betas(torch.full((4,), 0.5))   # abar_4 = 1/16
TWO_STEPS = NoiseSchedule.from_betas(torch.full((2,), 0.5))


def test_chain_coefficients():
    sched = NoiseSchedule.make("linear", 50)
    for t in (1, 7, 50):
        c = mn.chain_coefficients(sched, t)
        assert c.numel() == t and c[-1].item() == pytest.approx(math.sqrt(sched.betas[t].item()))
        assert (c**2).sum().item() == pytest.approx(1 - sched.alpha_bars[t].item(), abs=1e-12)
    with pytest.raises(ValueError, match="t must be an int in 1..50"):
        mn.chain_coefficients(sched, 0)


def test_chain_with_gaussian_components_is_the_gaussian_closed_form():
    """phi = 1: every step is Gaussian, so the chain's cumulants are the one-shot ones."""
    chain = mn.chain_cumulants(FOUR_STEPS, 4, 0.3, 1.0, x0=0.7)
    shot = mn.single_shot_cumulants(FOUR_STEPS, 4, 0.3, 1.0, x0=0.7)
    assert torch.allclose(chain, shot, atol=1e-12)
    assert chain[1].item() == pytest.approx(0.25 * 0.7) and chain[2].item() == pytest.approx(15 / 16)


@pytest.mark.parametrize("p,phi,sched", [(0.2, 0.5, FOUR_STEPS), (0.5, 0.3, TWO_STEPS)])
def test_chain_marginal_by_monte_carlo_matches_its_closed_form(p, phi, sched):
    """Cumulants of a sum of independent scaled mixtures: kappa_n = kappa_n(eps) sum_s c_s^n.
    Tolerances are about 5 Monte Carlo standard errors at n = 400,000 (measured over seeds)."""
    t, x0 = sched.T, 0.8
    x = mn.chain_sample(sched, torch.full((400_000,), x0, dtype=torch.float64), t, p, phi, gen(3))
    exact = mn.chain_cumulants(sched, t, p, phi, x0=x0)
    mc = mn.sample_cumulants(x)
    assert mc[1].item() == pytest.approx(exact[1].item(), abs=0.01)          # sqrt(abar_t) x0
    assert mc[2].item() == pytest.approx(exact[2].item(), rel=0.01)          # 1 - abar_t
    z_exact, z_mc = mn.standardised(exact), mn.standardised(mc)
    for n, tol in [(3, 0.03), (4, 0.05), (5, 0.1), (6, 0.3)]:
        assert z_mc[n].item() == pytest.approx(z_exact[n].item(), abs=tol), n


@pytest.mark.parametrize("p,phi,sched", [(0.2, 0.5, FOUR_STEPS), (0.5, 0.3, TWO_STEPS)])
def test_one_shot_mixture_by_monte_carlo_matches_its_closed_form(p, phi, sched):
    t = sched.T
    x, eps = mn.q_sample_mixture(sched, torch.zeros(400_000, dtype=torch.float64), t, p, phi, gen(4))
    assert torch.allclose(x, (1 - sched.alpha_bars[t]).sqrt() * eps)
    z_exact, z_mc = mn.standardised(mn.single_shot_cumulants(sched, t, p, phi)), mn.standardised(mn.sample_cumulants(x))
    for n, tol in [(3, 0.03), (4, 0.05)]:
        assert z_mc[n].item() == pytest.approx(z_exact[n].item(), abs=tol)
    assert torch.allclose(mn.single_shot_params(sched, t, p, phi).cumulants(), mn.single_shot_cumulants(sched, t, p, phi),
                          atol=1e-12)


def test_chain_is_not_the_one_shot_mixture():
    """The measure: skewness kappa_3 / kappa_2^1.5 and excess kurtosis kappa_4 / kappa_2^2.
    The chain's are the one-shot values times sum c^3 / (sum c^2)^1.5 and sum c^4 / (sum c^2)^2,
    both < 1; here far outside the Monte Carlo tolerance of the test above."""
    p, phi = 0.2, 0.5
    chain = mn.standardised(mn.chain_cumulants(FOUR_STEPS, 4, p, phi))
    shot = mn.standardised(mn.single_shot_cumulants(FOUR_STEPS, 4, p, phi))
    c = mn.chain_coefficients(FOUR_STEPS, 4)
    assert chain[3].item() == pytest.approx(shot[3].item() * ((c**3).sum() / (c**2).sum() ** 1.5).item())
    assert chain[4].item() == pytest.approx(shot[4].item() * ((c**4).sum() / (c**2).sum() ** 2).item())
    assert shot[3] - chain[3] > 0.3                                  # 0.974 against 0.578
    sym = [mn.standardised(f(TWO_STEPS, 2, 0.5, 0.3))[4].item() for f in (mn.chain_cumulants, mn.single_shot_cumulants)]
    assert sym[0] == pytest.approx(-0.920, abs=1e-3) and sym[1] == pytest.approx(-1.656, abs=1e-3)


@pytest.mark.parametrize("p,phi", [(0.2, 0.5), (0.5, 0.3), (0.9, 0.7)])
def test_two_component_fit_recovers_a_two_component_mixture(p, phi):
    truth = mn.single_shot_params(FOUR_STEPS, 4, p, phi, x0=0.5)
    fit = mn.two_component_fit(truth.cumulants())
    assert fit.weight == pytest.approx(p, abs=1e-9) and fit.var == pytest.approx(truth.var, abs=1e-9)
    assert fit.mean1 == pytest.approx(truth.mean1, abs=1e-9) and fit.mean2 == pytest.approx(truth.mean2, abs=1e-9)
    assert torch.allclose(fit.cumulants(), truth.cumulants(), atol=1e-9)   # kappa_5, kappa_6 too


def test_two_component_fit_refuses_impossible_cumulants():
    with pytest.raises(ValueError, match="no two-component equal-variance mixture"):
        mn.two_component_fit(torch.tensor([0, 0, 1.0, 0.0, 0.5]))          # symmetric yet heavy-tailed
    with pytest.raises(ValueError, match="kappa_2"):
        mn.two_component_fit(torch.tensor([0, 0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("p,phi,sched,n", [(0.2, 0.5, FOUR_STEPS, 5), (0.5, 0.3, TWO_STEPS, 6)])
def test_chain_marginal_is_not_a_two_component_mixture(p, phi, sched, n):
    """The measure: the two-component equal-variance mixture with the chain's kappa_1..4
    has a different kappa_5 (asymmetric case) or kappa_6 (symmetric case). The gap (0.74
    and 0.97 standardised) is many times the Monte Carlo tolerance (0.1, 0.3) within which
    draws of the chain match the closed form, and the L1 distance of the densities,
    computed exactly, is clearly positive."""
    t = sched.T
    chain = mn.chain_cumulants(sched, t, p, phi)
    fit = mn.two_component_fit(chain)
    assert torch.allclose(fit.cumulants(4), chain[:5], atol=1e-10)          # matched up to kappa_4
    gap = abs(mn.standardised(fit.cumulants())[n] - mn.standardised(chain)[n]).item()
    assert gap > 0.7
    chain_density = lambda x: mn.chain_log_prob(x, sched, t, p, phi)
    assert mn.l1_distance(chain_density, fit.log_prob) > 0.05
    assert mn.l1_distance(fit.log_prob, fit.log_prob) == 0.0


def test_chain_density_is_exact():
    """chain_log_prob (2^t Gaussians) integrates to 1, has the closed-form cumulants and
    matches a histogram of the chain's draws."""
    p, phi, x0 = 0.2, 0.5, -0.4
    x = torch.linspace(-8, 8, 32_001, dtype=torch.float64)
    q = mn.chain_log_prob(x, FOUR_STEPS, 4, p, phi, x0=x0).exp()
    assert torch.trapezoid(q, x).item() == pytest.approx(1, abs=1e-9)
    moments = torch.stack([torch.trapezoid(x**k * q, x) for k in range(7)])
    kappa = mn.cumulants_from_moments(moments)
    assert torch.allclose(kappa, mn.chain_cumulants(FOUR_STEPS, 4, p, phi, x0=x0), atol=1e-7)
    draws = mn.chain_sample(FOUR_STEPS, torch.full((200_000,), x0, dtype=torch.float64), 4, p, phi, gen(5))
    edges = torch.linspace(-3, 3, 61, dtype=torch.float64)
    hist = torch.histogram(draws, edges).hist / (draws.numel() * 0.1)
    centres = (edges[1:] + edges[:-1]) / 2
    assert (hist - mn.chain_log_prob(centres, FOUR_STEPS, 4, p, phi, x0=x0).exp()).abs().max() < 0.03
    with pytest.raises(ValueError, match="t <= 16"):
        mn.chain_log_prob(x, NoiseSchedule.make("linear", 20), 17, p, phi)


# ---------------------------------------------------------------------------------------
# Training and sampling at equal budget
# ---------------------------------------------------------------------------------------
class PointMassDenoiser(torch.nn.Module):
    """The exact eps-prediction when every data point is c: eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t),
    whatever the noise law."""

    def __init__(self, c: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.c, self.ab = c, schedule.alpha_bars

    def forward(self, x, t):
        ab = self.ab[t].reshape(-1, 1).to(x.dtype)
        return (x - ab.sqrt() * self.c) / (1 - ab).sqrt()


def test_gaussian_noise_loss_is_the_course_loss():
    torch.manual_seed(0)
    net, sched, x0 = MLPDenoiser(hidden=16, depth=2, T=20), NoiseSchedule.make("cosine", 20), torch.randn(64, 2)
    for kind, gamma in [("eps", None), ("v", 5.0)]:
        a = mn.noise_diffusion_loss(net, x0, sched, "gaussian", kind=kind, min_snr_gamma=gamma, generator=gen(9))
        b = diffusion_loss(net, x0, sched, kind, gamma, generator=gen(9))
        assert torch.equal(a, b)


@pytest.mark.parametrize("noise", ["gaussian", "mixture"])
def test_loss_scale_is_the_same_for_both_noises(noise):
    """A network that outputs 0 has loss E[eps^2] = Var[eps] = 1 under either law: unit
    variance is what makes the comparison at equal budget fair."""
    zero = lambda x, t: torch.zeros_like(x)
    loss = mn.noise_diffusion_loss(zero, torch.zeros(40_000, 2), NoiseSchedule.make("linear", 100), noise,
                                   p=0.1, phi=0.3, generator=gen(0))
    assert loss.item() == pytest.approx(1, abs=0.03)


def test_exact_denoiser_has_zero_loss_and_the_sampler_returns_the_point():
    sched, c = NoiseSchedule.make("cosine", 30), torch.tensor([0.6, -1.1])
    model = PointMassDenoiser(c, sched)
    loss = mn.noise_diffusion_loss(model, c.repeat(256, 1), sched, "mixture", 0.2, 0.5, generator=gen(1))
    assert loss.item() < 1e-6
    for noise in mn.NOISES:
        out = mn.sample_with_noise(model, sched, 64, noise, 0.2, 0.5, generator=gen(2))
        assert out.shape == (64, 2) and torch.allclose(out, c.expand(64, 2), atol=1e-4)


def test_train_toy_with_gaussian_noise_is_training_train():
    """Same cfg, same initial weights: the toy loop with Gaussian noise reproduces the
    course's training loop loss for loss, so the mixture run differs only in its noise."""
    cfg = TrainConfig(steps=6, batch_size=32, lr=1e-2, warmup=2, T=20, schedule="cosine", seed=3)
    pts = torch.randn(200, 2, generator=gen(0))
    torch.manual_seed(0)
    a = variants.train_toy(MLPDenoiser(hidden=16, depth=2, T=20), pts, cfg, noise="gaussian")
    torch.manual_seed(0)
    b = train(MLPDenoiser(hidden=16, depth=2, T=20), pts, cfg, progress=False)
    assert a.losses == pytest.approx(b.losses, rel=1e-6) and a.step == b.step == 6
    for pa, pb in zip(a.ema.parameters(), b.ema.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_train_toy_with_mixture_noise_runs_and_is_deterministic():
    cfg = TrainConfig(steps=8, batch_size=32, lr=1e-2, warmup=2, T=20, seed=1)
    pts = torch.randn(100, 2, generator=gen(0))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(variants.train_toy(MLPDenoiser(hidden=16, depth=2, T=20), pts, cfg, "mixture", p=0.2, phi=0.5))
    assert runs[0].losses == runs[1].losses and all(math.isfinite(v) for v in runs[0].losses)
    with pytest.raises(ValueError, match="must lie in"):
        variants.train_toy(MLPDenoiser(hidden=16, depth=2, T=20), pts, cfg, "mixture", p=1.5)


def test_gaussian_sampler_is_the_course_ddpm_sampler():
    """With Gaussian noise ``sample_with_noise`` is DDPM ancestral sampling: the same numbers
    as ``sampling.sample`` (eta = 1, all steps, no clipping) under the same generator."""
    from diffusion_course.diffusion.sampling import sample

    torch.manual_seed(0)
    net, sched = MLPDenoiser(hidden=16, depth=2, T=20), NoiseSchedule.make("cosine", 20)
    ours = mn.sample_with_noise(net, sched, 50, "gaussian", generator=gen(4))
    course = sample(net, (50, 2), sched, clip_x0=False, generator=gen(4)).x0
    assert torch.allclose(ours, course, atol=1e-4)
