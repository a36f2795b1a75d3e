"""Benchmark: quality at a budget of network calls, for every sampler of the reference MNIST model
and its distilled students. Writes JSON.

    python benchmarks/few_step_sampling.py                      # cpu: 1,000 digits, 3 seeds, everything
    python benchmarks/few_step_sampling.py --distilled student  # students trained now (cached) instead of shipped
    python benchmarks/few_step_sampling.py --profile ci --n-samples 50 --seeds 1 --calls 1 2 \\
        --stochastic-calls 4 --reference-steps 20 --tolerances 0.1     # smoke test

Every setting starts from the same seeded x_T (one per seed) and is scored by the course's judge
(``judge.load_judge``: Frechet distance on the judge's features against MNIST's test split, the
real-vs-real floor at the same N, FD / floor, confident fraction, smallest class fraction):

- the teacher (the reference model, ``recipes.mnist_ddpm``) with DDIM, DPM-Solver++(2M) on three
  grids (even in log-SNR, uniform in t, EDM's rho = 7) at each of --calls, and EDM's Heun at the
  odd number of calls at or just below each (its n steps cost 2n - 1); the stochastic samplers (ancestral DDPM and DPM-Solver++(2M) SDE) at --calls and
  --stochastic-calls; DDIM at --reference-steps, the converged probability-flow ODE every
  deterministic sampler approaches;
- the adaptive 2M solver (``sampling.sample_adaptive``) at each of --tolerances, with the calls it
  spent;
- the progressive-distillation students at their own budgets and the consistency model at 1, 2,
  4 and 8 calls (``recipes.few_step``), shipped with the course (``--distilled reference``) or
  trained now by the profile's recipe; their training cost (steps, seconds) is recorded.

Cost, measured on an idle 2-core CPU: about 0.33 ms per network call per digit, 1.5 million calls
per seed, about 27 minutes for the whole default run. The JSON is rewritten after every setting.
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from diffusion_course.course.cli import benchmark_parser, check_sample_count, write_result
from diffusion_course.data.mnist import N_TEST
from diffusion_course.diffusion.sampling import sample_adaptive
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.recipes.few_step import PROGRESSIVE_STUDENTS, SHIPPED, distilled_model, generate_at, supports
from diffusion_course.recipes.mnist_ddpm import load_mnist_model
from diffusion_course.recipes.sampler_sweep import AVERAGED_KEYS, REPORT_KEYS, average_over_seeds, starting_noise
from diffusion_course.training.device import autocast, pick_device

DETERMINISTIC = ("ddim", "dpm2m", "dpm2m-uniform", "dpm2m-karras", "heun")
STOCHASTIC = ("ddpm", "dpm2m-sde")


def load_students(source: str, profile: str) -> tuple[dict, dict]:
    """({"pd": {steps: model}, "cd": model}, {name: training cost}) from the shipped files or trained now."""
    names = sorted(SHIPPED) if source == "reference" else ["mnist-cd"] + [f"mnist-pd-{n}" for n in PROGRESSIVE_STUDENTS]
    students, cost = {"pd": {}}, {}
    for name in names:
        net, info = distilled_model(name, source, profile, progress=False)
        if name == "mnist-cd":
            students["cd"] = net
        else:
            students["pd"][int(name.rsplit("-", 1)[1])] = net
        cost[name] = {"train_steps": info["steps"], "train_seconds": info["seconds"]}
    return students, cost


def parse(argv):
    p = benchmark_parser(__doc__, "build/benchmarks/few_step_sampling.json", model=None, knobs=False)
    p.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 8, 10, 20])
    p.add_argument("--stochastic-calls", type=int, nargs="+", default=[25, 50])
    p.add_argument("--reference-steps", type=int, default=1000, help="DDIM steps of the converged-ODE reference")
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.1, 0.05, 0.02, 0.01])
    p.add_argument("--distilled", choices=("reference", "student"), default="reference",
                   help="shipped students, or students trained now by the profile's recipe")
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per setting (10..{N_TEST})")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_sample_count(p, args.n_samples)
    if args.seeds < 1 or not all(1 <= c <= 1000 for c in args.calls + args.stochastic_calls + [args.reference_steps]):
        p.error("--seeds must be >= 1 and every number of calls in 1..1000")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    device = pick_device()
    teacher, info = load_mnist_model("cpu", "reference")
    tcfg = info["train_config"]
    judge = load_judge(args.profile)
    students, cost = load_students(args.distilled, args.profile)
    seeds = list(range(args.seed, args.seed + args.seeds))
    x_Ts = {s: starting_noise(args.n_samples, s) for s in seeds}
    result = {"benchmark": "few_step_sampling", "profile": judge.profile, "teacher": "reference mnist-ddpm",
              "distilled": args.distilled, "distillation_cost": cost, "n_samples": args.n_samples, "seeds": seeds,
              "kind": tcfg.kind, "precision": tcfg.precision, "judge": judge.describe(), "results": []}

    def score(method: str, budget, run) -> None:
        by_seed = []
        for s in seeds:
            start = time.perf_counter()
            x, calls = run(x_Ts[s], torch.Generator().manual_seed(s + 1))
            seconds = time.perf_counter() - start
            rep = judge.evaluate(x)
            by_seed.append({"seed": s, "calls": calls, "seconds_per_image": seconds / len(x),
                            **{k: rep[k] for k in REPORT_KEYS}})
        row = {"method": method, "budget": budget,
               **average_over_seeds(by_seed, AVERAGED_KEYS + ("calls",), "frechet_ratio",
                                    ("seed", "calls", "frechet", "frechet_ratio", "confident_fraction",
                                     "min_class_fraction"))}
        result["results"].append(row)
        write_result(args, result, device)
        print(f"{method:14s} {str(budget):>6s}: {row['calls']:6.1f} calls  FD/floor {row['frechet_ratio']:6.2f} "
              f"(sd {row.get('frechet_ratio_sd', 0):.2f})  confident {row['confident_fraction']:.1%}  "
              f"{1000 * row['seconds_per_image']:.2f} ms/image", flush=True)

    def fixed(method, calls):
        def run(x_T, g):
            return generate_at(method, calls, x_T, teacher, tcfg, students, g, device), calls
        return run

    def adaptive(tol):
        def run(x_T, g):
            xs, calls = [], []
            for chunk in x_T.split(250):
                with autocast(tcfg.precision, device):
                    traj = sample_adaptive(teacher, tuple(chunk.shape), tcfg.noise_schedule(), tol, kind=tcfg.kind,
                                           x_T=chunk, device=device)
                xs.append(traj.x0.float())
                calls.append(len(traj.steps))
            return torch.cat(xs), statistics.mean(calls)
        return run

    score("ddim", args.reference_steps, fixed("ddim", args.reference_steps))     # the converged ODE
    for method in ("pd", "cd"):
        for calls in args.calls:
            if supports(method, calls, students):
                score(method, calls, fixed(method, calls))
    for method in DETERMINISTIC + STOCHASTIC:
        budgets = args.calls + (args.stochastic_calls if method in STOCHASTIC else [])
        if method == "heun":                       # 2n - 1 calls: the odd budget at or just below each
            budgets = sorted({c - 1 + c % 2 for c in budgets if c >= 3})
        for calls in budgets:
            if supports(method, calls, students):
                score(method, calls, fixed(method, calls))
    for tol in args.tolerances:
        score("adaptive", tol, adaptive(tol))
    result["summary"] = summary(result["results"], args.reference_steps)
    write_result(args, result, device)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")


def summary(rows: list[dict], reference_steps: int) -> dict:
    """The targets, against the converged ODE (DDIM at --reference-steps) of the same run."""
    by = {(r["method"], r["budget"]): r for r in rows}
    ode = by[("ddim", reference_steps)]["frechet_ratio"]
    rel = lambda m, b: by[(m, b)]["frechet_ratio"] / ode if (m, b) in by else None
    out = {"ode_frechet_ratio": ode,
           "dpm2m_20_over_ode": rel("dpm2m", 20), "dpm2m_10_over_ode": rel("dpm2m", 10),
           "dpm2m_sde_50_frechet_ratio": by.get(("dpm2m-sde", 50), {}).get("frechet_ratio"),
           "dpm2m_sde_25_frechet_ratio": by.get(("dpm2m-sde", 25), {}).get("frechet_ratio"),
           "pd_4_over_ode": rel("pd", 4), "pd_1_over_ode": rel("pd", 1),
           "cd_4_over_ode": rel("cd", 4), "cd_1_over_ode": rel("cd", 1)}
    checks = {"dpm2m_20_within_10pct": (out["dpm2m_20_over_ode"], 1.10), "dpm2m_10_within_25pct": (out["dpm2m_10_over_ode"], 1.25),
              "sde_50_at_most_1.5x_floor": (out["dpm2m_sde_50_frechet_ratio"], 1.5),
              "distilled_4_at_most_1.25x_ode": (min(v for v in (out["pd_4_over_ode"], out["cd_4_over_ode"], 99) if v), 1.25),
              "distilled_1_at_most_2.5x_ode": (min(v for v in (out["pd_1_over_ode"], out["cd_1_over_ode"], 99) if v), 2.5)}
    out["targets_met"] = {k: v is not None and v <= limit for k, (v, limit) in checks.items()}
    return out


if __name__ == "__main__":
    main()
