import math

import pytest
import torch

from diffusion_course.diffusion.schedules import (cosine_betas, linear_betas, make_betas,
                                                  NoiseSchedule)


def test_linear_T1000_known_values():
    s = NoiseSchedule.make("linear", 1000)
    assert s.T == 1000 and s.betas[0] == 0 and s.alpha_bars[0] == 1
    assert s.betas[1].item() == pytest.approx(1e-4) and s.betas[1000].item() == pytest.approx(0.02)
    # Widely quoted: abar_T of about 4.04e-5 for Ho et al.'s schedule.
    assert s.alpha_bars[-1].item() == pytest.approx(4.036e-5, rel=2e-3)


def test_linear_T100_trap_and_fixes():
    assert NoiseSchedule.make("linear", 100).alpha_bars[-1].item() == pytest.approx(0.3642, abs=2e-3)
    # Rescaling by 1000/T ends about as noisy as T=1000 does; cosine ends essentially at 0.
    assert NoiseSchedule.make("scaled_linear", 100).alpha_bars[-1].item() < 1e-4
    assert NoiseSchedule.make("cosine", 100).alpha_bars[-1].item() < 1e-6


def test_cosine_endpoints_and_formula():
    T, s = 1000, 0.008
    sched = NoiseSchedule.make("cosine", T)
    ab = sched.alpha_bars
    f = lambda t: math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2
    assert ab[0].item() == 1.0
    for t in (1, 250, 500, 750, 999):
        assert ab[t].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert ab[T].item() < 1e-8  # f(T) = cos^2(pi/2) = 0 up to the 0.999 clip
    assert cosine_betas(T).max().item() == pytest.approx(0.999)
    assert (torch.diff(ab) < 0).all()


def test_q_sample_matches_iterated_chain_in_distribution():
    g = torch.Generator().manual_seed(0)
    sched = NoiseSchedule.make("linear", 200)
    x0 = torch.tensor([-1.0, 0.3, 1.0], dtype=torch.float64).repeat(40_000, 1)
    x = x0.clone()
    for t in range(1, 121):
        x = sched.step_forward(x, t, torch.randn(x.shape, generator=g, dtype=torch.float64))
    ab = sched.alpha_bars[120]
    mean_err = (x.mean(0) - ab.sqrt() * x0[0]).abs().max().item()
    var_err = (x.var(0) - (1 - ab)).abs().max().item()
    n = x.shape[0]
    assert mean_err < 5 * math.sqrt((1 - ab) / n)
    assert var_err < 5 * (1 - ab) * math.sqrt(2 / n)


def test_posterior_against_bayes_rule_numerically():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): check mean/var by quadrature."""
    sched = NoiseSchedule.make("cosine", 50)
    x0, xt, t = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.2], dtype=torch.float64), 17
    mean, var = sched.posterior(x0, xt, t)
    grid = torch.linspace(-6, 6, 200_001, dtype=torch.float64)
    a, ab_prev, beta = sched.alphas[t], sched.alpha_bars[t - 1], sched.betas[t]
    log_w = -(xt - a.sqrt() * grid) ** 2 / (2 * beta) - (grid - ab_prev.sqrt() * x0) ** 2 / (2 * (1 - ab_prev))
    w = torch.softmax(log_w, 0)
    m = (w * grid).sum()
    assert mean.item() == pytest.approx(m.item(), abs=1e-6)
    assert var.item() == pytest.approx((w * (grid - m) ** 2).sum().item(), rel=1e-5)


def test_posterior_variance_zero_at_t1_and_needs_t_ge_1():
    sched = NoiseSchedule.make("linear", 10)
    _, var = sched.posterior(torch.zeros(2), torch.zeros(2), 1)
    assert torch.all(var == 0)
    with pytest.raises(ValueError, match="t >= 1"):
        sched.posterior(torch.zeros(2), torch.zeros(2), 0)


def test_q_sample_broadcasts_per_example_t():
    sched = NoiseSchedule.make("linear", 1000)
    x0 = torch.ones(3, 1, 4, 4)
    xt = sched.q_sample(x0, torch.tensor([0, 500, 1000]), torch.zeros_like(x0))
    expected = sched.alpha_bars[[0, 500, 1000]].sqrt().float()
    assert torch.allclose(xt[:, 0, 0, 0], expected)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_T_rejected(bad):
    with pytest.raises(ValueError, match="positive int"):
        linear_betas(bad)


def test_unknown_schedule_lists_allowed():
    with pytest.raises(ValueError, match="linear, scaled_linear, cosine"):
        make_betas("sigmoid", 10)
    with pytest.raises(ValueError, match="t must lie"):
        NoiseSchedule.make("linear", 10).q_sample(torch.zeros(1), 11)


def test_angle_schedule_is_cos_sin_of_the_angle():
    """alpha = cos(pi t / 2T), sigma = sin(pi t / 2T) at every t < T; abar_T clipped, not 0."""
    from diffusion_course.diffusion.schedules import angle_betas

    T = 1000
    sched = NoiseSchedule.make("angle", T)
    ab = sched.alpha_bars
    for t in (0, 1, 250, 500, 750, 999):
        tau = t / T
        assert ab[t].sqrt().item() == pytest.approx(math.cos(math.pi * tau / 2), rel=1e-9, abs=1e-12)
        assert (1 - ab[t]).sqrt().item() == pytest.approx(math.sin(math.pi * tau / 2), rel=1e-9, abs=1e-12)
    assert ab[500].item() == pytest.approx(0.5)  # the half-way point: SNR 1
    # t = T: cos^2(pi / 2) = 0 would need beta_T = 1; clipped at 0.999 it is 1e-3 abar_{T-1}.
    assert angle_betas(T).max().item() == pytest.approx(0.999)
    assert 0 < ab[T].item() == pytest.approx(1e-3 * ab[T - 1].item(), rel=1e-9)
    assert ab[T].item() < 1e-8 and torch.isfinite(sched.snr[1:]).all() and sched.snr[T] > 0
    assert (torch.diff(ab) < 0).all()
    # Small T: still valid and exact before the last step.
    small = NoiseSchedule.make("angle", 4)
    assert small.alpha_bars[2].item() == pytest.approx(0.5)
