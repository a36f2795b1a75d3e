"""Chapter 13's controlled study of quality against compute (and ``benchmarks/quality_vs_compute.py``).

Three common beliefs (a larger T gives better samples; larger models cost more time and
memory; a GAN beats a diffusion model at equal effort) are often quoted with numbers and no
settings, e.g. FID 28.5 / 24.7 / 22.9 for T = 100 / 500 / 1000, models of 5M / 20M / 50M
parameters taking 0.8 / 2.5 / 5.7 s per image and 1.5 / 4 / 7 GB, a diffusion model at FID
22.9 against StyleGAN2 at 19.5 (an unsourced example). Here every diffusion model is chapter
05's U-Net and recipe for the profile (chapter 13's ``train_steps``, chapter 05's batch and
seed), every score is the course's judge against its floor at the same N, and each part
changes one thing:

    t_study       the schedule's T: scaled_linear at T = 100 / 250 / 500 / 1000 (the linear
                  betas rescaled by 1000 / T, so every T ends equally noisy, abar_T ~ 4e-5) and
                  the trap, Ho et al.'s linear betas over only T = 100 steps (abar_T = 0.36);
                  scored at the same number of sampling steps and at T steps
    seed_spread   the baseline variant (rescaled T = 1000, chapter 05's width) scored from
                  several starting-noise seeds: how large a difference has to be before it
                  means anything, with the 95 % interval of that spread (``sd_interval``)
    width_study   the U-Net's base width: parameters, FLOPs per call (counted), seconds per
                  image, peak memory in sampling and in training (measured), and quality at
                  equal images seen and at equal wall time
    steps_study   sampling steps of the chapter-05 model (``sampler_sweep``, the machinery of
                  ``benchmarks/sampling_steps.py``): the shipped model by default, trained on
                  another budget than the study's models, so it is kept off the Pareto front
    gan_study     a DCGAN trained for the same wall time as the baseline variant, same judge,
                  same N: quality, generation time, class coverage and nearest training digits
    pareto_points / seed_claims   every configuration as (cost, quality), with the Pareto front
                  of the models this study trained, and the three claims restated with these numbers
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, replace

import torch

from ..course.settings import Settings, chapter_settings, train_config_from
from ..data.mnist import N_TEST, data_spec, training_images
from ..data.paths import cache_dir
from ..evaluation.compute import count_flops, median_seconds, pareto_front, peak_memory, report_card
from ..evaluation.coverage import nearest_neighbour_distances
from ..models.gan import DCGANDiscriminator, DCGANGenerator
from ..models.unet import count_parameters
from ..training.cache import cache_key, cached, load_or_train
from ..training.checkpoints import FORMAT, checked
from ..training.device import machine_info
from ..training.gan import load_or_train_gan
from ..training.loop import train
from .mnist_ddpm import load_mnist_model, make_unet
from .sampler_sweep import generate, score_setting, starting_noise, sweep

T_VARIANTS = {              # name -> (schedule, T)
    "T=100": ("scaled_linear", 100),
    "T=250": ("scaled_linear", 250),
    "T=500": ("scaled_linear", 500),
    "T=1000": ("scaled_linear", 1000),
    "T=100, linear not rescaled": ("linear", 100),
}
GPU_T_VARIANTS = {"T=2000": ("scaled_linear", 2000)}      # the gpu profile's wider sweep
BASELINE_VARIANT = ("scaled_linear", 1000)                # = chapter 05's betas (linear, T = 1000)

# Base widths of the U-Net per profile (chapter 05's own is among them) and the sampling
# steps of the steps study; the gpu profile widens both.
WIDTHS = {"ci": (8, 16, 24, 32), "cpu": (8, 16, 32, 64), "gpu": (16, 32, 64, 96, 128)}
STEPS = {"ci": (2, 5, 10), "cpu": (10, 20, 50, 100, 250), "gpu": (10, 20, 50, 100, 250, 1000)}
GAN_RECIPE = {"batch_size": 128, "lr": 2e-4}              # DCGAN's (Radford et al. 2016)
GAN_SIZE = {"latent_dim": 64, "width": 64}
SAMPLE_BATCH = 250                                         # digits per sampling call everywhere


def settings(profile: str = "auto", **overrides) -> Settings:
    """Chapter 13's settings (its knobs: seed, model, train_steps, n_eval, common_steps, n_seeds)."""
    return chapter_settings("13", profile, **overrides)


