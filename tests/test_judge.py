"""The one judge and the one evaluation protocol (judge.py), on the real MNIST splits."""
import pytest
import torch

from diffusion_course.evaluation import judge as judge_module
from diffusion_course.evaluation.judge import JUDGE_RECIPES, load_judge


@pytest.fixture(scope="module")
def ci_judge(ci_judge_cache):
    """The session's `ci` judge (conftest.ci_judge_cache), trained in an empty cache; while
    this module runs, load_judge sees that cache and that judge."""
    cache, judge = ci_judge_cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_CACHE", str(cache))
        mp.setenv("COURSE_DEVICE", "cpu")
        mp.setattr(judge_module, "_JUDGES", {"ci": judge})
        yield judge


def test_one_judge_per_profile_on_the_test_split(ci_judge):
    assert load_judge("ci") is ci_judge                       # one judge, trained once
    assert ci_judge.test_x.shape == (10_000, 1, 28, 28) and len(ci_judge.pool) == 60_000
    real = ci_judge.on_real_digits()
    assert real["held_out_accuracy"] > 0.9, real            # a one-epoch judge on 10,000 digits
    d = ci_judge.describe()
    assert d["reference"] == "test[0:10000]" and d["epochs"] == JUDGE_RECIPES["ci"]["epochs"]
    # cpu and gpu share the full recipe: one yardstick for every chapter and benchmark
    assert JUDGE_RECIPES["cpu"] == JUDGE_RECIPES["gpu"] == {"n_train": 60_000, "epochs": 3}


def test_real_digits_score_at_the_floor_and_noise_far_above(ci_judge):
    n = 200
    g = torch.Generator().manual_seed(5)
    real = ci_judge.pool[torch.randperm(60_000, generator=g)[:n]]    # a perfect generator's draw
    r = ci_judge.evaluate(real)
    assert r["n_samples"] == n and r["floor_n"] == n and r["floor_draws"] == 10
    assert 0.4 < r["frechet_ratio"] < 2.5, r                       # within the floor's spread
    noise = ci_judge.evaluate(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1)
    assert noise["frechet_ratio"] > 20 * r["frechet_ratio"]
    # the floor is computed once per N and reused
    assert ci_judge.floor(n) is ci_judge.floor(n)
    assert r["frechet_floor"] == ci_judge.floor(n)["frechet_floor"]
    # labels: the judge reads real digits right
    y = ci_judge.test_y[:300]
    assert (ci_judge.labels(ci_judge.test_x[:300]) == y).double().mean() > 0.9
