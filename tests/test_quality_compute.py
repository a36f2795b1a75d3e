"""Chapter 13's study: the T variants differ only in schedule and T (the rescaled ones end
equally noisy, the trap does not), the width study counts and measures what it says, the
equal-time budget is equal, the Pareto front is non-dominated and the claims read their
differences against the seed noise."""
import math
from dataclasses import asdict

import pytest
import torch

from diffusion_course.recipes import quality_compute as qc
from diffusion_course.recipes.mnist_ddpm import train_config
from diffusion_course.models.unet import count_parameters


def test_rescaled_variants_end_equally_noisy_and_the_trap_does_not():
    cfg05 = qc.study_settings(qc.settings("ci"))
    ends = {name: qc.variant_config(cfg05, s, T).noise_schedule().alpha_bars[-1].item()
            for name, (s, T) in qc.t_variants("gpu").items()}
    rescaled = [v for k, v in ends.items() if "linear not rescaled" not in k]
    assert all(1e-5 < v < 1e-4 for v in rescaled) and max(rescaled) / min(rescaled) < 2.5
    linear_100 = ends["T=100, linear not rescaled"]
    betas = [1e-4 + i * (0.02 - 1e-4) / 99 for i in range(100)]
    assert math.isclose(linear_100, math.prod(1 - b for b in betas), rel_tol=1e-9)
    assert 0.3 < linear_100 < 0.4          # a third of the signal's variance is still there at t = T
    base = qc.variant_config(cfg05, *qc.BASELINE_VARIANT).noise_schedule().betas
    assert torch.allclose(base, qc.variant_config(cfg05, "linear", 1000).noise_schedule().betas), \
        "the baseline variant has chapter 05's betas"


def test_variants_are_chapter_05s_recipe_but_for_schedule_and_T():
    cfg = qc.settings("cpu")
    cfg05 = qc.study_settings(cfg)
    base = asdict(train_config(cfg05))
    for schedule, T in qc.T_VARIANTS.values():
        variant = asdict(qc.variant_config(cfg05, schedule, T))
        assert {k for k in base if base[k] != variant[k]} <= {"schedule", "T"}
        assert (variant["schedule"], variant["T"]) == (schedule, T)
    assert base["steps"] == cfg.train_steps == 1_200
    from diffusion_course.course.settings import chapter_settings
    assert chapter_settings("05", "cpu").train_steps == 4_000, "chapter 05's own settings untouched"
    for profile in ("ci", "cpu", "gpu"):
        assert chapter_settings("05", profile).base_width in qc.WIDTHS[profile]


def test_equal_time_steps_spend_the_baseline_widths_time():
    seconds = {8: 0.01, 16: 0.02, 32: 0.05, 64: 0.2}
    steps = qc.equal_time_steps(1200, seconds, baseline_width=32)
    assert steps[32] == 1200 and steps[8] == 6000 and steps[16] == 3000 and steps[64] == 300
    for w, s in steps.items():
        assert s * seconds[w] == pytest.approx(1200 * 0.05, rel=0.05)
    assert qc.equal_time_steps(10, {8: 1.0, 64: 100.0}, 8)[64] == 10, "at least 10 steps"


def _study():
    """A study's numbers, made up: three T rows, two widths, two step counts, a GAN."""
    t = [{"variant": v, "at_common_steps": {"steps": 10, "seconds_per_image": c, "frechet_ratio": q},
          "at_T_steps": {"steps": T, "seconds_per_image": c * T / 10, "frechet_ratio": q * 0.9}}
         for v, T, c, q in (("T=100", 100, 0.02, 14.0), ("T=1000", 1000, 0.02, 12.0),
                            ("T=100, linear not rescaled", 100, 0.02, 95.0))]
    w = [{"width": k, "parameters": p, "flops_per_call": 4 * p, "seconds_per_image": c, "sample_peak_mib": m,
          "train_peak_mib": 3 * m, "equal_images": {"seconds_per_image": c, "frechet_ratio": q},
          "equal_time": {"seconds_per_image": c, "frechet_ratio": q + 1}}
         for k, p, c, m, q in ((8, 1e4, 0.005, 10, 30.0), (16, 4e4, 0.01, 20, 20.0))]
    s = [{"sampler": "ddim", "steps": k, "seconds_per_image": 0.001 * k, "frechet_ratio": 40 / k} for k in (10, 20)]
    gan = {"gan": {"seconds_per_image": 1e-4, "frechet_ratio": 25.0},
           "diffusion": {"seconds_per_image": 0.02, "frechet_ratio": 12.0}}
    return {"t_study": t, "width_study": w, "steps_study": s, "gan_study": gan,
            "seed_spread": {"frechet_ratio_sd": 0.5}}