def t_variants(profile: str) -> dict:
    """The T variants of a profile: ``ci`` leaves out T = 500 (sampling at T steps is most
    of its time), ``gpu`` adds T = 2000."""
    if profile == "ci":
        return {k: v for k, v in T_VARIANTS.items() if k != "T=500"}
    return {**T_VARIANTS, **(GPU_T_VARIANTS if profile == "gpu" else {})}


def study_settings(cfg: Settings, **overrides) -> Settings:
    """Chapter 05's settings for ``cfg``'s profile trained for ``cfg.train_steps`` (runner
    overrides of chapter 05 never apply: the study is fixed)."""
    return chapter_settings("05", cfg.profile, runner_overrides=False,
                            **{"train_steps": cfg.train_steps, **overrides})


def variant_config(cfg05: Settings, schedule: str, T: int):
    """Chapter 05's recipe with another schedule and T, everything else equal."""
    return train_config_from(cfg05, schedule=schedule, T=T)


def train_variant(cfg: Settings, schedule: str, T: int, width: int | None = None,
                  steps: int | None = None, progress: bool = True):
    """(EMA model, info) of one variant, trained if not cached: chapter 05's recipe with this
    schedule and T, base ``width`` and ``steps`` (default: chapter 05's width, cfg.train_steps).
    Cache name ``ch13-<schedule>-T<T>[-w<width>][-<steps>steps]``."""
    base = study_settings(cfg)
    width, steps = width or base.base_width, steps or base.train_steps
    cfg05 = study_settings(cfg, base_width=width, train_steps=steps)
    tcfg = variant_config(cfg05, schedule, T)
    name = (f"ch13-{schedule}-T{T}" + (f"-w{width}" if width != base.base_width else "")
            + (f"-{steps}steps" if steps != base.train_steps else ""))
    model, info = load_or_train(name, lambda: make_unet(cfg05), tcfg,
                                lambda: training_images(cfg05.n_train), data_spec(cfg05.n_train),
                                device=cfg05.device, progress=progress)
    return model, {**info, "train_config": tcfg, "settings": cfg05}


def score(model, tcfg, judge, cfg: Settings, steps: int, seed: int | None = None,
          keep_samples: bool = False) -> dict:
    """cfg.n_eval digits with ``steps`` respaced ancestral steps from seeded noise, scored by
    the judge (``sampler_sweep.score_setting``); ``keep_samples`` adds the digits."""
    seed = cfg.seed if seed is None else seed
    return {"steps": steps, **score_setting("ddpm", model, starting_noise(cfg.n_eval, seed), tcfg, steps, judge,
                                            seed, cfg.device, SAMPLE_BATCH, keep_samples=keep_samples)}


# ---------------------------------------------------------------------------------------
# Part 1: the T a model is trained with, and the steps it is sampled with
# ---------------------------------------------------------------------------------------
def t_study(cfg: Settings, judge, variants: dict | None = None, progress: bool = True) -> list[dict]:
    """Every variant trained (or loaded) and scored at cfg.common_steps (at most its T) and at T."""
    rows = []
    for name, (schedule, T) in (variants or t_variants(cfg.profile)).items():
        model, info = train_variant(cfg, schedule, T, progress=progress)
        tcfg = info["train_config"]
        common = min(cfg.common_steps, T)
        at_common = score(model, tcfg, judge, cfg, common)
        at_T = at_common if common == T else score(model, tcfg, judge, cfg, T)
        rows.append({"variant": name, "schedule": schedule, "T": T,
                     "alpha_bar_T": tcfg.noise_schedule().alpha_bars[-1].item(),
                     "train_steps": info["steps"], "train_seconds": info["seconds"],
                     "trained_now": info["trained_now"], "at_common_steps": at_common, "at_T_steps": at_T})
    return rows


