"""Score matching and Langevin dynamics (diffusion_course.score): closed forms for Gaussian
data, the exact scores of a Gaussian mixture, and mode coverage of (annealed) Langevin."""
import math

import pytest
import torch

from diffusion_course.models.toy2d import ScoreMLP
from diffusion_course.diffusion.score import (annealed_langevin, autograd_score, dsm_loss,
                                              gaussian_score, geometric_sigmas, langevin)
from diffusion_course.recipes.toy2d import train_score_mlp
from diffusion_course.data.toy2d import mixture_log_prob, ring_centers, ring_of_gaussians
from diffusion_course.evaluation.coverage import mode_coverage

CENTERS = ring_centers(8, 1.5)


def mixture_score(std):
    """Exact score of the ring mixture convolved with N(0, sigma^2 I): std -> sqrt(std^2 + sigma^2)."""
    return lambda x, sigma: autograd_score(
        lambda y: mixture_log_prob(y, CENTERS, math.sqrt(std**2 + float(sigma.reshape(-1)[0]) ** 2)), x).to(x.dtype)


def test_autograd_score_of_a_gaussian_is_the_closed_form():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mu = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
    got = autograd_score(lambda y: mixture_log_prob(y, mu, 0.7), x)
    assert torch.allclose(got, gaussian_score(x, mu, 0.49), rtol=1e-10, atol=1e-12)


def test_langevin_on_a_gaussian_reaches_the_ula_stationary_law():
    """For N(mu, v I) the chain is linear: x' = (1 - d/(2v)) x + d/(2v) mu + sqrt(d) z, whose
    stationary law is N(mu, v / (1 - d / (4 v)) I): mean exact, variance with the known bias."""
    mu, v, g = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.25, torch.Generator().manual_seed(1)
    x0 = torch.zeros(20_000, 2, dtype=torch.float64)
    for delta in (0.01, 0.2):
        x, _ = langevin(lambda y: gaussian_score(y, mu, v), x0, delta, 400, g)
        var_ula = v / (1 - delta / (4 * v))
        assert (x.mean(0) - mu).abs().max() < 4 * math.sqrt(var_ula / x.shape[0]), x.mean(0)
        var = x.var(0)
        # sample variance of 20,000 normal draws: relative standard error sqrt(2 / n) = 1 %
        assert ((var / var_ula - 1).abs() < 0.04).all(), (delta, var, var_ula)
    assert var_ula / v > 1.2          # at delta = 0.2 the bias (25 %) is far above the tolerance


def test_dsm_loss_with_sigma2_weight_is_the_eps_loss():
    g = torch.Generator().manual_seed(2)
    x0, z = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    sigma = torch.rand(32, generator=g) + 0.1
    net = ScoreMLP(hidden=16, depth=2)
    eps_hat = net.eps(x0 + sigma[:, None] * z, sigma)
    assert torch.allclose(dsm_loss(net, x0, sigma, z=z), (eps_hat - z).pow(2).sum(1).mean(), rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_dsm_minimiser_is_the_exact_score_for_gaussian_data(sigma):
    """Data N(0, v I), linear score model s(x) = -c x: the DSM loss is quadratic in c with
    minimiser c = E[x.z] / (sigma E[x.x]) = 1 / (v + sigma^2), the score of p_sigma = N(0, (v + sigma^2) I),
    although the target -z / sigma never sees p_sigma. Found here by evaluating dsm_loss at
    three values of c (a parabola) on one fixed Monte Carlo batch."""
    v, n = 0.3, 200_000
    g = torch.Generator().manual_seed(3)
    x0 = math.sqrt(v) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    loss = lambda c: dsm_loss(lambda x, s: -c * x, x0, torch.tensor(sigma, dtype=torch.float64), z=z).item()
    c = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    L = torch.tensor([loss(ci.item()) for ci in c], dtype=torch.float64)
    a2 = (L[2] - 2 * L[1] + L[0]) / 2          # L(c) = a2 c^2 + a1 c + a0
    a1 = L[1] - L[0] - a2
    c_star = -a1 / (2 * a2)
    # Monte Carlo: the numerator sum x.z / (2n) has relative standard error sqrt(v + sigma^2) / (sigma sqrt(2n))
    tol = 4 * math.sqrt(v + sigma**2) / (sigma * math.sqrt(2 * n))
    assert abs(c_star / (1 / (v + sigma**2)) - 1) < tol, (c_star, 1 / (v + sigma**2), tol)


def test_dsm_trained_mlp_approaches_the_exact_mixture_score():
    """A small MLP trained by DSM on ring-of-Gaussians points: its score at points of p_sigma
    is close to the exact score sqrt-weighted by sigma (i.e. in eps units), and far closer
    than the untrained network's. Measured (1,500 steps): relative error 0.14-0.18 at sigma 0.2-1."""
    std = 0.1
    data, _ = ring_of_gaussians(4000, std=std, generator=torch.Generator().manual_seed(4))
    torch.set_num_threads(1)
    net, losses = train_score_mlp(data, 0.05, 3.0, steps=1500, seed=0)
    untrained = ScoreMLP()
    exact = mixture_score(std)
    g = torch.Generator().manual_seed(5)
    for sigma in (0.2, 0.5, 1.0):
        x = ring_of_gaussians(1000, std=std, generator=g)[0] + sigma * torch.randn(1000, 2, generator=g)
        sig = torch.full((1000,), sigma)
        ref = exact(x, sig)
        with torch.no_grad():
            rel = ((net(x, sig) - ref).norm(dim=1).mean() / ref.norm(dim=1).mean()).item()
            rel0 = ((untrained(x, sig) - ref).norm(dim=1).mean() / ref.norm(dim=1).mean()).item()
        assert rel < 0.3 and rel < rel0 / 3, (sigma, rel, rel0)
    assert sum(losses[-100:]) < sum(losses[:100])


def test_plain_langevin_is_stuck_annealed_langevin_covers_every_mode():
    """Started in one mode, plain Langevin with the exact score stays there; annealed Langevin
    (exact scores of the noised mixture) spreads over all 8 modes in fair shares."""
    std, g = 0.1, torch.Generator().manual_seed(6)
    start = CENTERS[0] + 0.1 * torch.randn(2000, 2, generator=g)
    exact = mixture_score(std)
    plain, _ = langevin(lambda y: exact(y, torch.zeros(1)), start, 0.002, 500, g)
    cov = mode_coverage(plain, CENTERS, radius=3 * std)
    assert cov.fractions[0] > 0.95 and cov.covered == 1, cov.fractions
    sigmas = geometric_sigmas(3.0, 0.03, 10)
    ann, levels = annealed_langevin(exact, start, sigmas, 50, 2e-5 * 30, g)
    cov = mode_coverage(ann, CENTERS, radius=3 * std)
    assert len(levels) == 10 and cov.covered == 8 and cov.quality > 0.9, (cov.covered, cov.quality)
    assert 0.08 < cov.fractions.min() and cov.fractions.max() < 0.17, cov.fractions


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="sigma_max > sigma_min > 0"):
        geometric_sigmas(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="step_size > 0"):
        langevin(lambda y: y, torch.zeros(2, 2), 0.0, 3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(lambda y, s: y, torch.zeros(2, 2), torch.tensor([0.1, 1.0]), 3, 0.1)
