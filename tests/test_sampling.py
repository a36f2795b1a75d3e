"""The one sampler: DDPM is eta = 1 over all steps; DDIM eta = 0 is deterministic."""
import subprocess
import sys
import textwrap

import pytest
import torch

from diffusion_course.diffusion.objectives import target, to_x0_eps
from diffusion_course.diffusion.sampling import (ddim_invert, ddpm_step, predict, sample, sdedit,
                                                 slerp, timesteps)
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.models.toy2d import MixtureDenoiser
from diffusion_course.data.toy2d import ring_centers, ring_of_gaussians


class Linear(torch.nn.Module):
    """A fixed, smooth 'network': enough to exercise the sampler's algebra."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(4, 4, generator=g) * 0.3

    def forward(self, x, t):
        return torch.tanh(x @ self.w) * (t.float() / 50).view(-1, 1)


def test_timesteps_spacing():
    assert timesteps(10, 10) == list(range(10, 0, -1))
    assert timesteps(1000, 1) == [1000]
    ts = timesteps(1000, 50)
    assert ts[0] == 1000 and ts[-1] == 1 and len(ts) == 50 and ts == sorted(ts, reverse=True)
    q = timesteps(1000, 50, "quadratic")
    assert q[0] == 1000 and q[-1] == 1 and (q[-2] - q[-1]) < (q[0] - q[1])
    with pytest.raises(ValueError, match="allowed: uniform, quadratic"):
        timesteps(10, 5, "cubic")
    with pytest.raises(ValueError, match="steps must be an int in 1..10"):
        timesteps(10, 11)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_parameterisation_round_trip(kind):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    ab = torch.rand(8, 1, generator=g) * 0.98 + 0.01
    a, s = ab.sqrt(), (1 - ab).sqrt()
    xt = a * x0 + s * eps
    x0_hat, eps_hat = to_x0_eps(kind, target(kind, x0, eps, a, s), xt, a, s)
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)


def test_eta1_all_steps_is_the_ddpm_ancestral_update():
    """Same noise draws: the general sampler reproduces Ho et al.'s step exactly."""
    sched, model = NoiseSchedule.make("linear", 50), Linear()
    shape = (6, 4)
    got = sample(model, shape, sched, eta=1.0, clip_x0=False, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g)
    ab = sched.alpha_bars
    for t in range(50, 0, -1):
        a, s = ab[t].sqrt().float(), (1 - ab[t]).sqrt().float()
        x0_hat, eps_hat = predict(model, x, t, "eps", a, s, clip_x0=False)
        z = torch.randn(shape, generator=g) if t > 1 else torch.zeros(shape)
        x = ddpm_step(x0_hat.double(), eps_hat.double(), x.double(), t, sched, z.double()).float()
    assert torch.allclose(got.x0, x, atol=1e-5)


def test_eta0_is_deterministic_and_noise_free():
    sched, model = NoiseSchedule.make("cosine", 100), Linear()
    x_T = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    a = sample(model, (5, 4), sched, steps=20, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(1))
    b = sample(model, (5, 4), sched, steps=20, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.x0, b.x0)
    c = sample(model, (5, 4), sched, steps=20, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a.x0, c.x0)


def test_same_seed_same_samples_and_snapshots():
    sched, model = NoiseSchedule.make("linear", 40), Linear()
    run = lambda: sample(model, (3, 4), sched, steps=10, generator=torch.Generator().manual_seed(7),
                         snapshot_at=(40, 10))
    a, b = run(), run()
    assert torch.equal(a.x0, b.x0) and set(a.snapshots) == {40, 10}
    assert all(torch.equal(a.predictions[t], b.predictions[t]) for t in a.predictions)


def test_clipping_keeps_prediction_in_range():
    sched = NoiseSchedule.make("linear", 20)
    big = lambda x, t: torch.full_like(x, 5.0)
    out = sample(big, (2, 4), sched, kind="x0", generator=torch.Generator().manual_seed(0))
    assert out.x0.abs().max() <= 1.0 + 1e-6


# ---------------------------------------------------------------------------------------
# DDIM inversion, interpolation, reproducibility across processes
# ---------------------------------------------------------------------------------------
def test_eta0_twice_under_one_seed_is_bit_identical():
    sched, model = NoiseSchedule.make("linear", 100), Linear()
    run = lambda: sample(model, (5, 4), sched, steps=25, eta=0.0,
                         generator=torch.Generator().manual_seed(11)).x0
    assert torch.equal(run(), run())


