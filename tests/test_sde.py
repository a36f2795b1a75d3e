"""The score view: score <-> eps, the VP SDE of the discrete schedule, the reverse SDE and the
probability-flow ODE, checked on Gaussian-mixture data where the exact denoiser is known."""
import pytest
import torch

from diffusion_course.sampling import sample
from diffusion_course.schedules import NoiseSchedule
from diffusion_course.sde import eps_to_score, sample_sde, score_to_eps, vp_beta, vp_rho
from diffusion_course.toy2d import MixtureDenoiser, mode_coverage, ring_centers

CENTERS = ring_centers(8, 1.5)


def test_score_eps_round_trip():
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(16, 3, generator=g)
    ab = torch.rand(16, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    assert torch.allclose(score_to_eps(eps_to_score(eps, ab.float()), ab.float()), eps, atol=1e-6)
    score = torch.randn(16, 3, generator=g)
    assert torch.allclose(eps_to_score(score_to_eps(score, 0.3), 0.3), score, atol=1e-6)


@pytest.mark.parametrize("t", [1, 50, 400, 999])
def test_exact_denoiser_eps_gives_the_true_score(t):
    """For mixture data, p_t = (1/k) sum_j N(a c_j, (a^2 std^2 + s^2) I) is known: its
    autograd gradient equals -E[eps | x_t] / s computed from the exact denoiser."""
    sched, std = NoiseSchedule.make("linear", 1000), 0.2
    den = MixtureDenoiser(CENTERS, std, sched)
    ab = sched.alpha_bars[t]
    x = (torch.randn(32, 2, generator=torch.Generator().manual_seed(t), dtype=torch.float64) * 1.5).requires_grad_()
    var = ab * std**2 + (1 - ab)
    logp = torch.logsumexp(-((x[:, None] - ab.sqrt() * CENTERS.double()[None]) ** 2).sum(-1) / (2 * var), 1)
    true_score, = torch.autograd.grad(logp.sum(), x)
    got = eps_to_score(den(x.detach(), torch.full((32,), t)), ab)
    assert torch.allclose(got, true_score, rtol=1e-6, atol=1e-8 / (1 - ab).sqrt().item())


def test_vp_sde_marginals_are_the_discrete_chain():
    for name in ("linear", "cosine"):
        sched = NoiseSchedule.make(name, 1000)
        b = vp_beta(sched)
        assert torch.allclose(torch.exp(-torch.cumsum(b, 0)), sched.alpha_bars, rtol=1e-12)
        assert torch.allclose(vp_rho(sched), torch.cumsum(b, 0), rtol=1e-9, atol=1e-12)
    lin = NoiseSchedule.make("linear", 1000)
    # b_t ~ beta_t for small beta, and T b_t follows Song et al.'s beta(tau) = 0.1 + 19.9 tau
    assert torch.allclose(vp_beta(lin)[1:], lin.betas[1:], rtol=0.011)
    tau = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert (1000 * vp_beta(lin)[1:] - (0.1 + 19.9 * tau)).abs().max() < 0.25


def test_probability_flow_ode_converges_to_ddim_eta0():
    """Two discretisations of one ODE (Euler in rho = -log abar vs DDIM's Euler in
    sigma = s / a): from the same x_T they differ by O(1 / steps). Measured on this toy:
    max |difference| 0.19 / 0.045 / 0.009 at 50 / 200 / 1000 steps."""
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(CENTERS, 0.05, sched)
    x_T = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    gap = {}
    for steps in (50, 200, 1000):
        ddim = sample(den, x_T.shape, sched, steps=steps, eta=0.0, clip_x0=False, x_T=x_T).x0
        ode = sample_sde(den, x_T.shape, sched, steps=steps, method="ode", clip_x0=False, x_T=x_T).x0
        gap[steps] = (ddim - ode).abs().max().item()
    assert gap[1000] < 0.02 and gap[1000] < gap[200] / 3 < gap[50] / 9, gap


def test_ode_is_deterministic_sde_is_seeded():
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(CENTERS, 0.05, sched)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    run = lambda method, seed: sample_sde(den, x_T.shape, sched, steps=20, method=method, clip_x0=False,
                                          x_T=x_T, generator=torch.Generator().manual_seed(seed)).x0
    assert torch.equal(run("ode", 1), run("ode", 2))
    assert torch.equal(run("sde", 1), run("sde", 1)) and not torch.equal(run("sde", 1), run("sde", 2))
    with pytest.raises(ValueError, match="allowed: sde, ode"):
        sample_sde(den, (2, 2), sched, method="heun")


@pytest.mark.parametrize("sampler", ["reverse SDE, 200 steps", "ancestral DDPM, 1000 steps"])
def test_exact_denoiser_recovers_every_mode(sampler):
    """With the perfect model both stochastic samplers draw from the ring of 8 Gaussians:
    all 8 modes covered, each with 8-17 % of the points (fair share 12.5 %), and at least
    90 % of the points within 3 std of a mode."""
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(CENTERS, 0.05, sched)
    gen = torch.Generator().manual_seed(1)
    if sampler.startswith("reverse"):
        pts = sample_sde(den, (2000, 2), sched, steps=200, clip_x0=False, generator=gen).x0
    else:
        pts = sample(den, (2000, 2), sched, eta=1.0, clip_x0=False, generator=gen).x0
    cov = mode_coverage(pts, CENTERS, radius=0.15)
    assert cov.covered == 8 and cov.quality > 0.9, (cov.covered, cov.quality)
    assert 0.08 < cov.fractions.min() and cov.fractions.max() < 0.17, cov.fractions


def test_both_discretisations_approach_the_exact_flow_of_gaussian_data():
    """Data N(0, std^2 I): p_t = N(0, (abar_t std^2 + 1 - abar_t) I) and the probability-flow
    ODE is the linear map x_0 = x_T * std / sqrt(abar_T std^2 + 1 - abar_T), known exactly.
    DDIM (eta = 0) and the Euler ODE sampler both converge to it, error ~ 1 / steps."""
    std = 0.5
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(torch.zeros(1, 2), std, sched)          # one Gaussian at the origin
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ab_T = sched.alpha_bars[-1]
    exact = x_T * std / (ab_T * std**2 + 1 - ab_T).sqrt()
    err = {}
    for steps in (20, 200, 1000):
        for name, run in (("ddim", lambda: sample(den, x_T.shape, sched, steps=steps, eta=0.0, clip_x0=False, x_T=x_T)),
                          ("ode", lambda: sample_sde(den, x_T.shape, sched, steps=steps, method="ode",
                                                     clip_x0=False, x_T=x_T))):
            err[name, steps] = (run().x0.double() - exact).abs().max().item()
    # measured max errors (|x| up to ~1.5): DDIM 0.22 / 0.022 / 0.0047, ODE 0.17 / 0.016 / 0.0030
    # at 20 / 200 / 1000 steps: first order, both
    for name in ("ddim", "ode"):
        assert err[name, 1000] < err[name, 200] < err[name, 20] / 5, err
        assert err[name, 1000] < 0.01, err


@pytest.mark.parametrize("method,alpha", [("ode", 0.0), ("sde", 1.0)])
def test_deepinv_euler_in_rho_time_takes_our_steps(method, alpha):
    """deepinv's EulerSolver on ``deepinv_vp_sde_rho`` (time rho = -log abar) is our Euler(-Maruyama)
    step for step: same x_T, same generator seed (both draw one N(0, I) per step, float32), and the
    same final denoising step at t_1. Measured max |difference| ~1e-6 (2-D points up to ~2)."""
    deepinv = pytest.importorskip("deepinv")
    from deepinv.sampling import EulerSolver
    from diffusion_course.sampling import timesteps
    from diffusion_course.sde import deepinv_vp_sde_rho
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(CENTERS, 0.1, sched)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    ts = timesteps(1000, 20)
    ours = sample_sde(den, x_T.shape, sched, steps=20, method=method, clip_x0=False, x_T=x_T,
                      generator=torch.Generator().manual_seed(7)).x0
    sde = deepinv_vp_sde_rho(den, sched, "eps", clip_x0=False, alpha=alpha, dtype=torch.float32)
    solver = EulerSolver(timesteps=vp_rho(sched)[ts].float(), rng=torch.Generator().manual_seed(7))
    x1 = solver.sample(sde, x_T.clone()).sample                     # x at t_1 = ts[-1]
    a1 = sched.alpha_bars[ts[-1]]
    theirs = (x1 - (1 - a1).sqrt().float() * den(x1, ts[-1])) / a1.sqrt().float()   # x0_hat at t_1
    assert ours.abs().max() > 1 and (ours - theirs).abs().max() < 1e-4, (ours - theirs).abs().max()


def test_deepinv_ddpm_solver_matches_our_ancestral_sampler_with_the_same_noise():
    """DDPMSolver (DDIM's update at eta = 1) and our sample(eta=1) draw their N(0, I) in the same
    order: with a float32 SDE and the same seed they agree to round-off."""
    deepinv = pytest.importorskip("deepinv")
    from deepinv.sampling import DDPMSolver
    from diffusion_course.sampling import timesteps
    from diffusion_course.sde import deepinv_vp_sde
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(CENTERS, 0.1, sched)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    ours = sample(den, x_T.shape, sched, steps=25, eta=1.0, clip_x0=False, x_T=x_T,
                  generator=torch.Generator().manual_seed(8)).x0
    solver = DDPMSolver(timesteps=torch.tensor(timesteps(1000, 25) + [0], dtype=torch.float32),
                        rng=torch.Generator().manual_seed(8))
    theirs = solver.sample(deepinv_vp_sde(den, sched, "eps", clip_x0=False, dtype=torch.float32), x_T.clone()).sample
    assert (ours - theirs).abs().max() < 1e-4, (ours - theirs).abs().max()
