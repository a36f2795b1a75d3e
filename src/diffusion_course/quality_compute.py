"""Chapter 13's controlled study of quality against compute (the chapter is planned; this is
its first part, training-time T, and the benchmark ``benchmarks/quality_vs_compute.py``).

A source document of the course reports FID 28.5 / 24.7 / 22.9 for T = 100 / 500 / 1000
without saying whether the schedule was rescaled, how many sampling steps were used or how
many samples were scored. Here every variant is chapter 05's U-Net and recipe for the
profile, trained from the same seed on the same images for the same number of steps (equal
images seen), and differs only in its schedule:

    scaled_linear, T = 100 / 250 / 500 / 1000   the linear betas rescaled by 1000 / T, so every
                                                T ends equally noisy (abar_T ~ 4e-5)
    linear, T = 100 (the trap)                  Ho et al.'s betas over only 100 steps: abar_T is
                                                0.36, so x_T is far from the N(0, I) a sampler
                                                starts from

Two questions the source conflates are kept apart: the T a model is trained with, and the
number of steps it is sampled with. Each variant is scored at the same number of sampling
steps (respaced, ancestral) and at its own T, by the course's judge against the floor.
"""
from __future__ import annotations

import time

import torch

from .mnist_ddpm import data_spec, make_unet, sample_digits, training_images
from .settings import Settings, chapter_settings
from .training import TrainConfig, load_or_train, train_config_from

# The study's budget per profile: training steps of every variant (chapter 05's batch, so equal
# images seen), digits scored per setting, and the common number of sampling steps.
BUDGET = {"ci": {"train_steps": 30, "n_eval": 100, "common_steps": 10},
          "cpu": {"train_steps": 1_200, "n_eval": 500, "common_steps": 100},
          "gpu": {"train_steps": 8_000, "n_eval": 2_000, "common_steps": 250}}

T_VARIANTS = {              # name -> (schedule, T)
    "T=100": ("scaled_linear", 100),
    "T=250": ("scaled_linear", 250),
    "T=500": ("scaled_linear", 500),
    "T=1000": ("scaled_linear", 1000),
    "T=100, linear not rescaled": ("linear", 100),
}


def study_settings(profile: str, **overrides) -> Settings:
    """Chapter 05's settings for ``profile`` (runner overrides never apply: the study is fixed)."""
    return chapter_settings("05", profile, runner_overrides=False, **overrides)


def variant_config(cfg: Settings, schedule: str, T: int) -> TrainConfig:
    """Chapter 05's recipe with another schedule and T, everything else equal."""
    return train_config_from(cfg, schedule=schedule, T=T)


def train_variant(cfg: Settings, schedule: str, T: int, progress: bool = True):
    """(EMA model, info) of one variant, trained if not cached (cache name ``ch13-<schedule>-T<T>``)."""
    tcfg = variant_config(cfg, schedule, T)
    model, info = load_or_train(f"ch13-{schedule}-T{T}", lambda: make_unet(cfg), tcfg,
                                lambda: training_images(cfg.n_train), data_spec(cfg.n_train),
                                device=cfg.device, progress=progress)
    return model, {**info, "train_config": tcfg}


def score(model, tcfg: TrainConfig, judge, n: int, steps: int, seed: int, device="cpu") -> dict:
    """``n`` digits with ``steps`` respaced ancestral steps from a seeded start, scored by the judge."""
    start = time.perf_counter()
    x = sample_digits(model, tcfg, n, steps, 1.0, torch.Generator().manual_seed(seed), device)
    seconds = time.perf_counter() - start
    rep = judge.evaluate(x)
    return {"steps": steps, "seconds_per_image": seconds / n,
            **{k: rep[k] for k in ("frechet", "frechet_floor", "frechet_ratio", "confident_fraction",
                                   "min_class_fraction")}}


def t_study(cfg: Settings, judge, n: int, common_steps: int, seed: int = 0,
            variants: dict = T_VARIANTS, progress: bool = True) -> list[dict]:
    """Every variant trained (or loaded) and scored at ``common_steps`` (at most its T) and at T."""
    rows = []
    for name, (schedule, T) in variants.items():
        model, info = train_variant(cfg, schedule, T, progress)
        tcfg = info["train_config"]
        abar_T = tcfg.noise_schedule().alpha_bars[-1].item()
        at_common = score(model, tcfg, judge, n, min(common_steps, T), seed, cfg.device)
        at_T = at_common if min(common_steps, T) == T else score(model, tcfg, judge, n, T, seed, cfg.device)
        rows.append({"variant": name, "schedule": schedule, "T": T, "alpha_bar_T": abar_T,
                     "train_steps": info["steps"], "train_seconds": info["seconds"],
                     "trained_now": info["trained_now"], "at_common_steps": at_common, "at_T_steps": at_T})
    return rows
