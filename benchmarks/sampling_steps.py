"""Benchmark: sampling steps vs quality vs time for the chapter-05 MNIST model, per sampler.
Writes JSON.

    python benchmarks/sampling_steps.py                                  # cpu profile, full table
    python benchmarks/sampling_steps.py --samplers ddpm ddim ode         # + probability-flow ODE
    python benchmarks/sampling_steps.py --samplers ddim dpm2m dpm2m-sde --steps 10 20 50 1000 --seeds 3
    python benchmarks/sampling_steps.py --profile ci --n-samples 50 --steps 10 20   # smoke test

For each number of steps (default 10, 20, 50, 100, 250, 1000) and each sampler of
``recipes.sampler_sweep`` (ddpm: ancestral, ddim, ode: probability-flow ODE, sde: reverse SDE,
dpm2m: DPM-Solver++(2M) and dpm2m-sde its SDE version, on steps even in log-SNR; the
machinery chapter 13 reuses) it generates --n-samples digits from the same seeded x_T (with
--seeds K, from K seeded x_T in turn: the row then holds each seed's figures and their mean
and spread) and records seconds per image and the course judge's report card (``judge.load_judge``): Frechet distance on the judge's features
against all 10,000 digits of MNIST's test split, the real-vs-real floor at the same N (N random
training digits vs the same test split, mean of 10 seeded draws), FD / floor, confident
fraction and smallest class fraction. The JSON is rewritten after every setting, so an
interrupted run keeps what it measured.

The chapter-05 model is the reference shipped with the course (``--model reference``, the
default) or the student's own (``--model student``: chapter 05's settings for the profile with
the --set overrides, trained into the course's checkpoint cache first if absent, as chapter
05 does). The judge comes from the same cache.

Cost: one network evaluation per image and step, so the full default table is
2 samplers x 1,430 steps x 1,000 digits = 2.9 million evaluations; measured with the reference
model on an idle 2-core CPU (AMD EPYC): 0.33 ms per evaluation, about 14 minutes for ddpm and
ddim, about 21 with "ode" (the chapter-07 table). Run it on an
otherwise idle machine: torch uses every core, and a second busy process on a 2-core
machine makes every step many times slower.
"""
from __future__ import annotations

import json

from diffusion_course.course.cli import benchmark_parser, check_sample_count, knob_overrides, write_result
from diffusion_course.data.mnist import N_TEST
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.models.unet import count_parameters
from diffusion_course.recipes.mnist_ddpm import load_mnist_model
from diffusion_course.recipes.sampler_sweep import SAMPLERS, sweep
from diffusion_course.training.device import pick_device


def summary(results: list[dict]) -> dict:
    """The targets: DDIM at 50 steps >= 15x faster per image than 1000-step ancestral
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


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/sampling_steps.json")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 250, 1000])
    p.add_argument("--samplers", nargs="+", default=["ddpm", "ddim"], choices=sorted(SAMPLERS))
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per setting (10..{N_TEST})")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1,
                   help="starting-noise seeds per setting (--seed, --seed + 1, ...): FD mean and spread")
    args = p.parse_args(argv)
    check_sample_count(p, args.n_samples)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    if not all(1 <= s <= 1000 for s in args.steps):     # every chapter-05 model has T = 1000
        p.error(f"--steps must lie in 1..1000, got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    model, info = load_mnist_model(args.profile, args.model, **knob_overrides(args))  # overrides: student only
    tcfg, device = info["train_config"], pick_device()
    judge = load_judge(args.profile)
    seeds = list(range(args.seed, args.seed + args.seeds))
    result = {
        "benchmark": "sampling_steps", "profile": judge.profile, "model": info["source"],
        "settings": info["settings"], "data": info["data"], "model_parameters": count_parameters(model),
        "model_trained_now": info["trained_now"], "model_train_steps": info["steps"],
        "kind": tcfg.kind, "precision": tcfg.precision, "schedule": f"{tcfg.schedule}, T = {tcfg.T}",
        "samplers": {s: SAMPLERS[s] for s in args.samplers}, "clip_x0": True,
        "spacing": "uniform in t; dpm2m and dpm2m-sde: even in log-SNR",
        "n_samples": args.n_samples, "seed": args.seed, "seeds": seeds, "sample_batch": args.sample_batch,
        "judge": judge.describe(), "results": [],
    }
    for row in sweep(model, tcfg, judge, args.samplers, args.steps, args.n_samples, seeds, device,
                     args.sample_batch):
        result["results"].append(row)
        result["summary"] = summary(result["results"])
        write_result(args, result, device)  # an interrupted run keeps its rows
        print(f"{row['sampler']:5s} {row['steps']:5d} steps: {1000 * row['seconds_per_image']:8.2f} ms/image  "
              f"FD {row['frechet']:8.3f}  FD/floor {row['frechet_ratio']:6.2f}  "
              f"confident {row['confident_fraction']:.1%}", flush=True)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