def test_inversion_then_generation_returns_the_input():
    """Exact denoiser of a smooth mixture (std 0.5), 200 steps: plain inversion returns the
    points to within 0.02 (the O(step) error of evaluating eps at the lower step), and two
    fixed-point refinements to within 1e-4."""
    sched = NoiseSchedule.make("linear", 1000)
    den = MixtureDenoiser(ring_centers(8, 1.5), 0.5, sched)
    x0, _ = ring_of_gaussians(300, std=0.5, generator=torch.Generator().manual_seed(2))
    errors = {}
    for refine in (0, 2):
        inv = ddim_invert(den, x0, sched, steps=200, refine=refine)
        assert inv.steps == timesteps(1000, 200)[::-1] and torch.equal(inv.snapshots[0], x0)
        back = sample(den, x0.shape, sched, steps=200, eta=0.0, clip_x0=False, x_T=inv.x0).x0
        errors[refine] = (back - x0).abs().max().item()
        assert 0.8 < inv.x0.std().item() < 1.2        # the data went to noise-like latents
    assert errors[0] < 0.02 and errors[2] < 1e-4, errors


def test_inversion_of_a_smooth_network_with_all_steps():
    sched, model = NoiseSchedule.make("linear", 50), Linear()
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(5)) * 0.5
    z = ddim_invert(model, x0, sched, refine=3).x0
    back = sample(model, x0.shape, sched, eta=0.0, clip_x0=False, x_T=z).x0
    assert (back - x0).abs().max() < 1e-4
    with pytest.raises(ValueError, match="refine"):
        ddim_invert(model, x0, sched, refine=-1)


def test_sample_digits_batches_the_seeded_sampler():
    from diffusion_course.recipes.mnist_ddpm import sample_digits
    from diffusion_course.training.loop import TrainConfig
    tcfg = TrainConfig(steps=1, T=50, kind="eps", schedule="linear")
    model = lambda x, t: 0.1 * x                        # any smooth per-pixel "network"
    run = lambda seed, batch: sample_digits(model, tcfg, 5, steps=10, eta=1.0, batch_size=batch,
                                            generator=torch.Generator().manual_seed(seed))
    a = run(0, 2)                                       # batches of 2, 2 and 1
    assert a.shape == (5, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, run(0, 2)) and not torch.equal(a, run(1, 2))
    # one batch is exactly one call of the sampler with the training schedule and kind
    one = sample(model, (5, 1, 28, 28), tcfg.noise_schedule(), steps=10, eta=1.0, kind="eps",
                 generator=torch.Generator().manual_seed(0)).x0
    assert torch.equal(run(0, 250), one)


def test_slerp_endpoints_norm_and_angle():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)
    assert torch.allclose(slerp(z0, z1, 0.0), z0, atol=1e-5) and torch.allclose(slerp(z0, z1, 1.0), z1, atol=1e-5)
    mid = slerp(z0, z1, 0.5)
    norms = lambda z: z.flatten(1).norm(dim=1)
    # on the arc between two vectors of (almost) equal norm the norm stays near sqrt(784) = 28
    assert ((norms(mid) - 28).abs() < 2).all()
    assert (norms((z0 + z1) / 2) < 0.8 * norms(mid)).all()          # the chord cuts inside
    same = slerp(z0, z0, 0.3)                                        # theta = 0: no division by 0
    assert torch.allclose(same, z0, atol=1e-5)


_SNIPPET = """
import sys, types, torch
from diffusion_course.recipes.mnist_ddpm import make_unet
from diffusion_course.diffusion.sampling import sample
from diffusion_course.diffusion.sde import sample_sde
from diffusion_course.diffusion.schedules import NoiseSchedule

def run():
    torch.manual_seed(0)
    net = make_unet(types.SimpleNamespace(patch=2, base_width=16)).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.05)
    sched = NoiseSchedule.make("linear", 1000)
    a = sample(net, (2, 1, 28, 28), sched, steps=6, eta=1.0, kind="v",
               generator=torch.Generator().manual_seed(4)).x0
    b = sample(net, (2, 1, 28, 28), sched, steps=6, eta=0.0, kind="v",
               generator=torch.Generator().manual_seed(4)).x0
    c = sample_sde(net, (2, 1, 28, 28), sched, steps=6, kind="v",
                   generator=torch.Generator().manual_seed(4)).x0
    return torch.stack([a, b, c])

if __name__ == "__main__":
    torch.save(run(), sys.argv[1])
"""


