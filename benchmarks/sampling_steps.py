"""Benchmark: sampling steps vs quality vs time for the chapter-05 MNIST model, per sampler.
Writes JSON.

    python benchmarks/sampling_steps.py                                  # cpu profile, full table
    python benchmarks/sampling_steps.py --samplers ddpm ddim ode         # + probability-flow ODE
    python benchmarks/sampling_steps.py --profile ci --n-samples 50 --steps 10 20   # smoke test

For each number of steps (default 10, 20, 50, 100, 250, 1000) and each sampler

    ddpm  ancestral DDPM update on the respaced chain (sampling.sample, eta = 1; at 1000 steps
          exactly chapter 05's sampler)
    ddim  deterministic DDIM (sampling.sample, eta = 0)
    ode   probability-flow ODE of the VP SDE, Euler in rho = -log abar (sde.sample_sde, "ode")

it generates --n-samples digits from the same seeded x_T and records seconds per image and the
chapter-06 report card against the 1,000 held-out digits: Frechet distance on classifier
features, the real-vs-real floor at the same N (N random training digits vs the same held-out digits),
FD / floor, confident fraction and smallest class fraction. The JSON is rewritten after every
setting, so an interrupted run keeps what it measured.

The chapter-05 model and the chapter-06 classifier come from the course's checkpoint cache
(trained there first if absent, as the chapters do). Offline with only the MNIST test split,
it uses train_split "test" and n_train 9,000, as benchmarks/ddpm_mnist.py does.

Cost: one network evaluation per image and step, so the full default table is
2 samplers x 1,430 steps x 1,000 digits = 2.9 million evaluations (each sampler-step a few ms
per image on a laptop CPU: about 1-2 hours; "ode" adds half as much again). Run it on an
otherwise idle machine: torch uses every core, and a second busy process on a 2-core
machine makes every step many times slower.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffusion_course.metrics import (classify, evaluate_samples, frechet_floor, judge_real,
                                      load_or_train_classifier)
from diffusion_course.mnist_ddpm import (HELD_OUT, benchmark_settings, data_spec, held_out_images, load_or_train_mnist_ddpm,
                                         train_config, training_images)
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value
from diffusion_course.sampling import sample
from diffusion_course.sde import sample_sde
from diffusion_course.settings import chapter_settings
from diffusion_course.training import autocast
from diffusion_course.unet import count_parameters

SAMPLERS = {"ddpm": "ancestral DDPM update, eta = 1 (sampling.sample)",
            "ddim": "DDIM, eta = 0 (sampling.sample)",
            "ode": "probability-flow ODE, Euler in rho = -log abar (sde.sample_sde, method='ode')"}


def generate(name, model, x_T, schedule, steps, kind, precision, device, generator):
    with autocast(precision, device):
        if name == "ode":
            out = sample_sde(model, x_T.shape, schedule, steps=steps, method="ode", kind=kind,
                             x_T=x_T, generator=generator, device=device)
        else:
            out = sample(model, x_T.shape, schedule, steps=steps, eta=1.0 if name == "ddpm" else 0.0,
                         kind=kind, x_T=x_T, generator=generator, device=device)
    return out.x0.float()


def summary(results: list[dict]) -> dict:
    """The issue's targets: DDIM at 50 steps >= 15x faster per image than 1000-step ancestral
    sampling, with an FD at most 25 % above the best setting measured."""
    by = {(r["sampler"], r["steps"]): r for r in results}
    out = {"best": min(results, key=lambda r: r["frechet"]) if results else None}
    if ("ddim", 50) in by and ("ddpm", 1000) in by and out["best"]:
        d50, a1000 = by["ddim", 50], by["ddpm", 1000]
        out["ddim50_speedup_vs_ddpm1000"] = a1000["seconds_per_image"] / d50["seconds_per_image"]
        out["ddim50_frechet_over_best"] = d50["frechet"] / out["best"]["frechet"]
        out["targets_met"] = {"speedup_at_least_15x": out["ddim50_speedup_vs_ddpm1000"] >= 15,
                              "frechet_within_25_percent_of_best": out["ddim50_frechet_over_best"] <= 1.25}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="profile of the chapter-05 model (ci, cpu, gpu)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-05 knob, e.g. train_steps=2000")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 250, 1000])
    p.add_argument("--samplers", nargs="+", default=["ddpm", "ddim"], choices=sorted(SAMPLERS))
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per setting (at most {HELD_OUT})")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/sampling_steps.json"))
    args = p.parse_args()
    if not 10 <= args.n_samples <= HELD_OUT:
        p.error(f"--n-samples must lie in 10..{HELD_OUT} (the held-out set's size)")

    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = benchmark_settings(args.profile, overrides)
    tcfg = train_config(cfg)
    schedule = tcfg.noise_schedule()
    bad = [s for s in args.steps if not 1 <= s <= schedule.T]
    if bad:
        p.error(f"--steps must lie in 1..{schedule.T}, got {bad}")

    model, info = load_or_train_mnist_ddpm(cfg)
    model = model.to(cfg.device).eval()
    # the chapter-06 judge of this profile (the same cached classifier chapters 06 and 07 use)
    cfg06 = chapter_settings("06", args.profile, train_split=cfg.train_split)
    n_train06 = min(cfg06.n_train, 10_000 - HELD_OUT) if cfg.train_split == "test" else cfg06.n_train
    train_x, train_y = training_images(cfg.train_split, n_train06)
    classifier, cinfo = load_or_train_classifier(train_x, train_y, data_spec(cfg.train_split, n_train06),
                                                 epochs=cfg06.classifier_epochs, seed=cfg06.seed)
    real, real_labels = held_out_images()
    cinfo.update(judge_real(classifier, real, real_labels))

    n = args.n_samples
    floor = frechet_floor(classifier, train_x, classify(classifier, real[:n])[0], n)  # one for every setting
    x_T = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed))
    generate("ddim", model, x_T[:8], schedule, 2, tcfg.kind, tcfg.precision, cfg.device, None)  # warm-up
    result = {
        "benchmark": "sampling_steps", "profile": cfg.profile, "settings": cfg.as_dict(),
        "data": data_spec(cfg.train_split, cfg.n_train), "model_parameters": count_parameters(model),
        "model_trained_now": info["trained_now"], "model_train_steps": info["steps"],
        "kind": tcfg.kind, "precision": tcfg.precision, "schedule": f"{tcfg.schedule}, T = {tcfg.T}",
        "samplers": {s: SAMPLERS[s] for s in args.samplers}, "clip_x0": True, "spacing": "uniform",
        "n_samples": n, "seed": args.seed, "sample_batch": args.sample_batch,
        "classifier": {"epochs": cfg06.classifier_epochs, "train_images": n_train06, **cinfo},
        "machine": machine_info(cfg.device),
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.samplers:
        for steps in args.steps:
            gen = torch.Generator().manual_seed(args.seed + 1)
            start = time.perf_counter()
            x = torch.cat([generate(name, model, chunk, schedule, steps, tcfg.kind, tcfg.precision,
                                    cfg.device, gen) for chunk in x_T.split(args.sample_batch)])
            seconds = time.perf_counter() - start
            rep = evaluate_samples(classifier, x.clamp(-1, 1), real[:n], floor=floor)
            row = {"sampler": name, "steps": steps, "seconds_per_image": seconds / n,
                   **{k: rep[k] for k in ("frechet", "frechet_floor", "frechet_floor_sd", "frechet_ratio",
                                          "confident_fraction", "min_class_fraction", "class_histogram")}}
            result["results"].append(row)
            result["summary"] = summary(result["results"])
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{name:5s} {steps:5d} steps: {1000 * row['seconds_per_image']:8.2f} ms/image  "
                  f"FD {row['frechet']:8.3f}  FD/floor {row['frechet_ratio']:6.2f}  "
                  f"confident {row['confident_fraction']:.1%}", flush=True)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
