"""Samplers x numbers of steps x seeds, each setting scored by the course's judge: the
machinery behind ``benchmarks/sampling_steps.py`` (chapter 07's table) and chapter 13's
steps-against-quality-against-time curve.

    ddpm  ancestral DDPM update on the respaced chain (``diffusion.sampling.sample``, eta = 1; at T steps
          exactly chapter 05's sampler)
    ddim  deterministic DDIM (``diffusion.sampling.sample``, eta = 0)
    ode   probability-flow ODE of the VP SDE, Euler in r = -log abar (``diffusion.sde.sample_sde``)
    sde   the reverse SDE, Euler-Maruyama in r = -log abar (``diffusion.sde.sample_sde``)
    dpm2m DPM-Solver++(2M) on steps evenly spaced in log-SNR (``diffusion.sampling.sample``, order = 2)
    dpm2m-sde  its stochastic version, DPM-Solver++(2M) SDE (order = 2, eta = 1)
    dpm2m-uniform, dpm2m-karras  DPM-Solver++(2M) on steps uniform in t, or on EDM's rho = 7 grid
    heun  EDM's Heun on its rho = 7 grid (``diffusion.sde.sample_sigma_ode``): n steps, 2n - 1 calls

Every setting starts from the same seeded x_T (one per seed), so settings differ only in the
sampler and its steps; a row records seconds per image and the judge's report card.
"""
from __future__ import annotations

import statistics
import time
from typing import Iterator

import torch

from ..diffusion.sampling import sample
from ..diffusion.sde import edm_timesteps, sample_sde, sample_sigma_ode
from ..training.device import autocast

SAMPLERS = {"ddpm": "ancestral DDPM update, eta = 1 (diffusion.sampling.sample)",
            "ddim": "DDIM, eta = 0 (diffusion.sampling.sample)",
            "ode": "probability-flow ODE, Euler in r = -log abar (diffusion.sde.sample_sde, method='ode')",
            "sde": "reverse SDE, Euler-Maruyama in r = -log abar (diffusion.sde.sample_sde, method='sde')",
            "dpm2m": "DPM-Solver++(2M), steps even in log-SNR (diffusion.sampling.sample, order=2, eta=0)",
            "dpm2m-sde": "DPM-Solver++(2M) SDE, steps even in log-SNR (diffusion.sampling.sample, order=2, eta=1)",
            "dpm2m-uniform": "DPM-Solver++(2M), steps uniform in t (diffusion.sampling.sample, order=2, eta=0)",
            "dpm2m-karras": "DPM-Solver++(2M) on EDM's rho = 7 grid (sample(order=2, times=sde.edm_timesteps(...)))",
            "heun": "EDM's Heun on its rho = 7 grid, 2n - 1 calls for n steps (diffusion.sde.sample_sigma_ode)"}
# the settings of diffusion.sampling.sample each sampler of that family is
SAMPLE_SETTINGS = {"ddpm": {"eta": 1.0}, "ddim": {"eta": 0.0},
                   "dpm2m": {"eta": 0.0, "order": 2, "spacing": "logsnr"},
                   "dpm2m-sde": {"eta": 1.0, "order": 2, "spacing": "logsnr"},
                   "dpm2m-uniform": {"eta": 0.0, "order": 2, "spacing": "uniform"},
                   "dpm2m-karras": {"eta": 0.0, "order": 2}}

REPORT_KEYS = ("frechet", "frechet_floor", "frechet_floor_sd", "frechet_ratio", "confident_fraction",
               "min_class_fraction", "class_histogram")
AVERAGED_KEYS = ("seconds_per_image", "frechet", "frechet_ratio", "confident_fraction", "min_class_fraction")


