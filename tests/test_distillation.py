"""Progressive and consistency distillation (``diffusion.distillation``) on Gaussian data, where
the teacher's exact denoiser and the probability-flow ODE's exact flow map are known."""
import pytest
import torch

from diffusion_course.diffusion.distillation import (consistency_function, consistency_loss, consistency_sample,
                                                     ddim_step, denoise, halving_grid, progressive_loss,
                                                     progressive_target, sampling_times)
from diffusion_course.diffusion.sampling import logsnr_timesteps, sample
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.training.cache import load_or_train
from diffusion_course.training.loop import TrainConfig

MEAN, STD = 0.1, 0.25          # data N(MEAN, STD^2): inside [-1, 1], so clipping x0_hat changes nothing
SCHEDULE = NoiseSchedule.make("linear", 1000)


def scales(t, x):
    ab = SCHEDULE.alpha_bars[t].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
    return ab.sqrt(), (1 - ab).sqrt()


class VNet(torch.nn.Module):
    """A v-network whose x0_hat = a x - s v is ``x0_of(x, a, s)``."""

    def __init__(self, x0_of):
        super().__init__()
        self.x0_of, self.weight = x0_of, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        a, s = scales(t, x)
        return (a * x - self.x0_of(x, a, s)) / s + self.weight


def posterior_mean(x, a, s):          # E[x0 | x_t]: the best denoiser, the teacher
    return MEAN + a * STD**2 / (a**2 * STD**2 + s**2) * (x - a * MEAN)


def flow_map(x, a, s):                # the ODE's end point from x_t: the exact consistency function
    return MEAN + STD * (x - a * MEAN) / (a**2 * STD**2 + s**2).sqrt()


def test_grids_nest_and_sample_in_order():
    for n in (1, 2, 4, 64, 1000):
        grid = halving_grid(1000, n)
        assert grid[0] == 0 and grid[-1] == 1000 and len(set(grid)) == n + 1
        if 2 * n <= 1000:
            assert halving_grid(1000, 2 * n)[::2] == grid          # the teacher's grid holds the student's
        assert sampling_times(1000, n) == grid[:0:-1]
    with pytest.raises(ValueError, match="steps must be an int"):
        halving_grid(1000, 0)


def test_progressive_target_makes_one_step_land_where_two_teacher_steps_land():
    teacher = VNet(lambda x, a, s: torch.tanh(3 * x) * a + MEAN)   # any teacher, far from exact
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64)
    t, mid, nxt = torch.full((64,), 700), torch.full((64,), 450), torch.full((64,), 200)
    x_tilde = progressive_target(teacher.double(), x, t, mid, nxt, "v", SCHEDULE)
    two = ddim_step(ddim_step(x, denoise(teacher, x, t, "v", SCHEDULE), t, mid, SCHEDULE),
                    denoise(teacher, ddim_step(x, denoise(teacher, x, t, "v", SCHEDULE), t, mid, SCHEDULE), mid, "v", SCHEDULE),
                    mid, nxt, SCHEDULE)
    one = ddim_step(x, x_tilde, t, nxt, SCHEDULE)
    assert (one - two).abs().max() < 1e-6            # float32 schedule coefficients
    # a teacher whose x0_hat does not depend on x_t: DDIM is then exact, and x~ is that x0_hat
    constant = VNet(lambda x, a, s: torch.full_like(x, 0.3)).double()
    assert torch.allclose(progressive_target(constant, x, t, mid, nxt, "v", SCHEDULE), torch.full_like(x, 0.3), atol=1e-6)


