"""Benchmark: quality against compute, controlled (chapter 13's study). Writes JSON.

    python benchmarks/quality_vs_compute.py                       # cpu profile, every part
    python benchmarks/quality_vs_compute.py --parts t_study --variants T=100 T=1000
    python benchmarks/quality_vs_compute.py --profile ci --n-eval 50   # smoke test

The parts (``diffusion_course.quality_compute``, the code chapter 13 runs), every diffusion
model being chapter 05's U-Net and recipe trained for chapter 13's ``train_steps`` (1,200
steps of 128 digits in ``cpu``), every score the course's judge against all 10,000 test
digits with the real-vs-real floor at the same N (``n_eval``, 500 in ``cpu``):

    t_study      scaled_linear T = 100 / 250 / 500 / 1000 and the unrescaled linear T = 100 trap
                 (gpu adds T = 2000), at ``common_steps`` ancestral steps and at T steps
    seed_spread  the baseline variant (T = 1000) from ``n_seeds`` starting-noise seeds: the noise of
                 one score, with the 95 % interval of its standard deviation (chi-square)
    width_study  base widths 8 / 16 / 32 / 64 (gpu 16 ... 128): parameters, FLOPs per call
                 (torch's FlopCounterMode), seconds per digit, peak memory sampling and training,
                 quality at equal images seen and at equal wall time (step counts from the
                 measured seconds per training step, cached per machine)
    steps_study  the chapter-05 model (``--model``, the shipped reference by default) at
                 10 ... 250 steps, ancestral and DDIM (``sampler_sweep``, chapter 07's machinery);
                 trained on another budget (the shipped one: 24,000 steps), so kept off the front
    gan_study    a DCGAN trained for the baseline variant's measured training time: FD, generation
                 time, class histogram, nearest training digits

and then every configuration as (seconds per digit, FD/floor), with the Pareto front of the
models trained on the study's budget, and the three claims restated with these numbers. Trained models are cached
(``ch13-*``); the JSON holds the report card (seed, schedules and T, sampler and steps, sample
count and reference set, the judge, hardware, precision, library versions).

Cost (``cpu``, an idle 2-core laptop-class CPU): training every variant the first time takes
about 42 minutes (five T variants, six more width models, the GAN); with them cached the study
takes about as long as chapter 13's ``cpu`` run. Run it on an otherwise idle machine.
"""
from __future__ import annotations

from diffusion_course.course.cli import benchmark_parser, check_sample_count, write_result
from diffusion_course.data.mnist import N_TEST
from diffusion_course.evaluation.compute import resident_peak_mib
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.recipes import quality_compute as qc


def printable(study: dict) -> dict:
    """The study without its sample tensors (the chapter shows them; the JSON holds numbers)."""
    out = dict(study)
    if "gan_study" in out:
        out["gan_study"] = {k: v for k, v in out["gan_study"].items() if k != "samples"}
    return out


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/quality_vs_compute.json", model=None, knobs=False,
                         profile_help="the study's budget and judge")
    p.add_argument("--parts", nargs="+", default=list(qc.PARTS), choices=qc.PARTS, metavar="PART",
                   help=f"which parts (default all: {', '.join(qc.PARTS)})")
    p.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                   help="T variants of t_study (default: the profile's, e.g. 'T=100' 'T=100, linear not rescaled')")
    p.add_argument("--n-eval", type=int, default=None, help=f"digits per setting (10..{N_TEST}; default: the profile's)")
    p.add_argument("--model", choices=("reference", "student"), default=None, help="chapter-05 model of steps_study")
    p.add_argument("--seed", type=int, default=None, help="seed of the starting noise")
    args = p.parse_args(argv)
    if args.profile not in ("ci", "cpu", "gpu"):
        p.error(f"--profile must be one of ci, cpu, gpu, got {args.profile!r}")
    check_sample_count(p, args.n_eval, "--n-eval")
    known = qc.t_variants(args.profile)
    if args.variants and set(args.variants) - set(known):
        p.error(f"unknown variants {sorted(set(args.variants) - set(known))}; allowed: {', '.join(known)}")
    args.variants = {name: known[name] for name in args.variants} if args.variants else None
    return args


def print_study(study: dict) -> None:
    """One line per measured setting, and the verdict on each claim."""
    for r in study.get("t_study", []):
        a, b = r["at_common_steps"], r["at_T_steps"]
        print(f"{r['variant']:28s} abar_T {r['alpha_bar_T']:.2e}  {a['steps']:4d} steps: FD/floor "
              f"{a['frechet_ratio']:6.2f}  {b['steps']:4d} steps: {b['frechet_ratio']:6.2f} "
              f"({1000 * b['seconds_per_image']:.1f} ms/digit)")
    if "seed_spread" in study:
        s = study["seed_spread"]
        lo, hi = s["frechet_ratio_sd_95"]
        print(f"seed spread at {s['steps']} steps: FD/floor {s['frechet_ratio_mean']:.2f} +- {s['frechet_ratio_sd']:.2f} "
              f"(sd's 95 % interval {lo:.2f} ... {hi:.2f}, {len(s['seeds'])} seeds)")
    for r in study.get("width_study", []):
        print(f"width {r['width']:3d}: {r['parameters']:9,d} parameters, {r['flops_per_call'] / 1e6:8.1f} MFLOP/call, "
              f"{1000 * r['seconds_per_image']:6.1f} ms/digit, sampling {r['sample_peak_mib']:6.0f} MiB, "
              f"training {r['train_peak_mib']:6.0f} MiB | FD/floor equal images "
              f"{r['equal_images']['frechet_ratio']:6.2f}, equal time {r['equal_time']['frechet_ratio']:6.2f} "
              f"({r['equal_time']['train_steps']} steps)")
    for r in study.get("steps_study", []):
        print(f"{r['sampler']:5s} {r['steps']:5d} steps: {1000 * r['seconds_per_image']:7.1f} ms/digit  "
              f"FD/floor {r['frechet_ratio']:6.2f}")
    for name in ("diffusion", "gan") if "gan_study" in study else ():
        r = study["gan_study"][name]
        print(f"{name:9s}: FD/floor {r['frechet_ratio']:6.2f}, {1000 * r['seconds_per_image']:.2f} ms/digit, "
              f"trained {r['train_seconds']:.0f} s ({r['train_steps']} steps), classes "
              f"{r['min_class_fraction']:.1%}-{r['max_class_fraction']:.1%}")
    for claim, c in study.get("claims", {}).items():
        print(f"claim '{claim}': " + "; ".join(f"{k} {v}" for k, v in c.items() if k.startswith("verdict")))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    cfg = qc.settings(args.profile, n_eval=args.n_eval, model=args.model, seed=args.seed)
    study = qc.run_study(cfg, load_judge(args.profile), args.parts, args.variants)
    path = write_result(args, {"benchmark": "quality_vs_compute", "profile": args.profile, "parts": args.parts,
                               **printable(study), "process_resident_peak_mib": resident_peak_mib()},
                        cfg.device)
    print_study(study)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