def generate(model, tcfg, x_T: torch.Tensor, steps: int, sampler: str = "ddim", eta: float | None = None,
             generator: torch.Generator | None = None, device="cpu", labels: torch.Tensor | None = None,
             guidance: float | None = None, batch: int | None = None, progress: bool = False,
             precision: str | None = None) -> torch.Tensor:
    """x_0 (float32) from ``x_T`` with ``sampler`` in ``steps`` steps, for a model trained with
    ``tcfg`` (its schedule, prediction kind and precision, unless ``precision`` says otherwise),
    in batches of ``batch`` (all at once by default: with an ancestral sampler, another
    batching draws other noise). ``eta``: DDIM's stochasticity (ddim only; default 0, ddpm is
    1); ``labels`` and ``guidance``: the class-conditional model's digits and guidance weight."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if eta is not None and sampler != "ddim":
        raise ValueError(f"eta is a setting of the ddim sampler, not of {sampler!r}")
    schedule, out = tcfg.noise_schedule(), []
    step = batch or len(x_T)
    for i in range(0, len(x_T), step):
        extra = {} if labels is None else {"labels": labels[i:i + step], "guidance": guidance}
        chunk = x_T[i:i + step]
        with autocast(precision or tcfg.precision, device):
            if sampler in ("ode", "sde"):
                traj = sample_sde(model, chunk.shape, schedule, steps=steps, method=sampler, kind=tcfg.kind,
                                  x_T=chunk, generator=generator, device=device, progress=progress, **extra)
            elif sampler == "heun":
                traj = sample_sigma_ode(model, chunk.shape, schedule, steps, method="heun", grid="edm",
                                        kind=tcfg.kind, x_T=chunk, device=device, **extra)
            else:
                settings = {**SAMPLE_SETTINGS[sampler], **({"eta": eta} if eta is not None else {})}
                if sampler == "dpm2m-karras":
                    settings["times"] = edm_timesteps(schedule, steps)
                traj = sample(model, chunk.shape, schedule, steps=steps, kind=tcfg.kind, x_T=chunk,
                              generator=generator, device=device, progress=progress, **settings, **extra)
        out.append(traj.x0.float())
    return torch.cat(out)


def starting_noise(n: int, seed: int, shape=(1, 28, 28)) -> torch.Tensor:
    """The seeded x_T every setting of one seed starts from."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def score_setting(sampler: str, model, x_T: torch.Tensor, tcfg, steps: int, judge, seed: int,
                  device, batch: int = 250, keep_samples: bool = False) -> dict:
    """One setting from one seeded x_T: seconds per image and the judge's report (the step
    noises of the ancestral sampler come from ``seed + 1``); ``keep_samples`` adds the digits."""
    gen = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    x = generate(model, tcfg, x_T, steps, sampler, generator=gen, device=device, batch=batch)
    seconds = time.perf_counter() - start
    rep = judge.evaluate(x)  # the judge computes the floor at this N once, for every setting
    row = {"seed": seed, "seconds_per_image": seconds / len(x), **{k: rep[k] for k in REPORT_KEYS}}
    return {**row, "samples": x} if keep_samples else row


def sweep(model, tcfg, judge, samplers, steps_list, n: int, seeds, device,
          batch: int = 250) -> Iterator[dict]:
    """Yield a row per (sampler, steps): one seed's figures, or with several seeds their mean,
    the Frechet distance's spread and each seed's figures (``by_seed``)."""
    seeds = list(seeds)
    x_Ts = {s: starting_noise(n, s) for s in seeds}
    generate(model, tcfg, x_Ts[seeds[0]][:8], 2, "ddim", device=device)  # warm-up: the first time is not inflated
    for sampler in samplers:
        for steps in steps_list:
            by_seed = [score_setting(sampler, model, x_Ts[s], tcfg, steps, judge, s, device, batch)
                       for s in seeds]
            yield {"sampler": sampler, "steps": steps,
                   **average_over_seeds(by_seed, AVERAGED_KEYS, "frechet",
                                        ("seed", "frechet", "frechet_ratio", "confident_fraction"))}


def average_over_seeds(by_seed: list[dict], keys, spread: str, kept) -> dict:
    """One row from one setting's rows per seed: the first seed's row, and with several seeds
    the mean of ``keys``, the standard deviation of ``spread`` (as ``<spread>_sd``) and each
    seed's ``kept`` figures (``by_seed``)."""
    row = dict(by_seed[0])
    if len(by_seed) > 1:
        for key in keys:
            row[key] = statistics.mean(r[key] for r in by_seed)
        row[f"{spread}_sd"] = statistics.stdev(r[spread] for r in by_seed)
        row["by_seed"] = [{k: r[k] for k in kept} for r in by_seed]
    return row