def test_progressive_loss_vanishes_for_the_teachers_two_step_map_and_not_for_the_teacher():
    teacher = VNet(posterior_mean).double()               # the exact denoiser
    fine = halving_grid(1000, 8)                          # a 4-step student's teacher takes 8 steps

    class TwoStepStudent(torch.nn.Module):                # outputs the v that gives x~ on the student's grid
        def forward(self, x, t):
            i = fine.index(int(t[0])) // 2
            tt = lambda k: torch.full_like(t, fine[k])
            x_tilde = progressive_target(teacher, x, t, tt(2 * i - 1), tt(2 * i - 2), "v", SCHEDULE)
            a, s = scales(t, x)
            return (a * x - x_tilde) / s

    g = torch.Generator().manual_seed(1)
    loss = progressive_loss(teacher, 4, SCHEDULE, "v")
    for t_drawn in (1, 250, 251, 600, 1000):              # each draw of t maps to the student's step ceil(4 t / T)
        x0 = MEAN + STD * torch.randn(64, 1, 2, 2, generator=g, dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        t = torch.full((64,), t_drawn)
        assert loss(TwoStepStudent(), x0, None, t, eps) < 1e-10
        assert loss(teacher, x0, None, t, eps) > 1e-7      # the teacher in one step is not its own two steps


def test_consistency_function_has_its_boundary_condition_built_in():
    net = VNet(lambda x, a, s: 5 * x + 2)      # a network whose x0_hat is far from x
    x = torch.randn(6, 1, 3, 3)
    t = torch.tensor([0, 0, 1, 10, 500, 1000])
    f = consistency_function(net, x, t, "v", SCHEDULE)
    assert torch.equal(f[:2], x[:2])            # f(x, 0) = x exactly
    assert not torch.allclose(f[2:], x[2:])
    with pytest.raises(ValueError, match="boundary condition"):
        consistency_function(net, x, t, "x0", SCHEDULE)


def test_consistency_loss_is_minimised_by_the_flow_map_not_by_the_denoiser():
    teacher = VNet(posterior_mean).double()
    grid = [0] + logsnr_timesteps(SCHEDULE, 200)[::-1]
    loss = consistency_loss(teacher, grid, SCHEDULE, "v")
    g = torch.Generator().manual_seed(2)
    x0 = MEAN + STD * torch.randn(512, 1, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (512,), generator=g)
    exact, denoiser = loss(VNet(flow_map).double(), x0, None, t, eps), loss(teacher, x0, None, t, eps)
    assert exact < 0.01 * denoiser, (exact, denoiser)
    with pytest.raises(ValueError, match="rise from 0"):
        consistency_loss(teacher, grid[1:], SCHEDULE, "v")


def test_one_step_consistency_sampler_of_the_flow_map_draws_the_data():
    net = VNet(flow_map).double()
    x_T = torch.randn(20_000, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = consistency_sample(net, tuple(x_T.shape), SCHEDULE, [1000], "v", x_T=x_T)
    assert abs(x.mean() - MEAN) < 0.01 and abs(x.std() - STD) < 0.01
    # one call of the exact flow map = the ODE solved by DDIM with many steps on the exact denoiser
    ddim = sample(VNet(posterior_mean).double(), tuple(x_T[:64].shape), SCHEDULE, steps=1000, eta=0.0, kind="v",
                  x_T=x_T[:64]).x0
    assert (x[:64] - ddim).abs().max() < 5e-3          # DDIM-1000 is first order: its own error is ~3e-3
    # the multistep sampler re-noises and calls the model once per step
    calls = []
    net.register_forward_hook(lambda *args: calls.append(1))
    consistency_sample(net, (8, 1, 1, 1), SCHEDULE, [1000, 400, 100], "v", generator=torch.Generator().manual_seed(4))
    assert len(calls) == 3


def test_the_training_loop_trains_on_a_given_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    data = (torch.zeros(16, 1, 2, 2), None)
    cfg = TrainConfig(steps=30, batch_size=4, lr=0.3, warmup=1, ema_decay=0.0, kind="v")

    def pull_to_three(net, x0, y, t, eps):                  # a loss the diffusion loss is not
        return (net.weight - 3.0) ** 2

    net, info = load_or_train("toy", lambda: VNet(posterior_mean), cfg, lambda: data, {"toy": 1},
                              progress=False, loss_fn=pull_to_three, loss_spec={"pull": 3})
    assert abs(net.weight.item() - 3.0) < 0.3 and info["losses"][-1] < info["losses"][0]
    with pytest.raises(ValueError, match="loss_fn and loss_spec"):
        load_or_train("toy", lambda: VNet(posterior_mean), cfg, lambda: data, {"toy": 1}, loss_fn=pull_to_three)


def test_the_consistency_target_network_trails_the_student():
    net = VNet(posterior_mean)
    loss = consistency_loss(net, halving_grid(1000, 4), SCHEDULE, "v", target_decay=0.5)
    x0, eps, t = torch.zeros(4, 1, 2, 2), torch.randn(4, 1, 2, 2), torch.full((4,), 600)
    loss(net, x0, None, t, eps)                          # the target starts as a copy of the student
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert loss(net, x0, None, t, eps) > 0               # then follows it halfway per call: weight 0.5, not 1
    with pytest.raises(ValueError, match="target_decay"):
        consistency_loss(net, halving_grid(1000, 4), SCHEDULE, "v", target_decay=1.0)
