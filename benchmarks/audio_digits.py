"""Benchmark: chapter 11's spoken digits from the shipped reference model and from the student
model (the chapter's recipe trained for a profile). Each is scored with 50-step DDIM and
200-step ancestral sampling at its guidance weight by the spoken-digit judge
(``audio_diffusion.AudioJudge``): accuracy of the digit asked for, the Frechet distance of
classifier features against the held-out clips (takes 0-4) with the real-vs-real floor at
the same N (random training clips, mean of 10 draws), and the burst count (separated voiced
segments per clip) beside the real clips'; with training, loading and sampling times and
the targets below checked. ``--diagnose`` runs the measured tests of why samples
come out as separate bursts; ``--compare`` trains every front end for ``compare_steps``
steps (plain v-output U-Net and the x0 head) and scores each the same way. Writes JSON.

    python benchmarks/audio_digits.py --profile cpu                   # reference + student
    python benchmarks/audio_digits.py --profile cpu --diagnose --reference-run --skip-main \
        --out build/benchmarks/audio_diagnosis.json
    python benchmarks/audio_digits.py --profile cpu --compare         # + the front-end table
    python benchmarks/audio_digits.py --profile ci --fresh            # quick, throw-away cache

Models go to the course's checkpoint cache (so the chapter then loads them instead of
training); ``--fresh`` trains in a temporary cache instead. Run it alone on the machine:
times in the JSON are wall times.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import torch

from diffusion_course.course.cli import benchmark_parser, knob_overrides, write_result
from diffusion_course.course.settings import MODELS, chapter_settings
from diffusion_course.data.front_ends import FRAMES, FRONT_ENDS, FrontEnd
from diffusion_course.data.fsdd import load_fsdd
from diffusion_course.evaluation.judge import FLOOR_DRAWS
from diffusion_course.evaluation.speech import burst_summary, energy_centre, load_audio_judge
from diffusion_course.models.unet import count_parameters
from diffusion_course.recipes.spoken_digits import (generate, load_audio_model, load_or_train_audio,
                                                    receptive_field, reference_settings, snapshot_steps,
                                                    train_config)
from diffusion_course.training.cache import temporary_cache

# What the chapter's models must reach in the cpu profile (2-core CPU): DDIM samples at the model's guidance
TARGETS = {"reference": {"min_accuracy": 0.90, "max_frechet_ratio": 5.0, "max_burst_gap": 0.10},
           "student": {"min_accuracy": 0.85, "max_frechet_ratio": 15.0, "max_train_minutes": 15.0}}


def score(model, cfg, judge, guidance: float, n_per_digit: int, steps: int, eta: float, seed: int,
          front_end: str | None = None, precision: str | None = None) -> dict:
    """Generate ``n_per_digit`` clips of every digit (Griffin-Lim and device from ``cfg``; the
    front end and precision default to ``cfg``'s) and score them with the judge."""
    labels = torch.arange(10).repeat_interleave(n_per_digit)
    front_end = front_end or cfg.front_end
    precision = precision or train_config(cfg).precision
    start = time.perf_counter()
    waves, _ = generate(model, front_end, labels, steps=steps, eta=eta, guidance=guidance,
                        seed=seed, precision=precision, gl_iters=cfg.gl_iters, device=cfg.device)
    seconds = time.perf_counter() - start
    return {"sampler": {"steps": steps, "eta": eta, "guidance": guidance,
                        "clip_x0": FrontEnd(front_end).clip_x0, "precision": precision},
            "sample_seconds_per_clip": round(seconds / len(labels), 4), **judge.evaluate(waves, labels)}


def score_weights(model, cfg, judge, labels, weights, name: str) -> dict:
    """The model's DDIM samples at each guidance weight: the judge's report, bursts, placement."""
    rows = {}
    for w in weights:
        waves, xs = generate(model, cfg.front_end, labels, steps=cfg.ddim_steps, guidance=w, seed=cfg.seed + 1,
                             precision=train_config(cfg).precision, gl_iters=cfg.gl_iters, device=cfg.device)
        c = energy_centre(waves)
        r = rows[str(w)] = {
            **{k: v for k, v in judge.evaluate(waves, labels).items() if k != "per_digit_accuracy"},
            "energy_centre_mean_s": c.mean().item(), "energy_centre_sd_s": c.std().item(),
            "logmag_fraction_at_floor": fraction_at_floor(xs)}
        print(f"{name}, w = {w}: accuracy {r['accuracy']:.1%}, FD {r['frechet']:.1f} "
              f"(floor at N {r['frechet_floor']:.2f}), bursts {r['bursts']['mean']:.2f} "
              f"(one {r['bursts']['one']:.0%}), centre {r['energy_centre_mean_s']:.3f} s", flush=True)
    return rows


def fraction_at_floor(x: torch.Tensor) -> float:
    """Share of log-magnitude values at the front end's silence floor (-1, within 0.01)."""
    return (x <= -0.99).double().mean().item()


def diagnose(cfg, judge, n_per_digit: int, weights, long_steps: int | None = None,
             reference_run: bool = False) -> dict:
    """The measured tests of why samples come out as separate bursts: the data's burst
    count and placement, the logmag front end's silence floor, and the chapter's recipe
    trained with and without positional information, each model's reach (receptive field)
    and its samples at several guidance weights (accuracy, FD against the floor at the same
    N, bursts, where the energy sits). ``long_steps``: EMA snapshots of one longer run of the
    chapter's recipe. ``reference_run``: the reference recipe's snapshots, trained with and
    without positions (about 20 minutes each when not cached)."""
    fe = FrontEnd(cfg.front_end, cfg.gl_iters)
    centre = energy_centre(judge.test_x)
    encoded = fe.encode(judge.pool)
    out = {"real": {"bursts": burst_summary(judge.test_x), "energy_centre_mean_s": centre.mean().item(),
                    "energy_centre_sd_s": centre.std().item(),
                    "logmag_fraction_at_floor": fraction_at_floor(encoded),
                    "logmag_mean": encoded.mean().item()}}
    labels = torch.arange(10).repeat_interleave(n_per_digit)
    for name, positions in (("no positions (the chapter's U-Net)", False), ("positions", True)):
        model, info = load_or_train_audio(cfg, positions=positions)
        out[name] = {"train_seconds": round(info["seconds"], 1), "train_steps": info["steps"],
                     "receptive_field": receptive_field(model, fe.channels, FRAMES),
                     "by_guidance": score_weights(model, cfg, judge, labels, weights, name)}
    runs = []
    if long_steps:  # guidance against training length: EMA snapshots of one longer run
        keep = tuple(sorted({long_steps // 4, long_steps // 2, long_steps}))
        runs.append((f"{long_steps} steps", cfg, False, long_steps, keep))
    if reference_run:
        ref = reference_settings()
        for positions in (True, False):
            runs.append((f"reference recipe, {'with' if positions else 'no'} positions", ref, positions,
                         None, snapshot_steps(ref.train_steps)))
    for name, run_cfg, positions, steps, keep in runs:
        model, info = load_or_train_audio(run_cfg, train_steps=steps, positions=positions, keep_ema_at=keep)
        out[name] = {"train_seconds": round(info["seconds"], 1), "train_steps": info["steps"],
                     "ema_decay": run_cfg.ema_decay, "receptive_field": receptive_field(model, fe.channels, FRAMES),
                     "snapshots": {}}
        for step in keep:
            model.load_state_dict(info["ema_history"][step])
            out[name]["snapshots"][str(step)] = score_weights(model, cfg, judge, labels, weights,
                                                              f"{name} at step {step}")
    return out


def model_record(model, info: dict, load_seconds: float) -> dict:
    """What a scored model is: its source, size, recipe, and the cost of training and loading it."""
    return {"source": info["source"], "parameters": count_parameters(model), "unet_config": model.config,
            "train_config": asdict(info["train_config"]), "guidance": info["guidance"],
            "trained_now": info["trained_now"], "train_steps_done": info["steps"],
            "train_complete": info["complete"], "train_seconds": round(info["seconds"], 1),
            "train_command": info.get("command"), "data": info.get("data"),
            "load_seconds": round(load_seconds, 2)}


def check_targets(name: str, row: dict, real_bursts: float) -> dict:
    """The targets (``TARGETS``) for ``name`` against its DDIM scores: each (value, target, met)."""
    t, ddim = TARGETS[name], row["ddim"]
    checks = {"accuracy": (ddim["accuracy"], t["min_accuracy"], ddim["accuracy"] >= t["min_accuracy"]),
              "frechet_ratio": (ddim["frechet_ratio"], t["max_frechet_ratio"],
                                ddim["frechet_ratio"] <= t["max_frechet_ratio"])}
    if "max_burst_gap" in t:
        gap = abs(ddim["bursts"]["mean"] - real_bursts) / real_bursts
        checks["burst_gap"] = (gap, t["max_burst_gap"], gap <= t["max_burst_gap"])
    if "max_train_minutes" in t:
        minutes = row["model"]["train_seconds"] / 60
        checks["train_minutes"] = (minutes, t["max_train_minutes"], minutes <= t["max_train_minutes"])
    return {k: {"value": v, "target": target, "met": met} for k, (v, target, met) in checks.items()}


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/audio_digits.json", model=None,
                         profile_help="profile of the judge and of the student's model",
                         knob_help="override a chapter-11 knob of the student model, e.g. train_steps=800")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to score")
    p.add_argument("--minutes", type=float, default=None, help="cap on the student's training time")
    p.add_argument("--compare", action="store_true", help="also train and score every front end "
                   "for compare_steps steps")
    p.add_argument("--n-per-digit", type=int, default=None,
                   help="clips per digit for 50-step DDIM (default: the profile's n_per_digit)")
    p.add_argument("--ancestral-per-digit", type=int, default=None,
                   help="clips per digit for the ancestral sampler (default: half of --n-per-digit)")
    p.add_argument("--skip-main", action="store_true", help="only the comparison (or the diagnosis)")
    p.add_argument("--diagnose", action="store_true", help="why samples come out as bursts: positions, reach, "
                   "guidance weights, bursts, placement")
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0],
                   help="guidance weights of --diagnose")
    p.add_argument("--long-steps", type=int, default=None,
                   help="--diagnose also trains the chapter's recipe this long and scores EMA snapshots at "
                        "1/4, 1/2 and all of it")
    p.add_argument("--reference-run", action="store_true",
                   help="--diagnose also scores the reference recipe's EMA snapshots, with and without positions")
    p.add_argument("--fresh", action="store_true", help="train in a temporary cache")
    args = p.parse_args(argv)
    for flag, value in (("--n-per-digit", args.n_per_digit), ("--ancestral-per-digit", args.ancestral_per_digit)):
        if value is not None and not 1 <= value <= 100:
            p.error(f"{flag} must lie in 1..100, got {value}")
    return args


def judge_record(judge, cfg) -> dict:
    """The judge's classifier, its accuracy on the held-out clips, and after a Griffin-Lim
    round trip through the logmag front end (what the best generated clip can sound like)."""
    test = load_fsdd("test")
    fe = FrontEnd("logmag", cfg.gl_iters)
    _, pred, _ = judge.classify(fe.decode(fe.encode(test.audio), torch.Generator().manual_seed(0)))
    return {**judge.info, "held_out_accuracy": judge.test_accuracy,
            "held_out_accuracy_after_griffin_lim": (pred == test.labels).double().mean().item()}


def score_models(args, cfg, judge, overrides: dict, real_bursts: float) -> dict:
    """Each model of --models: its record, DDIM and ancestral samples scored, its targets."""
    n_ddim = args.n_per_digit or cfg.n_per_digit
    n_anc = args.ancestral_per_digit or max(1, n_ddim // 2)
    out = {}
    for name in ([] if args.skip_main else args.models):
        start = time.perf_counter()
        model, info = load_audio_model(args.profile, name, max_seconds=None if args.minutes is None
                                       else 60 * args.minutes, **(overrides if name == "student" else {}))
        row = out[name] = {"model": model_record(model, info, time.perf_counter() - start)}
        for sampler, n, steps, eta, seed in (("ddim", n_ddim, cfg.ddim_steps, 0.0, cfg.seed + 1),
                                             ("ancestral", n_anc, cfg.ancestral_steps, 1.0, cfg.seed + 2)):
            row[sampler] = score(model, cfg, judge, info["guidance"], n, steps, eta, seed,
                                 precision=info["train_config"].precision)
            print(name, sampler, json.dumps({k: v for k, v in row[sampler].items() if k != "per_digit_accuracy"}))
        row["targets"] = check_targets(name, row, real_bursts)
        print(name, "targets", json.dumps(row["targets"]))
    return out


def compare_front_ends(cfg, judge, n_per_digit: int) -> dict:
    """Every front end, with the plain v-output U-Net and with the x0 head, trained for
    ``compare_steps`` and scored the same way; the best by accuracy, then the Frechet distance
    (at small budgets several can sit at chance)."""
    table = {}
    for x0_head in (False, True):
        for name in FRONT_ENDS:
            row_name = name + (", x0 head" if x0_head else "")
            model, info = load_or_train_audio(cfg, name, train_steps=cfg.compare_steps, v_from_x0=x0_head)
            table[row_name] = {"parameters": count_parameters(model), "train_steps": info["steps"],
                               "train_seconds": round(info["seconds"], 1),
                               "final_loss_mean_last_50": sum(info["losses"][-50:]) / len(info["losses"][-50:]),
                               **score(model, cfg, judge, cfg.guidance, n_per_digit, cfg.ddim_steps,
                                       0.0, cfg.seed + 1, front_end=name)}
            print(row_name, json.dumps(table[row_name]))
    best = max(table, key=lambda k: (round(table[k]["accuracy"], 2), -table[k]["frechet"]))
    return {"front_ends": table, "best_front_end": best}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    overrides = knob_overrides(args)
    cfg = chapter_settings("11", args.profile, **overrides)
    n_per_digit = args.n_per_digit or cfg.n_per_digit
    with temporary_cache(enabled=args.fresh):
        judge = load_audio_judge(cfg.classifier_epochs, cfg.seed)
        cinfo = judge_record(judge, cfg)
        print(json.dumps(cinfo))
        real_bursts = burst_summary(judge.test_x)
        result = {"benchmark": "audio_digits", "profile": cfg.profile, "settings": cfg.as_dict(),
                  "data": {"train": "FSDD v1.0.10 takes 5-49 (2,700 clips)",
                           "held_out": "takes 0-4 (300 clips)",
                           "floor": f"N random training clips vs the held-out clips, mean of {FLOOR_DRAWS} draws"},
                  "classifier": cinfo, "real": {"bursts": real_bursts}, "targets": TARGETS,
                  **score_models(args, cfg, judge, overrides, real_bursts["mean"])}
        if args.diagnose:
            result["diagnosis"] = diagnose(cfg, judge, n_per_digit, args.weights, args.long_steps,
                                           args.reference_run)
        if args.compare:
            result.update(compare_front_ends(cfg, judge, n_per_digit))
    print(f"wrote {write_result(args, result, cfg.device)}")


if __name__ == "__main__":
    main()