def test_the_pareto_front_is_exactly_the_non_dominated_controlled_points():
    points = qc.pareto_points(_study())
    assert len(points) == 3 * 2 + 2 * 2 + 2 + 1
    controlled = [p for p in points if p["controlled"]]
    assert {p["family"] for p in points if not p["controlled"]} == {"steps"}   # another training budget
    for p in points:
        dominated = any(q["seconds_per_image"] <= p["seconds_per_image"] and q["frechet_ratio"] <= p["frechet_ratio"]
                        and q is not p and (q["seconds_per_image"], q["frechet_ratio"])
                        != (p["seconds_per_image"], p["frechet_ratio"]) for q in controlled)
        assert p["on_front"] == (p["controlled"] and not dominated), p["label"]
    # on the front although the made-up steps point "ddim, 20 steps" (same cost, FD/floor 2) would dominate it
    assert {p["label"] for p in points if p["on_front"]} >= {"DCGAN", "T=1000, 10 steps"}


def test_the_spread_of_a_spread_and_the_verdicts():
    lo, hi = qc.sd_interval(1.0, 3)                             # 2 degrees of freedom: chi^2_2 is exponential
    assert lo == pytest.approx(math.sqrt(2 / (-2 * math.log(0.025))), rel=1e-9)
    assert hi == pytest.approx(math.sqrt(2 / (-2 * math.log(0.975))), rel=1e-9)
    assert 0.5 < lo < 0.53 and 6.2 < hi < 6.3
    sds = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(0)).std(dim=1)   # sample sds of 3 draws
    covered = ((sds * lo <= 1) & (1 <= sds * hi)).float().mean().item()    # the interval scales with s
    assert abs(covered - 0.95) < 0.01                           # it covers sigma = 1 95 % of the time
    assert qc.verdict(0.5, 0.5).startswith("indistinguishable")        # 0.5 < 2 sqrt(2) 0.5
    assert qc.verdict(3.0, 0.5).startswith("holds") and qc.verdict(-3.0, 0.5).startswith("reversed")
    assert qc.verdict(3.0, 0.5, 3.0).startswith("uncertain") and qc.verdict(9.0, 0.5, 3.0).startswith("holds")
    claims = qc.seed_claims(_study())
    t = claims["larger T is better"]
    assert t["verdict_at_common_steps"].startswith("holds") and t["trap_over_rescaled_at_T_100"] == pytest.approx(95 / 14)
    size = claims["larger models cost more"]
    assert size["time_rises"] and size["flops_rise"] and size["sample_memory_rises"]
    assert claims["the GAN beats the diffusion model"]["verdict"].startswith("reversed")


class FakeJudge:
    """Scores every set the same; enough to test the study's bookkeeping without a classifier."""

    def evaluate(self, x):
        return {"frechet": 1.0, "frechet_floor": 0.5, "frechet_floor_sd": 0.1, "frechet_ratio": 2.0,
                "confident_fraction": 0.5, "min_class_fraction": 0.1, "class_histogram": [0.1] * 10}


def test_width_study_counts_measures_and_caches(tmp_path, monkeypatch, real_data_root):
    monkeypatch.setenv("COURSE_DATA_ROOT", str(real_data_root))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    cfg = qc.settings("ci", train_steps=3, n_eval=10, common_steps=2)
    rows = qc.width_study(cfg, FakeJudge(), widths=(8, 16), progress=False)
    small, ref = rows                                          # ci: chapter 05's width is 16
    assert ref["equal_time"] is ref["equal_images"] and ref["equal_images"]["train_steps"] == 3
    assert small["equal_images"]["train_steps"] == 3 and small["equal_time"]["train_steps"] >= 10
    for r in rows:
        assert r["parameters"] == count_parameters(qc.make_unet(qc.study_settings(cfg, base_width=r["width"])))
        assert r["flops_per_image"] == 2 * r["flops_per_call"] > 0
        assert r["seconds_per_step"] > 0 and r["train_peak_mib"] > r["sample_peak_mib"] / 50 > 0
        assert "torch.profiler" in r["memory_method"]
    assert 3.0 < ref["flops_per_call"] / small["flops_per_call"] < 4.0   # ~ width^2 (convs), less (attention, ends)
    assert ref["train_peak_mib"] > small["train_peak_mib"] and ref["sample_peak_mib"] > small["sample_peak_mib"]
    again = qc.width_study(cfg, FakeJudge(), widths=(8, 16), progress=False)
    assert not any(r[b]["trained_now"] for r in again for b in ("equal_images", "equal_time"))
    assert [r["equal_time"]["train_steps"] for r in again] == [r["equal_time"]["train_steps"] for r in rows]
    with pytest.raises(ValueError, match="chapter 05's own"):
        qc.width_study(cfg, FakeJudge(), widths=(8, 12))
