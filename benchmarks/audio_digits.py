"""Benchmark: the chapter-11 audio v-diffusion model on spoken digits. Trains (or loads) the
chapter's model for a profile, generates class-conditional digits with 50-step DDIM and
200-step ancestral sampling, and scores them with the spoken-digit classifier: accuracy of
the digit asked for, and the Frechet distance of classifier features against the held-out
clips (takes 0-4) with the real-vs-real floor (300 training clips vs the same held-out
clips). ``--compare`` also trains every front end for the same number of steps
(``compare_steps``) and scores each the same way, once with the plain v-output U-Net
and once with the chapter's x0-estimating head. Writes JSON.

    python benchmarks/audio_digits.py --profile cpu --out build/benchmarks/audio_digits.json
    python benchmarks/audio_digits.py --profile cpu --compare        # + the front-end table
    python benchmarks/audio_digits.py --profile ci --fresh            # quick, throw-away cache

Models go to the course's checkpoint cache (so the chapter then loads them instead of
training); ``--fresh`` trains in a temporary cache instead. Run it with one torch thread
per process on a shared machine (OMP_NUM_THREADS=1): times in the JSON are wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from diffusion_course.audio_diffusion import (FRAMES, FRONT_ENDS, FrontEnd, burst_summary, classify,
                                              data_spec, energy_centre, evaluate_audio, generate,
                                              load_or_train_audio, load_or_train_classifier,
                                              receptive_field, train_config)
from diffusion_course.fsdd import load_fsdd
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value
from diffusion_course.settings import chapter_settings
from diffusion_course.unet import count_parameters


def score(model, front_end: str, cfg, classifier, real, floor, n_per_digit: int, steps: int,
          eta: float, seed: int) -> dict:
    labels = torch.arange(10).repeat_interleave(n_per_digit)
    precision = train_config(cfg).precision
    start = time.perf_counter()
    waves, _ = generate(model, front_end, labels, steps=steps, eta=eta, guidance=cfg.guidance,
                        seed=seed, precision=precision, gl_iters=cfg.gl_iters, device=cfg.device)
    seconds = time.perf_counter() - start
    out = {"sampler": {"steps": steps, "eta": eta, "guidance": cfg.guidance,
                       "clip_x0": FrontEnd(front_end).clip_x0, "precision": precision},
           "sample_seconds_per_clip": round(seconds / len(labels), 4),
           **evaluate_audio(classifier, waves, labels, real, floor)}
    return out


def score_weights(model, cfg, classifier, real, pool, labels, weights, name: str) -> dict:
    """The model's DDIM samples at each guidance weight: the judge's report, bursts, placement."""
    rows = {}
    for w in weights:
        waves, xs = generate(model, cfg.front_end, labels, steps=cfg.ddim_steps, guidance=w, seed=cfg.seed + 1,
                             precision=train_config(cfg).precision, gl_iters=cfg.gl_iters, device=cfg.device)
        c = energy_centre(waves)
        r = rows[str(w)] = {
            **{k: v for k, v in evaluate_audio(classifier, waves, labels, real, floor_pool=pool).items()
               if k != "per_digit_accuracy"},
            "energy_centre_mean_s": c.mean().item(), "energy_centre_sd_s": c.std().item(),
            "logmag_fraction_at_floor": (xs <= -0.99).double().mean().item()}
        print(f"{name}, w = {w}: accuracy {r['accuracy']:.1%}, FD {r['frechet']:.1f} "
              f"(floor at N {r['frechet_floor_same_n']:.2f}), bursts {r['bursts']['mean']:.2f} "
              f"(one {r['bursts']['one']:.0%}), centre {r['energy_centre_mean_s']:.3f} s", flush=True)
    return rows


def diagnose(cfg, classifier, real, pool, n_per_digit: int, weights, long_steps: int | None = None) -> dict:
    """Issue 19's measured tests of why samples come out as separate bursts: the data's burst
    count and placement, the logmag front end's silence floor, and the chapter's recipe
    trained with and without positional information, each model's reach (receptive field)
    and its samples at several guidance weights (accuracy, FD against the floor at the same
    N, bursts, where the energy sits)."""
    fe = FrontEnd(cfg.front_end, cfg.gl_iters)
    encoded = fe.encode(pool)
    centre = energy_centre(real)
    out = {"real": {"bursts": burst_summary(real), "energy_centre_mean_s": centre.mean().item(),
                    "energy_centre_sd_s": centre.std().item(),
                    "logmag_fraction_at_floor": (encoded <= -0.99).double().mean().item(),
                    "logmag_mean": encoded.mean().item()}}
    labels = torch.arange(10).repeat_interleave(n_per_digit)
    for name, positions in (("no positions (the chapter's U-Net)", False), ("positions", True)):
        model, info = load_or_train_audio(cfg, positions=positions)
        out[name] = {"train_seconds": round(info["seconds"], 1), "train_steps": info["steps"],
                     "receptive_field": receptive_field(model, fe.channels, FRAMES),
                     "by_guidance": score_weights(model, cfg, classifier, real, pool, labels, weights, name)}
    if long_steps:  # guidance against training length: EMA snapshots of one longer run
        keep = tuple(sorted({long_steps // 4, long_steps // 2, long_steps}))
        model, info = load_or_train_audio(cfg, train_steps=long_steps, keep_ema_at=keep)
        out[f"{long_steps} steps"] = {"train_seconds": round(info["seconds"], 1), "snapshots": {}}
        for step in keep:
            model.load_state_dict(info["ema_history"][step])
            out[f"{long_steps} steps"]["snapshots"][str(step)] = score_weights(
                model, cfg, classifier, real, pool, labels, weights, f"{long_steps}-step run at step {step}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-11 knob, e.g. train_steps=800")
    p.add_argument("--minutes", type=float, default=None, help="cap on this run's training time")
    p.add_argument("--compare", action="store_true", help="also train and score every front end "
                   "for compare_steps steps")
    p.add_argument("--n-per-digit", type=int, default=None,
                   help="clips per digit for 50-step DDIM (default: the profile's n_per_digit)")
    p.add_argument("--ancestral-per-digit", type=int, default=None,
                   help="clips per digit for the ancestral sampler (default: half of --n-per-digit)")
    p.add_argument("--skip-main", action="store_true", help="only the comparison (or the diagnosis)")
    p.add_argument("--diagnose", action="store_true", help="issue 19's tests: positions, reach, "
                   "guidance weights, bursts, placement")
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0],
                   help="guidance weights of --diagnose")
    p.add_argument("--long-steps", type=int, default=None,
                   help="--diagnose also trains the chapter's recipe this long and scores EMA snapshots at "
                        "1/4, 1/2 and all of it")
    p.add_argument("--fresh", action="store_true", help="train in a temporary cache")
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/audio_digits.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = chapter_settings("11", args.profile, **overrides)
    n_per_digit = args.n_per_digit or cfg.n_per_digit
    n_anc = args.ancestral_per_digit or max(1, n_per_digit // 2)
    previous = os.environ.get("COURSE_CACHE")
    if args.fresh:
        os.environ["COURSE_CACHE"] = tempfile.mkdtemp(prefix="audio-benchmark-")
    try:
        classifier, cinfo = load_or_train_classifier(cfg.classifier_epochs, cfg.seed)
        test, train = load_fsdd("test"), load_fsdd("train")
        real = test.audio
        floor = train.audio[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:len(real)]]
        _, pred, _ = classify(classifier, real)
        cinfo["held_out_accuracy"] = (pred == test.labels).double().mean().item()
        fe = FrontEnd("logmag", cfg.gl_iters)
        _, pred, _ = classify(classifier, fe.decode(fe.encode(real), torch.Generator().manual_seed(0)))
        cinfo["held_out_accuracy_after_griffin_lim"] = (pred == test.labels).double().mean().item()
        print(json.dumps(cinfo))
        result = {"benchmark": "audio_digits", "profile": cfg.profile, "settings": cfg.as_dict(),
                  "data": {"train": "FSDD v1.0.10 takes 5-49 (2,700 clips)",
                           "held_out": "takes 0-4 (300 clips)",
                           "floor": "300 random training clips vs the held-out clips"},
                  "classifier": cinfo, "machine": machine_info(cfg.device)}

        if not args.skip_main:
            model, info = load_or_train_audio(cfg, max_seconds=None if args.minutes is None else 60 * args.minutes)
            result["model"] = {
                "front_end": cfg.front_end, "parameters": count_parameters(model),
                "unet_config": model.config,
                "train_config": asdict(train_config(cfg)), "data": data_spec(cfg.front_end),
                "trained_now": info["trained_now"], "train_steps_done": info["steps"],
                "train_complete": info["complete"], "train_seconds": round(info["seconds"], 1),
                "final_loss_mean_last_100": sum(info["losses"][-100:]) / len(info["losses"][-100:])}
            result["ddim"] = score(model, cfg.front_end, cfg, classifier, real, floor, n_per_digit,
                                   cfg.ddim_steps, 0.0, cfg.seed + 1)
            print(json.dumps(result["ddim"]))
            result["ancestral"] = score(model, cfg.front_end, cfg, classifier, real, floor, n_anc,
                                        cfg.ancestral_steps, 1.0, cfg.seed + 2)
            print(json.dumps(result["ancestral"]))

        if args.diagnose:
            result["diagnosis"] = diagnose(cfg, classifier, real, train.audio, n_per_digit, args.weights,
                                           args.long_steps)

        if args.compare:
            table = {}
            runs = [(name + (", x0 head" if x0_head else ""), name, x0_head)
                    for x0_head in (False, True) for name in FRONT_ENDS]
            for row, name, x0_head in runs:
                model, info = load_or_train_audio(cfg, name, train_steps=cfg.compare_steps, v_from_x0=x0_head)
                table[row] = {"parameters": count_parameters(model), "train_steps": info["steps"],
                               "train_seconds": round(info["seconds"], 1),
                               "final_loss_mean_last_50": sum(info["losses"][-50:]) / len(info["losses"][-50:]),
                               **score(model, name, cfg, classifier, real, floor, n_per_digit,
                                       cfg.ddim_steps, 0.0, cfg.seed + 1)}
                print(row, json.dumps(table[row]))
            result["front_ends"] = table
            # over every row (front end x output head): accuracy first, the Frechet distance
            # breaks ties (at small budgets several can sit at chance)
            result["best_front_end"] = max(table, key=lambda k: (round(table[k]["accuracy"], 2),
                                                                 -table[k]["frechet"]))
    finally:
        if args.fresh:
            shutil.rmtree(os.environ.pop("COURSE_CACHE"), ignore_errors=True)
            if previous is not None:
                os.environ["COURSE_CACHE"] = previous
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
