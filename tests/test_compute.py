"""Cost measurement: FLOPs counted by torch agree with the hand formula; memory peaks are
seen; the Pareto front is non-dominated; a report card refuses a missing field."""
import random
import time

import pytest
import torch

from diffusion_course.evaluation import compute


@pytest.mark.parametrize("c_in,c_out,k,size,stride,groups", [
    (1, 8, 3, 28, 1, 1), (8, 16, 3, 28, 2, 1), (16, 16, 1, 14, 1, 1), (16, 32, 5, 7, 1, 4)])
def test_counted_conv_flops_match_the_hand_formula(c_in, c_out, k, size, stride, groups):
    conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups)
    x = torch.randn(3, c_in, size, size)
    h_out = conv(x).shape[-1]
    counted = compute.count_flops(conv, x)
    by_hand = compute.conv2d_flops(c_in, c_out, k, h_out, h_out, batch=3, groups=groups)
    assert abs(counted - by_hand) <= 0.01 * by_hand


def test_flops_of_a_network_add_up_over_its_layers():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1))
    x = torch.randn(1, 1, 10, 10)
    assert compute.count_flops(net, x) == compute.conv2d_flops(1, 4, 3, 10, 10) + compute.conv2d_flops(4, 4, 3, 10, 10)


def test_peak_memory_is_the_largest_amount_held_at_once_and_repeats():
    def allocate():
        a = torch.ones(16, 2**20)               # 64 MiB
        b = a * 2                               # 64 MiB more: 128 held
        del a
        c = torch.zeros(48, 2**20)              # 192 MiB while b is alive: the peak, 256 MiB
        del c
        return float(b[0, 0])

    first, second = (compute.peak_memory(allocate, "cpu") for _ in range(2))
    assert first["result"] == 2.0
    assert first["peak_mib"] == pytest.approx(256, abs=1), first
    assert second["peak_mib"] == pytest.approx(first["peak_mib"], abs=1), "a repeat reads the same"
    assert "torch.profiler" in first["method"]
    assert compute.resident_peak_mib() > 256


def test_pareto_front_is_non_dominated_and_complete():
    rng = random.Random(0)
    costs = [rng.random() for _ in range(200)]
    quality = [rng.random() for _ in range(200)]
    front = compute.pareto_front(costs, quality)
    for i in front:       # nobody beats a front point on both
        assert not any(costs[j] <= costs[i] and quality[j] <= quality[i] and j != i
                       and (costs[j] < costs[i] or quality[j] < quality[i]) for j in range(200))
    for j in set(range(200)) - set(front):   # every other point is beaten by a front point
        assert any(costs[i] <= costs[j] and quality[i] <= quality[j] for i in front)
    assert [costs[i] for i in front] == sorted(costs[i] for i in front)
    assert compute.pareto_front([1, 2, 3], [3, 2, 1]) == [0, 1, 2]
    assert compute.pareto_front([1, 2, 3], [1, 2, 3]) == [0]


def test_report_card_states_everything_or_refuses():
    args = dict(seed=0, schedule="scaled_linear", T=1000, sampler="ddpm", steps=100, n_samples=1000,
                reference_set="MNIST test", judge={"name": "course judge"}, precision="float32", device="cpu")
    card = compute.report_card(**args)
    assert set(card) == set(compute.REPORT_FIELDS)
    assert card["versions"]["torch"] == torch.__version__ and card["hardware"]["cores"] >= 1
    with pytest.raises(ValueError, match="missing: sampler"):
        compute.report_card(**{**args, "sampler": ""})


def test_median_seconds_times_the_function():
    assert 0.015 <= compute.median_seconds(lambda: time.sleep(0.02), repeats=3) <= 0.2