def sd_interval(sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` confidence interval of a standard deviation estimated from n Gaussian
    draws (sample sd, n - 1 degrees of freedom): (n - 1) s^2 / sigma^2 ~ chi^2_{n-1}, so
    sigma lies in [s sqrt((n-1) / chi2_{(1+level)/2}), s sqrt((n-1) / chi2_{(1-level)/2})]."""
    from scipy.stats import chi2

    dof = n - 1
    return tuple(sd * math.sqrt(dof / chi2.ppf(q, dof)) for q in ((1 + level) / 2, (1 - level) / 2))


def seed_spread(cfg: Settings, judge, progress: bool = True) -> dict:
    """The baseline variant scored from cfg.n_seeds starting-noise seeds at cfg.common_steps:
    the spread of one score, against which every difference in this study is read, and the
    95 % interval of that spread (``sd_interval``: from 3 seeds it spans a factor of 12)."""
    model, info = train_variant(cfg, *BASELINE_VARIANT, progress=progress)
    seeds = range(cfg.seed, cfg.seed + cfg.n_seeds)
    row = next(sweep(model, info["train_config"], judge, ["ddpm"], [cfg.common_steps], cfg.n_eval,
                     seeds, cfg.device, SAMPLE_BATCH))
    ratios = [r["frechet_ratio"] for r in row["by_seed"]]
    sd = row["frechet_sd"] / row["frechet_floor"]
    return {"steps": cfg.common_steps, "seeds": list(seeds), "frechet_ratio_by_seed": ratios,
            "frechet_ratio_mean": sum(ratios) / len(ratios),
            "frechet_ratio_sd": sd, "frechet_ratio_sd_95": sd_interval(sd, len(ratios))}


# ---------------------------------------------------------------------------------------
# Part 2: model size
# ---------------------------------------------------------------------------------------
def training_seconds_per_step(cfg: Settings, widths, progress: bool = True) -> dict:
    """Per width: seconds per training step, chapter 05's batch and precision, timed after a
    short warm-up run. Measured once per machine and cached (``ch13-training-cost-<hash>.pt``),
    so the equal-time step counts, and with them the cached models, stay the same between
    runs. A short timing: the measured training seconds of each model are reported too."""
    cfg05 = study_settings(cfg)
    timed_steps = {"ci": 3, "cpu": 10, "gpu": 30}[cfg.profile]
    key = cache_key({"widths": list(widths), "timed_steps": timed_steps},
                    asdict(variant_config(cfg05, *BASELINE_VARIANT)), machine_info(cfg05.device))
    path = cache_dir() / f"ch13-training-cost-{key}.pt"

    def measure():
        images = training_images(cfg05.n_train)[0][:4096]
        cost = {}
        for w in widths:
            cfg_w = study_settings(cfg, base_width=w)
            recipe = variant_config(cfg_w, *BASELINE_VARIANT)
            train(make_unet(cfg_w), images, replace(recipe, steps=2, warmup=1), progress=False, device=cfg05.device)
            state = train(make_unet(cfg_w), images, replace(recipe, steps=timed_steps, warmup=1), progress=False,
                          device=cfg05.device)
            cost[w] = {"seconds_per_step": state.seconds / timed_steps}
            if progress:
                print(f"width {w}: {cost[w]['seconds_per_step'] * 1e3:.0f} ms per training step", flush=True)
        return cost, {"format": FORMAT, "cost": cost}

    cost, _ = cached(path, lambda blob: checked(blob, path)["cost"], measure)
    return {w: c["seconds_per_step"] for w, c in cost.items()}


def memory_use(cfg: Settings, width: int) -> dict:
    """Peak memory (``evaluation.compute.peak_memory``) of two training steps of chapter 05's recipe at
    this width (weights, gradients, Adam's state, activations of one batch) and of two
    sampling steps of a batch of ``SAMPLE_BATCH`` digits (no gradients)."""
    cfg_w = study_settings(cfg, base_width=width)
    recipe = variant_config(cfg_w, *BASELINE_VARIANT)
    images = training_images(cfg_w.n_train)[0][:1024]
    training = peak_memory(lambda: train(make_unet(cfg_w), images, replace(recipe, steps=2, warmup=1),
                                         progress=False, device=cfg.device), cfg.device)
    net = make_unet(cfg_w).to(cfg.device).eval()
    x_T = starting_noise(SAMPLE_BATCH, cfg.seed)
    sampling = peak_memory(lambda: generate(net, recipe, x_T, 2, "ddpm", device=cfg.device), cfg.device)
    return {"train_peak_mib": training["peak_mib"], "train_memory_batch": recipe.batch_size,
            "sample_peak_mib": sampling["peak_mib"], "sample_memory_batch": SAMPLE_BATCH,
            "memory_method": sampling["method"]}


def equal_time_steps(train_steps: int, seconds_per_step: dict, baseline_width: int) -> dict:
    """Training steps per width that take the wall time of ``train_steps`` steps at the
    baseline width, chapter 05's (rounded to tens, at least 10; the baseline width gets
    ``train_steps``)."""
    budget = train_steps * seconds_per_step[baseline_width]
    return {w: train_steps if w == baseline_width else max(10, round(budget / s / 10) * 10)
            for w, s in seconds_per_step.items()}


def width_study(cfg: Settings, judge, widths=None, progress: bool = True) -> list[dict]:
    """Every width: its costs (parameters, FLOPs per network call counted by torch, FLOPs per
    digit at cfg.common_steps, seconds per digit, peak memory sampling a batch and training),
    and its quality trained for equal images (cfg.train_steps) and for equal wall time."""
    widths = tuple(widths or WIDTHS[cfg.profile])
    baseline = study_settings(cfg).base_width
    if baseline not in widths:
        raise ValueError(f"the widths must include chapter 05's own, {baseline}, got {widths}")
    seconds_per_step = training_seconds_per_step(cfg, widths, progress)
    steps_for = equal_time_steps(cfg.train_steps, seconds_per_step, baseline)
    rows = []
    for w in widths:
        row = {"width": w, "seconds_per_step": seconds_per_step[w], **memory_use(cfg, w)}
        for budget, steps in (("equal_images", cfg.train_steps), ("equal_time", steps_for[w])):
            if budget == "equal_time" and w == baseline:
                row[budget] = row["equal_images"]           # the same model
                continue
            model, info = train_variant(cfg, *BASELINE_VARIANT, width=w, steps=steps, progress=progress)
            tcfg = info["train_config"]
            row[budget] = {"train_steps": info["steps"], "train_seconds": info["seconds"],
                           "images_seen": info["steps"] * tcfg.batch_size, "trained_now": info["trained_now"],
                           **score(model, tcfg, judge, cfg, cfg.common_steps)}
        net = make_unet(study_settings(cfg, base_width=w)).to(cfg.device).eval()
        x, t = torch.zeros(1, 1, 28, 28, device=cfg.device), torch.zeros(1, dtype=torch.long, device=cfg.device)
        row["parameters"] = count_parameters(net)
        row["flops_per_call"] = count_flops(net, x, t)
        row["flops_per_image"] = row["flops_per_call"] * cfg.common_steps
        row["seconds_per_image"] = row["equal_images"]["seconds_per_image"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# Part 3: sampling steps of the chapter-05 model
# ---------------------------------------------------------------------------------------
def steps_study(cfg: Settings, judge, samplers=("ddpm", "ddim"), steps=None) -> list[dict]:
    """The chapter-05 model (cfg.model: the shipped reference or the student's) sampled at
    every number of steps of ``STEPS[profile]`` by each sampler, cfg.n_eval digits from one
    seed. Each row names the model and its training steps (``model_train_steps``): another
    budget than the study's models (the shipped one: 24,000 steps)."""
    model, info = load_mnist_model(cfg.profile, cfg.model)
    return [{**row, "model": cfg.model, "model_train_steps": info["steps"]}
            for row in sweep(model, info["train_config"], judge, samplers, steps or STEPS[cfg.profile],
                             cfg.n_eval, [cfg.seed], cfg.device, SAMPLE_BATCH)]


# ---------------------------------------------------------------------------------------
# Part 4: diffusion against a GAN at equal training time
# ---------------------------------------------------------------------------------------
def coverage(samples: torch.Tensor, report: dict, train_x: torch.Tensor, real_nn: torch.Tensor) -> dict:
    """What an FD hides: the class histogram's extremes, and how close the samples lie to
    their nearest training digits compared with held-out real digits (``real_nn``): a
    generator that copied its training set would sit far below the real digits' distances."""
    nn_dist = nearest_neighbour_distances(samples, train_x)
    copy_line = real_nn.quantile(0.01).item()          # closer than 99 % of real test digits
    return {"class_histogram": report["class_histogram"], "min_class_fraction": min(report["class_histogram"]),
            "max_class_fraction": max(report["class_histogram"]),
            "nn_distance_median": nn_dist.median().item(), "real_nn_distance_median": real_nn.median().item(),
            "fraction_closer_than_real_1pct": (nn_dist < copy_line).float().mean().item()}


def gan_study(cfg: Settings, judge, progress: bool = True) -> dict:
    """A DCGAN trained for the measured training time of the baseline diffusion variant,
    against that variant: the judge's scores at the same N, generation seconds per image,
    class coverage and nearest training digits (``coverage``)."""
    diffusion, info = train_variant(cfg, *BASELINE_VARIANT, progress=progress)
    cfg05 = info["settings"]
    budget = info["seconds"]
    train_x = training_images(cfg05.n_train)[0]          # the GAN's data and the neighbours' reference
    G, gan_info = load_or_train_gan(f"ch13-dcgan-{round(budget)}s", lambda: DCGANGenerator(**GAN_SIZE),
                                    lambda: DCGANDiscriminator(GAN_SIZE["width"]),
                                    lambda: train_x, budget, GAN_RECIPE,
                                    seed=cfg05.seed, progress=progress, device=cfg.device)
    real_nn = nearest_neighbour_distances(judge.test_x[:cfg.n_eval], train_x)
    gen = torch.Generator().manual_seed(cfg.seed)
    gan_x = G.sample(cfg.n_eval, generator=gen)
    gan_report = judge.evaluate(gan_x)
    gan_seconds = median_seconds(lambda: G.sample(cfg.n_eval), device=cfg.device) / cfg.n_eval
    d = score(diffusion, info["train_config"], judge, cfg, cfg.common_steps, keep_samples=True)
    d_x = d.pop("samples")
    keys = ("frechet", "frechet_floor", "frechet_ratio", "confident_fraction")
    return {"train_seconds_budget": budget,
            "gan": {"train_steps": gan_info["steps"], "train_seconds": gan_info["seconds"],
                    "images_seen": gan_info["steps"] * GAN_RECIPE["batch_size"], "parameters": count_parameters(G),
                    "trained_now": gan_info["trained_now"], "recipe": {**GAN_RECIPE, **GAN_SIZE},
                    "seconds_per_image": gan_seconds, "network_calls_per_image": 1,
                    **{k: gan_report[k] for k in keys}, **coverage(gan_x, gan_report, train_x, real_nn)},
            "diffusion": {"train_steps": info["steps"], "train_seconds": info["seconds"],
                          "images_seen": info["steps"] * info["train_config"].batch_size,
                          "parameters": count_parameters(diffusion), "seconds_per_image": d["seconds_per_image"],
                          "network_calls_per_image": cfg.common_steps, **{k: d[k] for k in keys},
                          **coverage(d_x, d, train_x, real_nn)},
            "samples": {"gan": gan_x[:32], "diffusion": d_x[:32]}}


# ---------------------------------------------------------------------------------------
# Part 5: every configuration on one plot, and the three claims restated
# ---------------------------------------------------------------------------------------
def pareto_points(study: dict) -> list[dict]:
    """Every scored configuration as {label, family, seconds_per_image, frechet_ratio,
    controlled, on_front}: quality against generation cost. The front is taken over the
    controlled points only, the models this study trained on one budget (the T variants, the
    widths, the GAN: ``train_steps`` steps or their wall time); the steps study's chapter-05
    model was trained on another budget (``controlled`` False, never on the front)."""
    points = []
    for r in study.get("t_study", []):
        for at in ("at_common_steps", "at_T_steps"):
            if at == "at_T_steps" and r[at] is r["at_common_steps"]:
                continue
            points.append({"label": f"{r['variant']}, {r[at]['steps']} steps", "family": "T",
                           **{k: r[at][k] for k in ("seconds_per_image", "frechet_ratio")}})
    for r in study.get("width_study", []):
        for budget in ("equal_images", "equal_time"):
            if budget == "equal_time" and r[budget] is r["equal_images"]:
                continue
            points.append({"label": f"width {r['width']}, {budget.replace('_', ' ')}", "family": "width",
                           **{k: r[budget][k] for k in ("seconds_per_image", "frechet_ratio")}})
    if "gan_study" in study:
        g = study["gan_study"]["gan"]
        points.append({"label": "DCGAN", "family": "GAN", "seconds_per_image": g["seconds_per_image"],
                       "frechet_ratio": g["frechet_ratio"]})
    points = [{**p, "controlled": True} for p in points]
    for r in study.get("steps_study", []):
        points.append({"label": f"{r['sampler']}, {r['steps']} steps", "family": "steps", "controlled": False,
                       **{k: r[k] for k in ("seconds_per_image", "frechet_ratio")}})
    controlled = [i for i, p in enumerate(points) if p["controlled"]]
    front = {controlled[j] for j in pareto_front([points[i]["seconds_per_image"] for i in controlled],
                                                 [points[i]["frechet_ratio"] for i in controlled])}
    return [{**p, "on_front": i in front} for i, p in enumerate(points)]


def verdict(difference: float, spread: float, spread_high: float | None = None) -> str:
    """A difference in FD/floor read against the seed spread of one score (2 sd of the
    difference of two independent scores: 2 sqrt(2) sd). With ``spread_high``, the upper end
    of the spread's confidence interval (``sd_interval``), a difference beyond the noise at
    the estimated sd but not at that upper end is called uncertain."""
    limit = 2 * 2 ** 0.5 * spread
    if abs(difference) <= limit:
        return f"indistinguishable: the difference {difference:+.2f} is within the seed noise (+-{limit:.2f})"
    if spread_high is not None and abs(difference) <= 2 * 2 ** 0.5 * spread_high:
        return (f"uncertain: the difference {difference:+.2f} exceeds the seed noise at the estimated sd "
                f"(+-{limit:.2f}) but not at the top of its 95 % interval (+-{2 * 2 ** 0.5 * spread_high:.2f})")
    return f"{'holds' if difference > 0 else 'reversed'}: difference {difference:+.2f} (noise +-{limit:.2f})"


def seed_claims(study: dict) -> dict:
    """The three claims, each restated with this study's numbers and a verdict against the
    seed noise (and the top of its 95 % interval, where the spread has one)."""
    sd = study["seed_spread"]["frechet_ratio_sd"]
    sd_high = study["seed_spread"].get("frechet_ratio_sd_95", (None, None))[1]
    out = {}
    rows = {r["variant"]: r for r in study.get("t_study", [])}
    if {"T=100", "T=1000"} <= set(rows):
        common = {k: rows[k]["at_common_steps"]["frechet_ratio"] for k in rows}
        at_T = {k: rows[k]["at_T_steps"]["frechet_ratio"] for k in rows}
        out["larger T is better"] = {
            "source": "FID 28.5 / 24.7 / 22.9 at T = 100 / 500 / 1000",
            "at_common_steps": common, "at_T_steps": at_T,
            "verdict_at_common_steps": verdict(common["T=100"] - common["T=1000"], sd, sd_high),
            "verdict_at_T_steps": verdict(at_T["T=100"] - at_T["T=1000"], sd, sd_high)}
        if "T=100, linear not rescaled" in rows:
            out["larger T is better"]["trap_over_rescaled_at_T_100"] = (
                common["T=100, linear not rescaled"] / common["T=100"])
    widths = study.get("width_study", [])
    if widths:
        by = sorted(widths, key=lambda r: r["parameters"])
        rising = lambda key: all(a[key] < b[key] for a, b in zip(by, by[1:]))  # noqa: E731
        out["larger models cost more"] = {
            "source": "5M / 20M / 50M parameters: 0.8 / 2.5 / 5.7 s per image, 1.5 / 4 / 7 GB",
            "parameters": [r["parameters"] for r in by], "seconds_per_image": [r["seconds_per_image"] for r in by],
            "sample_peak_mib": [r["sample_peak_mib"] for r in by], "train_peak_mib": [r["train_peak_mib"] for r in by],
            "time_rises": rising("seconds_per_image"), "flops_rise": rising("flops_per_call"),
            "sample_memory_rises": rising("sample_peak_mib"), "train_memory_rises": rising("train_peak_mib"),
            "frechet_ratio_equal_images": [r["equal_images"]["frechet_ratio"] for r in by],
            "frechet_ratio_equal_time": [r["equal_time"]["frechet_ratio"] for r in by]}
    if "gan_study" in study:
        g, d = study["gan_study"]["gan"], study["gan_study"]["diffusion"]
        out["the GAN beats the diffusion model"] = {
            "source": "diffusion FID 22.9 against StyleGAN2 19.5",
            "gan_frechet_ratio": g["frechet_ratio"], "diffusion_frechet_ratio": d["frechet_ratio"],
            "gan_seconds_per_image": g["seconds_per_image"], "diffusion_seconds_per_image": d["seconds_per_image"],
            "verdict": verdict(d["frechet_ratio"] - g["frechet_ratio"], sd, sd_high)}
    return out


# ---------------------------------------------------------------------------------------
# The whole study
# ---------------------------------------------------------------------------------------
PARTS = ("t_study", "seed_spread", "width_study", "steps_study", "gan_study")


def study_card(cfg: Settings, judge) -> dict:
    """The report card every number of the study shares (``evaluation.compute.report_card``)."""
    cfg05 = study_settings(cfg)
    tcfg = variant_config(cfg05, *BASELINE_VARIANT)
    card = report_card(seed=cfg.seed, schedule=f"{tcfg.schedule} (the T study varies it)", T=tcfg.T,
                       sampler="ancestral (eta = 1), respaced, x0 clipped", steps=cfg.common_steps,
                       n_samples=cfg.n_eval, reference_set=f"MNIST test[0:{N_TEST}]", judge=judge.describe(),
                       precision=tcfg.precision, device=cfg.device)
    return {**card, "training_seed": cfg05.seed, "train_steps": cfg.train_steps,
            "batch_size": cfg05.batch_size, "images_seen": cfg.train_steps * cfg05.batch_size}


def run_study(cfg: Settings, judge, parts=PARTS, variants: dict | None = None, progress: bool = True) -> dict:
    """The parts asked for (all by default), then the Pareto points and the claims."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; allowed: {', '.join(PARTS)}")
    study = {"report_card": study_card(cfg, judge), "settings": cfg.as_dict(), "seconds": {}}
    run = {"t_study": lambda: t_study(cfg, judge, variants, progress),
           "seed_spread": lambda: seed_spread(cfg, judge, progress),
           "width_study": lambda: width_study(cfg, judge, progress=progress),
           "steps_study": lambda: steps_study(cfg, judge),
           "gan_study": lambda: gan_study(cfg, judge, progress)}
    for part in PARTS:
        if part in parts:
            start = time.perf_counter()
            study[part] = run[part]()
            study["seconds"][part] = time.perf_counter() - start
    study["pareto"] = pareto_points(study)
    if "seed_spread" in study:
        study["claims"] = seed_claims(study)
    return study
