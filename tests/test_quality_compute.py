"""Chapter 13's training-time-T study: the variants differ only in schedule and T, the
rescaled ones end equally noisy, and the trap does not."""
import math
from dataclasses import asdict

from diffusion_course import quality_compute as qc
from diffusion_course.mnist_ddpm import train_config


def test_rescaled_variants_end_equally_noisy_and_the_trap_does_not():
    cfg = qc.study_settings("ci")
    ends = {name: qc.variant_config(cfg, s, T).noise_schedule().alpha_bars[-1].item()
            for name, (s, T) in qc.T_VARIANTS.items()}
    rescaled = [v for k, v in ends.items() if "linear not rescaled" not in k]
    assert all(1e-5 < v < 1e-4 for v in rescaled) and max(rescaled) / min(rescaled) < 2.5
    linear_100 = ends["T=100, linear not rescaled"]
    betas = [1e-4 + i * (0.02 - 1e-4) / 99 for i in range(100)]
    assert math.isclose(linear_100, math.prod(1 - b for b in betas), rel_tol=1e-9)
    assert 0.3 < linear_100 < 0.4          # a third of the signal's variance is still there at t = T


def test_variants_are_chapter_05s_recipe_but_for_schedule_and_T():
    cfg = qc.study_settings("cpu", train_steps=qc.BUDGET["cpu"]["train_steps"])
    base = asdict(train_config(cfg))
    for schedule, T in qc.T_VARIANTS.values():
        variant = asdict(qc.variant_config(cfg, schedule, T))
        assert {k for k in base if base[k] != variant[k]} <= {"schedule", "T"}
        assert (variant["schedule"], variant["T"]) == (schedule, T)
    assert base["steps"] == qc.BUDGET["cpu"]["train_steps"]
    assert train_config(qc.study_settings("cpu")).steps == 4_000, "chapter 05's own settings untouched"
