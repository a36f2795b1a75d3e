"""2-D toys: data, mode coverage, the MLP denoiser with the shared training loop and
sampler, the exact mixture denoiser, and the GAN."""
import math

import pytest
import torch

from diffusion_course.diffusion.objectives import diffusion_loss
from diffusion_course.diffusion.sampling import sample
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.models.toy2d import MixtureDenoiser, MLPDenoiser
from diffusion_course.evaluation.coverage import mode_coverage
from diffusion_course.data.toy2d import mixture_log_prob, ring_centers, ring_of_gaussians, two_moons
from diffusion_course.recipes.toy2d import train_toy_gan
from diffusion_course.training.loop import train, TrainConfig


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_ring_shapes_modes_and_scale():
    x, modes = ring_of_gaussians(4000, k=8, radius=1.5, std=0.05, generator=gen())
    assert x.shape == (4000, 2) and x.dtype == torch.float32 and modes.shape == (4000,)
    assert set(modes.tolist()) == set(range(8))
    centers = ring_centers(8, 1.5)
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 1.5))
    assert (x - centers[modes]).norm(dim=1).max() < 0.05 * 6       # every point near its own mode
    assert (x - centers[modes]).std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.equal(ring_of_gaussians(10, generator=gen(3))[0], ring_of_gaussians(10, generator=gen(3))[0])


def test_two_moons():
    x, moon = two_moons(2000, noise=0.0, generator=gen())
    assert x.shape == (2000, 2) and set(moon.tolist()) == {0, 1}
    shift = torch.tensor([0.5, 0.25])
    upper = (x[moon == 0] + shift).norm(dim=1)                          # on the unit circle
    lower = (x[moon == 1] + shift - torch.tensor([1.0, 0.5])).norm(dim=1)
    assert torch.allclose(upper, torch.ones_like(upper), atol=1e-5)
    assert torch.allclose(lower, torch.ones_like(lower), atol=1e-5)


def test_mode_coverage_on_synthetic_points():
    centers = ring_centers(4, 1.0)
    pts = torch.cat([centers[0].repeat(50, 1), centers[1].repeat(40, 1) + 0.05,
                     centers[2].repeat(2, 1), torch.zeros(8, 2)])   # mode 3 empty, 8 in between
    cov = mode_coverage(pts, centers, radius=0.2)
    assert cov.fractions.tolist() == pytest.approx([0.5, 0.4, 0.02, 0.0])
    assert cov.covered == 2                    # 2 % is below a quarter of the fair share (6.25 %)
    assert cov.quality == pytest.approx(0.92)
    assert (cov.nearest[-8:] == -1).all() and cov.k == 4
    assert mode_coverage(pts, centers, radius=0.2, min_fraction=0.01).covered == 3


def test_mlp_denoiser_shapes_and_time_dependence():
    torch.manual_seed(0)
    net = MLPDenoiser(hidden=32, depth=2, T=50)
    x = torch.randn(5, 2)
    out = net(x, torch.tensor([1, 10, 20, 30, 50]))
    assert out.shape == (5, 2)
    assert not torch.allclose(net(x, torch.full((5,), 1)), net(x, torch.full((5,), 50)))
    assert net.config == dict(hidden=32, depth=2, T=50, dim=2, emb_dim=32)


def test_mixture_denoiser_is_exact_for_one_gaussian():
    # One Gaussian N(c, std^2 I): E[x0 | x_t] = c + a std^2 / (a^2 std^2 + s^2) (x_t - a c).
    sched = NoiseSchedule.make("cosine", 20)
    c, std, t = torch.tensor([[0.7, -0.2]]), 0.3, 8
    net = MixtureDenoiser(c, std, sched)
    x = torch.randn(6, 2, generator=gen(), dtype=torch.float64)
    a2 = sched.alpha_bars[t]
    want = c + a2.sqrt() * std**2 / (a2 * std**2 + 1 - a2) * (x - a2.sqrt() * c)
    assert torch.allclose(net.x0_mean(x, t), want.double(), atol=1e-12)
    eps = net(x, torch.full((6,), t))
    assert torch.allclose(a2.sqrt() * net.x0_mean(x, t) + (1 - a2).sqrt() * eps, x, atol=1e-12)


def test_mixture_log_prob_integrates_to_one():
    centers = ring_centers(3, 1.0)
    g = torch.linspace(-2, 2, 401, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = mixture_log_prob(xy, centers, 0.2).exp().sum() * (g[1] - g[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-6)


def test_exact_denoiser_samples_cover_every_mode():
    sched = NoiseSchedule.make("cosine", 50)
    centers = ring_centers(8, 1.5)
    net = MixtureDenoiser(centers, 0.05, sched)
    x = sample(net, (800, 2), sched, kind="eps", clip_x0=False, generator=gen()).x0
    cov = mode_coverage(x, centers, radius=0.15)
    assert cov.covered == 8 and cov.quality > 0.95
    assert cov.fractions.min() > 0.08


def test_mlp_trains_with_the_shared_loop_and_samples_near_the_modes():
    torch.manual_seed(0)
    data, _ = ring_of_gaussians(2000, std=0.05, generator=gen())
    assert diffusion_loss(MLPDenoiser(T=50), data[:8], NoiseSchedule.make("cosine", 50)).dim() == 0
    cfg = TrainConfig(steps=600, batch_size=256, lr=1e-2, warmup=50, ema_decay=0.99, T=50,
                      schedule="cosine")
    state = train(MLPDenoiser(hidden=64, depth=3, T=50), data, cfg, progress=False)
    first, last = sum(state.losses[:50]) / 50, sum(state.losses[-50:]) / 50
    assert last < 0.75 * first, (first, last)
    x = sample(state.ema, (1000, 2), cfg.noise_schedule(), kind="eps", clip_x0=False,
               generator=gen(1)).x0
    assert x.shape == (1000, 2) and torch.isfinite(x).all()
    cov = mode_coverage(x, ring_centers(8, 1.5), radius=0.3)
    assert cov.covered >= 7 and cov.quality > 0.5, (cov.covered, cov.quality)


def test_gan_runs_and_is_deterministic():
    data, _ = ring_of_gaussians(500, generator=gen())
    a = train_toy_gan(data, steps=30, batch_size=64, hidden=32, depth=2, seed=4, snapshot_every=10,
                  n_snapshot=50)
    b = train_toy_gan(data, steps=30, batch_size=64, hidden=32, depth=2, seed=4)
    assert a.d_losses == b.d_losses and len(a.g_losses) == 30
    assert sorted(a.snapshots) == [10, 20, 30] and a.snapshots[30].shape == (50, 2)
    assert all(math.isfinite(v) for v in a.d_losses + a.g_losses)
    pts = a.generator.sample(7, generator=gen())
    assert pts.shape == (7, 2)
