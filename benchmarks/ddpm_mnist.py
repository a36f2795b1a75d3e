"""Benchmark: train the chapter-05 MNIST DDPM under a profile and time budget (or take the
reference model shipped with the course), sample, and score the samples with the course's
judge. Writes JSON.

    python benchmarks/ddpm_mnist.py --profile cpu --minutes 10 --out build/benchmarks/ddpm_mnist.json
    python benchmarks/ddpm_mnist.py --set train_steps=2000 --set kind=eps --sample-steps 50
    python benchmarks/ddpm_mnist.py --profile cpu --keep   # also cache the model for the chapters
    python benchmarks/ddpm_mnist.py --profile cpu --model reference --note "machine idle"
    python benchmarks/ddpm_mnist.py --set train_steps=24000 --set ema_decay=0.999 \
        --set precision=bf16 --keep --snapshots    # quality against training minutes

``--model student`` (the default) trains a fresh model every run (in a temporary cache)
unless --keep is given; ``--model reference`` scores the shipped reference instead, and the
JSON then records how it was trained (steps, seconds, machine, command). ``--snapshots`` also
scores the EMA weights the student's run kept at 5, 15, 40 and 100 % of its steps: a curve of
quality against training minutes (the reference recipe's settings with --keep find the run
that made the reference in the cache). A snapshot is not a run of that length: its learning
rate has not decayed yet, so the curve is a pessimistic bound for shorter runs. Run it on an
otherwise idle machine: torch uses every core, and a second busy process on a 2-core
machine can make each step many times slower.

Data: the first ``n_train`` digits of MNIST's training split. Evaluation
(``evaluation.judge.load_judge``):
the samples against all 10,000 digits of the test split, on the features of the course's
judge; the real-vs-real floor is N random training digits against the same test split, the
mean of 10 seeded draws: what a perfect generator of the training data would score. The JSON's
"judge" entry also has the judge's accuracy and confident fraction on the real test digits.
"""
from __future__ import annotations

import json
import time

import torch

from diffusion_course.course.cli import (benchmark_parser, check_sample_count, knob_overrides, model_record,
                                         write_result)
from diffusion_course.course.settings import chapter_settings
from diffusion_course.data.mnist import N_TEST
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.models.unet import count_parameters
from diffusion_course.recipes.mnist_ddpm import load_mnist_model, make_unet, sample_digits, train_mnist_model
from diffusion_course.training.cache import temporary_cache
from diffusion_course.training.device import pick_device


def train_student(cfg, minutes: float, keep: bool):
    """(EMA model, info) of the student's model for these chapter-05 settings, trained in a
    temporary cache (a fresh run every time), or with ``keep`` in the course's cache (where the
    chapters find it)."""
    with temporary_cache(enabled=not keep):
        return train_mnist_model(cfg, max_seconds=minutes * 60)


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/ddpm_mnist.json", model="student")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget (student)")
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits scored (10..{N_TEST})")
    # Ancestral sampling (eta = 1) with 100 respaced steps; DDIM is --eta 0. Which sampler
    # suits the model: benchmarks/sampling_steps.py.
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--keep", action="store_true",
                   help="train into the course's checkpoint cache (reused by the chapters, and "
                        "by this benchmark: then nothing is retrained) instead of a fresh temp one")
    p.add_argument("--snapshots", action="store_true",
                   help="also score the EMA snapshots of the student's run (quality against minutes)")
    args = p.parse_args(argv)
    check_sample_count(p, args.n_samples)
    if args.model == "reference" and (args.set or args.keep or args.snapshots):
        p.error("--set, --keep and --snapshots apply to --model student only: the reference is "
                "trained already")
    return args


def the_model(args):
    """(EMA model, info, chapter-05 settings or None): the reference, or the student trained now."""
    if args.model == "reference":
        return (*load_mnist_model(args.profile, "reference"), None)
    cfg = chapter_settings("05", args.profile, **knob_overrides(args))
    print(f"{count_parameters(make_unet(cfg)):,} parameters; training {cfg.train_steps} steps, "
          f"budget {args.minutes} min, on {cfg.n_train} training digits")
    return (*train_student(cfg, args.minutes, args.keep), cfg)


def score_snapshots(args, cfg, info, judge, device) -> list[dict]:
    """The EMA weights the student's run kept, each sampled and scored like the final model."""
    tcfg, seed, rows = info["train_config"], info["settings"]["seed"], []
    for step in sorted(info.get("ema_history", {})) if args.snapshots else []:
        model = make_unet(cfg).to(device)
        model.load_state_dict(info["ema_history"][step])
        x = sample_digits(model.eval(), tcfg, args.n_samples, args.sample_steps, args.eta,
                          torch.Generator().manual_seed(seed + 1), device, args.sample_batch)
        r = judge.evaluate(x)
        rows.append({"step": step, "train_minutes": round(info["seconds"] * step / info["steps"] / 60, 2),
                     **{k: r[k] for k in ("frechet", "frechet_ratio", "confident_fraction", "min_class_fraction")}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def training_record(info: dict) -> dict:
    if info["source"] == "student":
        losses = info["losses"][-100:]
        return {"final_loss_mean_last_100": sum(losses) / len(losses)}
    # how the reference was trained, from its file (its loss curve holds means of loss_every steps)
    return {"final_loss_mean_last_point": info["loss_curve"][-1], "loss_every": info["loss_every"],
            "train_command": info["command"], "train_machine": info["machine"], "trained_on": info["trained_on"]}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    ema, info, cfg = the_model(args)
    tcfg, seed, device = info["train_config"], info["settings"]["seed"], pick_device()
    judge = load_judge(args.profile)
    gen = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    samples = sample_digits(ema, tcfg, args.n_samples, args.sample_steps, args.eta, gen,
                            device, args.sample_batch)
    sample_seconds = time.perf_counter() - start
    report = judge.evaluate(samples)
    snapshots = score_snapshots(args, cfg, info, judge, device)
    result = {
        "benchmark": "ddpm_mnist", "profile": judge.profile, **model_record(ema, info),
        "train_images_per_second": round(info["steps"] * tcfg.batch_size / info["seconds"], 1),
        **training_record(info),
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "clip_x0": True,
                    "n_samples": args.n_samples},
        "sample_seconds_per_image": sample_seconds / args.n_samples,
        "evaluation": report, "judge": judge.describe(),
        "snapshots": snapshots,  # train_minutes: the run's seconds per step times the step
    }
    write_result(args, result, device)
    print(json.dumps({k: result[k] for k in ("model", "train_steps_done", "train_seconds",
                                             "sample_seconds_per_image", "evaluation")}, indent=2))


if __name__ == "__main__":
    main()
