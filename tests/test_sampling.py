"""The one sampler: DDPM is eta = 1 over all steps; DDIM eta = 0 is deterministic."""
import pytest
import torch

from diffusion_course.objectives import target, to_x0_eps
from diffusion_course.sampling import ddpm_step, predict, sample, timesteps
from diffusion_course.schedules import NoiseSchedule


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
