"""Benchmark: quality against compute, controlled (the study behind the planned chapter 13).
Writes JSON. Its first part: training-time T.

    python benchmarks/quality_vs_compute.py                       # cpu profile
    python benchmarks/quality_vs_compute.py --profile ci --n-samples 50   # smoke test

Five variants of chapter 05's model (``quality_compute.T_VARIANTS``): the linear schedule
rescaled by 1000 / T at T = 100, 250, 500 and 1000, and the unrescaled linear schedule at
T = 100 (the trap), all with chapter 05's U-Net and recipe for the profile, the same seed, the
same training images and the same number of steps (``quality_compute.BUDGET``: 1,200 steps of
128 digits in ``cpu``). Each is scored by the course's judge (Frechet distance against the
10,000 test digits, the real-vs-real floor at the same N, confident fraction) at the same
number of sampling steps (100 in ``cpu``, respaced ancestral; T if smaller) and at its own T.
Trained variants are cached (``ch13-<schedule>-T<T>``); the JSON states the whole report card:
seed, schedules and T, sampler and steps, sample count and reference set, the judge,
hardware, precision, library versions.

Cost (``cpu``, 2-core machine): about 2.7 min of training per variant the first time, then
500 digits at 100 steps and at T steps: about 20 minutes in all. Run it on an otherwise idle
machine.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusion_course import quality_compute as qc
from diffusion_course.compute import library_versions
from diffusion_course.judge import load_judge
from diffusion_course.mnist_ddpm import N_TEST, make_unet
from diffusion_course.report import machine_info
from diffusion_course.unet import count_parameters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", choices=sorted(qc.BUDGET), help="the study's budget and judge")
    p.add_argument("--n-samples", type=int, default=None, help=f"digits per setting (10..{N_TEST}; default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--variants", nargs="+", default=list(qc.T_VARIANTS), choices=list(qc.T_VARIANTS),
                   metavar="NAME", help=f"which variants (default all: {', '.join(map(repr, qc.T_VARIANTS))})")
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/quality_vs_compute.json"))
    p.add_argument("--note", default=None, help='stored in the JSON, e.g. "machine idle"')
    args = p.parse_args()
    budget = qc.BUDGET[args.profile]
    n = args.n_samples or budget["n_eval"]
    if not 10 <= n <= N_TEST:
        p.error(f"--n-samples must lie in 10..{N_TEST} (the test split's size)")

    variants = {name: qc.T_VARIANTS[name] for name in args.variants}
    cfg = qc.study_settings(args.profile, train_steps=budget["train_steps"])
    judge = load_judge(args.profile)
    result = {
        "benchmark": "quality_vs_compute", "part": "training-time T", "profile": args.profile,
        "settings": cfg.as_dict(), "model_parameters": count_parameters(make_unet(cfg)),
        "train_images_seen": cfg.train_steps * cfg.batch_size,
        "report_card": {"seed": args.seed, "training_seed": cfg.seed,
                        "schedules": {k: {"schedule": s, "T": T} for k, (s, T) in variants.items()},
                        "sampler": "ancestral (eta = 1), respaced, x0 clipped", "common_steps": budget["common_steps"],
                        "n_samples": n, "reference_set": f"MNIST test[0:{N_TEST}]", "judge": judge.describe(),
                        "hardware": machine_info(cfg.device), "precision": qc.variant_config(cfg, "linear", 1000).precision,
                        "versions": library_versions()},
        "note": args.note,
    }
    rows = qc.t_study(cfg, judge, n, budget["common_steps"], args.seed, variants)
    result["results"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        a, b = r["at_common_steps"], r["at_T_steps"]
        print(f"{r['variant']:28s} abar_T {r['alpha_bar_T']:.2e}  {a['steps']:4d} steps: FD/floor {a['frechet_ratio']:6.2f} "
              f"({a['confident_fraction']:.1%})  {b['steps']:4d} steps: {b['frechet_ratio']:6.2f} "
              f"({b['confident_fraction']:.1%}, {1000 * b['seconds_per_image']:.1f} ms/digit)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
