"""DPM-Solver++(2M) as a setting of the one sampler (``sample(..., order=2)``), against its
written-out form in log-SNR, and its order of convergence on Gaussian data, where the
probability-flow ODE's solution is known exactly."""
import math

import pytest
import torch

from diffusion_course.diffusion.sampling import log_snr, logsnr_timesteps, sample, sample_adaptive
from diffusion_course.diffusion.schedules import NoiseSchedule

DATA_MEAN, DATA_STD = 0.3, 0.5


class GaussianDenoiser(torch.nn.Module):
    """eps_hat(x_t) = E[eps | x_t] for data N(DATA_MEAN, DATA_STD^2): the exact network."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x, t):
        ab = self.schedule.alpha_bars[t].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = DATA_MEAN + a * DATA_STD**2 / (a**2 * DATA_STD**2 + s**2) * (x - a * DATA_MEAN)
        return (x - a * x0) / s


def exact_ode(schedule, x_T, t):
    """The probability-flow ODE from x_T to step t for Gaussian data: each path keeps its
    standardised value z = (x - a m) / sqrt(a^2 v^2 + s^2)."""
    ab = schedule.alpha_bars.double()
    a_T, a = ab[-1].sqrt(), ab[t].sqrt()
    z = (x_T.double() - a_T * DATA_MEAN) / (a_T**2 * DATA_STD**2 + 1 - ab[-1]).sqrt()
    return a * DATA_MEAN + (a**2 * DATA_STD**2 + 1 - ab[t]).sqrt() * z


def written_out(model, schedule, x_T, steps, order, eta, noises=None):
    """DPM-Solver++ (Lu et al. 2022) in its own form, with alpha = a_t, sigma = s_t, h = lambda_s - lambda_t:
        ODE: x_s = (s_s / s_t) x_t - a_s (e^-h - 1) D
        SDE: x_s = (s_s / s_t) e^-h x_t - a_s (e^-2h - 1) D + s_s sqrt(1 - e^-2h) z
    D = x0_hat (first order), or (1 + 1/(2r)) x0_hat_t - 1/(2r) x0_hat_prev with r = h_prev / h."""
    ab = schedule.alpha_bars.double()
    ts = logsnr_timesteps(schedule, steps) + [0]
    x, prev, h_prev = x_T.double(), None, None
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        a_t, s_t, a_s, s_s = ab[t].sqrt(), (1 - ab[t]).sqrt(), ab[s].sqrt(), (1 - ab[s]).sqrt()
        x0 = (x - s_t * model(x, torch.full((x.shape[0],), t))) / a_t
        if s == 0:                                # lambda_0 = inf: the step lands on x0_hat
            x = x0
            break
        h = (log_snr(ab[s]) - log_snr(ab[t])).item()
        D = x0 if (order == 1 or prev is None) else (1 + h / (2 * h_prev)) * x0 - h / (2 * h_prev) * prev
        if eta == 0:
            x = s_s / s_t * x - a_s * math.expm1(-h) * D
        else:
            x = (s_s / s_t * math.exp(-h) * x - a_s * math.expm1(-2 * h) * D
                 + s_s * math.sqrt(-math.expm1(-2 * h)) * noises[i])
        prev, h_prev = x0, h
    return x


SCHEDULE = NoiseSchedule.make("linear", 1000)


@pytest.mark.parametrize("order,eta", [(1, 0.0), (2, 0.0), (2, 1.0)])
def test_sampler_settings_equal_dpm_solver_written_out(order, eta):
    """order 1, eta 0 is DDIM = first-order DPM-Solver++; order 2 is DPM-Solver++(2M), with
    eta = 1 its SDE version (whose first order is the ancestral step)."""
    model, steps = GaussianDenoiser(SCHEDULE), 12
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    noises = torch.randn(steps + 1, 64, 1, generator=torch.Generator().manual_seed(1))
    draws = iter([x_T, *noises])
    ours = sample(model, (64, 1), SCHEDULE, steps=steps, eta=eta, spacing="logsnr", kind="eps",
                  clip_x0=False, order=order, noise=lambda shape, g: next(draws).reshape(shape)).x0
    theirs = written_out(model, SCHEDULE, x_T, steps, order, eta, noises)
    assert torch.allclose(ours.double(), theirs, atol=1e-5), (ours - theirs).abs().max()


def test_dpm_solver_2m_is_second_order_and_ddim_first_order():
    """Error at the last step before t = 0 against the exact ODE solution, halving the step in
    lambda (a finely discretised linear schedule, so that rounding to integer steps does not
    distort the grid): the error falls 4x per halving for 2M, 2x for DDIM."""
    fine = NoiseSchedule.from_betas(torch.linspace(1e-4, 0.02, 20_000, dtype=torch.float64) / 20)
    model = GaussianDenoiser(fine)
    x_T = torch.randn(256, 1, generator=torch.Generator().manual_seed(0))
    orders = {}
    for order in (1, 2):
        errors = []
        for steps in (40, 80, 160):
            last = logsnr_timesteps(fine, steps)[-1]
            run = sample(model, (256, 1), fine, steps=steps, eta=0.0, spacing="logsnr", kind="eps",
                         clip_x0=False, order=order, x_T=x_T, snapshot_at=(last,))
            errors.append((run.snapshots[last].double() - exact_ode(fine, x_T, last)).abs().max().item())
        orders[order] = math.log2(errors[0] / errors[-1]) / 2
    assert abs(orders[1] - 1) < 0.1 and abs(orders[2] - 2) < 0.2, orders


def test_2m_gets_a_gaussian_right_in_ten_steps_where_ddim_does_not():
    model = GaussianDenoiser(SCHEDULE)
    stds = {order: sample(model, (20_000, 1), SCHEDULE, steps=10, eta=0.0, spacing="logsnr", kind="eps",
                          clip_x0=False, order=order, generator=torch.Generator().manual_seed(1)).x0.std().item()
            for order in (1, 2)}
    assert abs(stds[2] / DATA_STD - 1) < 0.06 and abs(stds[1] / DATA_STD - 1) > 0.15, stds


def test_logsnr_timesteps_are_evenly_spaced_in_lambda():
    ts = logsnr_timesteps(SCHEDULE, 20)
    assert ts[0] == 1000 and ts[-1] == 1 and ts == sorted(set(ts), reverse=True)
    lam = log_snr(SCHEDULE.alpha_bars[torch.tensor(ts)])
    gaps = lam.diff()
    assert gaps.min() > 0 and (gaps.max() - gaps.min()) / gaps.mean() < 0.6   # integer steps round
    assert logsnr_timesteps(SCHEDULE, 1) == [1000]
    with pytest.raises(ValueError, match="steps must be an int in 1..1000"):
        logsnr_timesteps(SCHEDULE, 0)
    with pytest.raises(ValueError, match="order must be 1"):
        sample(GaussianDenoiser(SCHEDULE), (2, 1), SCHEDULE, steps=2, order=3)


def test_the_sweep_samplers_are_these_settings():
    """``recipes.sampler_sweep``'s dpm2m and dpm2m-sde (the benchmark's names) are order 2 on the
    log-SNR grid, deterministic and stochastic."""
    from diffusion_course.recipes.sampler_sweep import generate
    from diffusion_course.training.loop import TrainConfig

    tcfg, model = TrainConfig(), GaussianDenoiser(SCHEDULE)
    x_T = torch.randn(8, 1, generator=torch.Generator().manual_seed(0))
    for name, eta in (("dpm2m", 0.0), ("dpm2m-sde", 1.0)):
        ours = generate(model, tcfg, x_T, 6, name, generator=torch.Generator().manual_seed(3))
        direct = sample(model, x_T.shape, SCHEDULE, steps=6, eta=eta, spacing="logsnr", order=2, x_T=x_T,
                        generator=torch.Generator().manual_seed(3)).x0
        assert torch.equal(ours, direct), name


def test_adaptive_solver_spends_more_calls_for_a_smaller_tolerance_and_gets_closer():
    model = GaussianDenoiser(SCHEDULE)
    x_T = torch.randn(4096, 1, generator=torch.Generator().manual_seed(5))
    exact = exact_ode(SCHEDULE, x_T, 0)
    calls, errors = [], []
    for tol in (0.05, 0.01, 0.002):
        run = sample_adaptive(model, (4096, 1), SCHEDULE, tol, kind="eps", clip_x0=False, x_T=x_T)
        assert run.steps == sorted(set(run.steps), reverse=True) and run.steps[0] == 1000
        calls.append(len(run.steps))
        errors.append((run.x0.double() - exact).pow(2).mean().sqrt().item())
    assert calls[0] < calls[1] < calls[2] and errors[0] > errors[1] > errors[2], (calls, errors)
    with pytest.raises(ValueError, match="tol must be > 0"):
        sample_adaptive(model, (2, 1), SCHEDULE, 0.0)
