"""Cost measurement: FLOPs counted by torch agree with the hand formula; memory peaks are
seen; the Pareto front is non-dominated; a report card refuses a missing field."""
import random
import time

import pytest
import torch

from diffusion_course import compute


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


def test_peak_memory_sees_a_large_temporary_allocation():
    def allocate():
        x = torch.ones(64, 2**20)       # 64 Mi float32 values, 256 MiB, written so resident
        time.sleep(0.05)
        return float(x[0, 0])

    measured = compute.peak_memory(allocate, "cpu")
    assert measured["result"] == 1.0
    assert 200 <= measured["peak_mib"] <= 400, measured
    assert "resident" in measured["method"]


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