def test_fresh_process_and_warm_process_give_identical_samples(tmp_path):
    """Same seed, same code: a new Python process and this (already busy) one agree bit for bit."""
    script = tmp_path / "snippet.py"
    script.write_text(textwrap.dedent(_SNIPPET))
    out = tmp_path / "fresh.pt"
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=120)
    fresh = torch.load(out, weights_only=True)
    namespace = {}
    exec(compile(textwrap.dedent(_SNIPPET), str(script), "exec"), namespace)
    torch.randn(1000)                      # this process has done other work before
    warm = [namespace["run"]() for _ in range(2)]
    assert torch.equal(fresh, warm[0]) and torch.equal(warm[0], warm[1])


# ---------------------------------------------------------------------------------------
# Starting part-way down the chain: sample(start_t=...) and SDEdit
# ---------------------------------------------------------------------------------------
def test_start_t_at_T_is_ordinary_sampling():
    sched, model = NoiseSchedule.make("linear", 100), Linear()
    x_T = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    for eta in (0.0, 1.0):
        plain = sample(model, (5, 4), sched, steps=20, eta=eta, x_T=x_T, generator=torch.Generator().manual_seed(1))
        started = sample(model, (5, 4), sched, steps=20, eta=eta, x_T=x_T, start_t=100,
                         generator=torch.Generator().manual_seed(1))
        assert torch.equal(plain.x0, started.x0) and plain.steps == started.steps
    part = sample(model, (5, 4), sched, steps=10, eta=0.0, x_T=x_T, start_t=30)
    assert part.steps == timesteps(30, 10) and part.steps[0] == 30 and part.steps[-1] == 1
    assert sample(model, (5, 4), sched, steps=50, x_T=x_T, start_t=7).steps == list(range(7, 0, -1))
    with pytest.raises(ValueError, match="start_t must be an int in 1..100"):
        sample(model, (5, 4), sched, x_T=x_T, start_t=0)
    with pytest.raises(ValueError, match="start_t needs x_T"):
        sample(model, (5, 4), sched, start_t=50)


def test_sdedit_noises_with_q_then_runs_the_sampler_from_t0():
    sched, model = NoiseSchedule.make("linear", 100), Linear()
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(6, 4, generator=g) * 0.5, torch.randn(6, 4, generator=g)
    ab = sched.alpha_bars[40]
    x_t0 = ab.sqrt().float() * x0 + (1 - ab).sqrt().float() * eps          # q(x_t0 | x0) with this eps
    for eta in (0.0, 1.0):
        edit = sdedit(model, x0, 40, sched, steps=10, eta=eta, noise=eps, generator=torch.Generator().manual_seed(2))
        ref = sample(model, x0.shape, sched, steps=10, eta=eta, x_T=x_t0, start_t=40,
                     generator=torch.Generator().manual_seed(2))
        assert torch.equal(edit.x0, ref.x0) and torch.equal(edit.snapshots[40], x_t0)
    # the noise may come from the generator instead: the same draws, in the same order
    from_gen = sdedit(model, x0, 40, sched, steps=10, eta=1.0, generator=torch.Generator().manual_seed(9))
    again = sdedit(model, x0, 40, sched, steps=10, eta=1.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(from_gen.x0, again.x0)
    assert torch.equal(sdedit(model, x0, 0, sched).x0, x0)                 # t0 = 0: nothing to undo
    with pytest.raises(ValueError, match="t0 must be an int in 0..100"):
        sdedit(model, x0, 101, sched)


def test_sdedit_keeps_small_edits_close_and_preserves_the_data_distribution():
    """Exact denoiser of N(c, 0.5^2 I): SDEdit from t0 = 1 returns the input up to the noise
    level of step 1 (sqrt(beta_1) = 0.01); from
    t0 = 300 with the ancestral sampler it maps data to data, so the edited points still
    have mean c and std 0.5 per coordinate (Monte Carlo, 4,000 points), while moving each
    point by about as much as a fresh draw would."""
    sched = NoiseSchedule.make("linear", 1000)
    c = torch.tensor([[0.7, -0.4]])
    den = MixtureDenoiser(c, 0.5, sched)
    g = torch.Generator().manual_seed(6)
    x0 = c + 0.5 * torch.randn(4000, 2, generator=g)
    tiny = sdedit(den, x0, 1, sched, eta=0.0, clip_x0=False, generator=g).x0
    assert (tiny - x0).abs().max() < 5 * (1 - sched.alpha_bars[1]).sqrt()     # 5 std of the t0 = 1 noise
    out = sdedit(den, x0, 300, sched, eta=1.0, clip_x0=False, generator=g).x0
    assert (out.mean(0) - c[0]).abs().max() < 0.03, out.mean(0)                  # 3 sigma = 0.024
    assert ((out.std(0) - 0.5).abs() < 0.025).all(), out.std(0)
    moved = (out - x0).norm(dim=1).mean()
    assert 0.3 < moved < 1.0, moved
