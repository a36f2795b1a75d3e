"""Distillation: a student network that samples in a few steps what its teacher samples in many.

Both methods start the student from the teacher's weights and train it on the teacher's own
deterministic sampler (DDIM, the probability-flow ODE's exponential integrator), not on data
alone: the data only supplies the points x_t = a_t x_0 + s_t eps the teacher starts from
(a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t)).

**Progressive distillation** (Salimans and Ho 2022). On the grid 0 = t_0 < ... < t_N = T
(``halving_grid``) the student's one DDIM step t_i -> t_{i-1} should land where the teacher's
two steps t_i -> t_mid -> t_{i-1} land (the teacher's grid has 2N steps and holds the
student's). One DDIM step from x_t with prediction x~ lands at

    x_s = a_s x~ + s_s (x_t - a_t x~) / s_t,

so the x~ that makes it land at the teacher's x'' is

    x~ = (x'' - (s_s / s_t) x_t) / (a_s - (s_s / s_t) a_t),

and the student learns x~ (as the output of its own kind: eps, x0 or v, ``objectives.target``).
Each round halves the steps; the student of one round is the teacher of the next.

**Consistency distillation** (Song et al. 2023). A consistency function f(x_t, t) maps every
point of an ODE trajectory to the trajectory's end x_0, so f(x_t, t) = f(x_s, s) for any two
points of one trajectory, and f(x, 0) = x. The boundary condition is built into the
parameterisation f = c_skip(t) x + c_out(t) F(x, t): for a v-network, x0_hat = a_t x - s_t v
already has c_skip = a_t, c_out = -s_t, and a_0 = 1, s_0 = 0 give f(x, 0) = x whatever F
outputs (``consistency_function``). Training pulls f(x_{t_{n+1}}, t_{n+1}) towards
f^-(x^_{t_n}, t_n), where x^_{t_n} is one teacher DDIM step from x_{t_{n+1}} and f^- a slowly
moving average of the student (the target network, no gradient); at n = 0 the target is the teacher's x0_hat itself, which anchors the
chain. A trained f samples in one call, or in a few: denoise, re-noise to a smaller t, denoise
again (``consistency_sample``, the multistep consistency sampler).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from .objectives import target, to_x0_eps
from .schedules import NoiseSchedule


def halving_grid(T: int, steps: int) -> list[int]:
    """The steps 0 = t_0 < t_1 < ... < t_steps = T with t_i = round(i T / steps): the grid of
    a ``steps``-step student. The grid of 2N steps holds the grid of N steps (every second
    point), so a teacher's two steps always end on the student's grid."""
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..{T}, got {steps!r}")
    return [round(i * T / steps) for i in range(steps + 1)]


def sampling_times(T: int, steps: int) -> list[int]:
    """The descending steps ``sampling.sample(times=...)`` visits with a ``steps``-step student."""
    return halving_grid(T, steps)[:0:-1]


def _scales(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor):
    """(a_t, s_t) per example, shaped to broadcast against ``like``."""
    ab = schedule.alpha_bars.to(like.device)[t].float().view(-1, *([1] * (like.dim() - 1)))
    return ab.sqrt(), (1 - ab).sqrt()


def denoise(model, x: torch.Tensor, t: torch.Tensor, kind: str, schedule: NoiseSchedule,
            clip_x0: bool = True) -> torch.Tensor:
    """x0_hat of ``model`` at per-example steps t >= 1, clipped to [-1, 1] as the sampler does."""
    a, s = _scales(schedule, t, x)
    x0 = to_x0_eps(kind, model(x, t), x, a, s)[0]
    return x0.clamp(-1, 1) if clip_x0 else x0


def ddim_step(x: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
              schedule: NoiseSchedule) -> torch.Tensor:
    """The deterministic DDIM step from x at step t to step s (per example; s = 0 gives x0):
    x_s = a_s x0 + s_s (x - a_t x0) / s_t."""
    a_t, s_t = _scales(schedule, t, x)
    a_s, s_s = _scales(schedule, s, x)
    return a_s * x0 + s_s * (x - a_t * x0) / s_t


def progressive_target(teacher, x_t: torch.Tensor, t: torch.Tensor, t_mid: torch.Tensor,
                       t_next: torch.Tensor, kind: str, schedule: NoiseSchedule) -> torch.Tensor:
    """x~: the prediction whose single DDIM step t -> t_next lands where the teacher's two
    steps t -> t_mid -> t_next land (see the module's docstring)."""
    with torch.no_grad():
        x_mid = ddim_step(x_t, denoise(teacher, x_t, t, kind, schedule), t, t_mid, schedule)
        x_next = ddim_step(x_mid, denoise(teacher, x_mid, t_mid, kind, schedule), t_mid, t_next, schedule)
    a_t, s_t = _scales(schedule, t, x_t)
    a_n, s_n = _scales(schedule, t_next, x_t)
    ratio = s_n / s_t
    return (x_next - ratio * x_t) / (a_n - ratio * a_t)


def progressive_loss(teacher, steps: int, schedule: NoiseSchedule, kind: str) -> Callable:
    """The loss of one round of progressive distillation to a ``steps``-step student, as
    ``loop.train``'s ``loss_fn(net, x0, y, t, eps)``: the drawn t ~ U{1..T} picks the student's
    step i = ceil(t steps / T), then x_{t_i} = a x0 + s eps and the mean squared error between the
    student's output and the output of its kind that gives x~."""
    fine = torch.tensor(halving_grid(schedule.T, 2 * steps))

    def loss(net, x0, y, t, eps):
        i = torch.div(t * steps + schedule.T - 1, schedule.T, rounding_mode="floor").clamp(1, steps)
        grid = fine.to(t.device)
        t_i, t_mid, t_next = grid[2 * i], grid[2 * i - 1], grid[2 * i - 2]
        a, s = _scales(schedule, t_i, x0)
        x_t = a * x0 + s * eps
        x_tilde = progressive_target(teacher, x_t, t_i, t_mid, t_next, kind, schedule)
        want = target(kind, x_tilde, (x_t - a * x_tilde) / s, a, s)
        return (net(x_t, t_i).float() - want).pow(2).mean()

    return loss


def consistency_function(model, x: torch.Tensor, t: torch.Tensor, kind: str,
                         schedule: NoiseSchedule) -> torch.Tensor:
    """f(x, t) = c_skip(t) x + c_out(t) F(x, t): the model's x0_hat, unclipped. For v- and
    eps-networks f(x, 0) = x exactly (a_0 = 1, s_0 = 0): the boundary condition."""
    if kind == "x0":
        raise ValueError("an x0-network has no boundary condition f(x, 0) = x built in (c_skip = 0); "
                         "use an eps- or v-network")
    a, s = _scales(schedule, t, x)
    out = model(x, t)
    x0 = to_x0_eps(kind, out, x, a, s)[0]
    return torch.where(t.view(-1, *([1] * (x.dim() - 1))) == 0, x, x0)   # exact at t = 0, even in bf16


def consistency_loss(teacher, grid: list[int], schedule: NoiseSchedule, kind: str,
                     target_decay: float = 0.95) -> Callable:
    """The consistency-distillation loss on the ascending ``grid`` t_0 = 0 < ... < t_N = T, as
    ``loop.train``'s ``loss_fn``: the drawn t picks n + 1 = ceil(t N / T), x_{t_{n+1}} = a x0 + s eps,
    one teacher DDIM step gives x^_{t_n}, and the loss is || f(x_{t_{n+1}}) - f^-(x^_{t_n}) ||^2,
    where f^- is the target network: an exponential moving average of the student's weights,
    theta^- <- d theta^- + (1 - d) theta with d = ``target_decay``, without gradient (Song et al.
    2023). d = 0 makes the target the student itself under stop-gradient; with the student as
    its own target, a map that ignores its input satisfies every pair but the anchored first one,
    and training can drift towards it. The target starts as a copy of the student at the first
    call (and again when a run resumes)."""
    ts = torch.tensor(grid)
    if ts[0] != 0 or ts[-1] != schedule.T or not (ts[1:] > ts[:-1]).all():
        raise ValueError(f"the grid must rise from 0 to T = {schedule.T}, got {grid!r}")
    if not 0 <= target_decay < 1:
        raise ValueError(f"target_decay must lie in [0, 1), got {target_decay!r}")
    n_steps, target = len(grid) - 1, {}

    def loss(net, x0, y, t, eps):
        student = getattr(net, "module", net)                    # the model itself, under DDP too
        with torch.no_grad():
            if "net" not in target:
                target["net"] = copy.deepcopy(student).requires_grad_(False)
            for p_minus, p in zip(target["net"].parameters(), student.parameters()):
                p_minus.lerp_(p, 1 - target_decay)               # theta^- <- d theta^- + (1 - d) theta
        n1 = torch.div(t * n_steps + schedule.T - 1, schedule.T, rounding_mode="floor").clamp(1, n_steps)
        t_hi, t_lo = ts.to(t.device)[n1], ts.to(t.device)[n1 - 1]
        a, s = _scales(schedule, t_hi, x0)
        x_hi = a * x0 + s * eps
        with torch.no_grad():
            x_lo = ddim_step(x_hi, denoise(teacher, x_hi, t_hi, kind, schedule), t_hi, t_lo, schedule)
            want = consistency_function(target["net"], x_lo, t_lo, kind, schedule).float()
        return (consistency_function(net, x_hi, t_hi, kind, schedule).float() - want).pow(2).mean()

    return loss


@torch.no_grad()
def consistency_sample(model, shape: tuple[int, ...], schedule: NoiseSchedule, times: list[int],
                       kind: str, generator: torch.Generator | None = None,
                       x_T: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """The multistep consistency sampler: x0 = f(x_T, times[0]); then for each later step t,
    re-noise x_t = a_t x0 + s_t z and denoise again, x0 = f(x_t, t). One network call per entry
    of the descending ``times`` (the first is usually T); x0 clipped to [-1, 1] after each."""
    if not times or any(not 1 <= t <= schedule.T for t in times) or any(a <= b for a, b in zip(times, times[1:])):
        raise ValueError(f"times must be strictly decreasing steps in 1..{schedule.T}, got {times!r}")
    x = (torch.randn(shape, generator=generator) if x_T is None else x_T.cpu()).to(device)
    x0 = None
    for k, t in enumerate(times):
        tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
        if k > 0:
            a, s = _scales(schedule, tt, x0)
            x = a * x0 + s * torch.randn(shape, generator=generator).to(device)
        x0 = consistency_function(model, x, tt, kind, schedule).float().clamp(-1, 1)
    return x0.cpu()
