"""Benchmark: how the judge changes the verdict. Scores one fixed set of chapter-05 samples,
and the real test digits, with evaluation classifiers trained for different numbers of
epochs, next to the course's own judge. Writes JSON.

    python benchmarks/judge_strength.py --profile cpu --epochs 1 3 6 16
    python benchmarks/judge_strength.py --judge-n-train 10000 --model student

A better-trained classifier is surer of real digits and of good samples (the confident
fraction rises), and the FD of the samples and the real-vs-real floor both move with its
features: measured on the reference model's samples (cpu, 60,000 training digits per judge),
both fell by about half from 3 to 16 epochs while their ratio went from 1.39 to 1.76, not
monotonically (1.54, 1.39, 1.57, 1.76 for 1, 3, 6, 16 epochs). Numbers from different
judges are therefore not comparable: the course fixes one judge per profile
(``judge.load_judge``, recipes in ``judge.JUDGE_RECIPES``), the "course_judge" row.

Every judge, the course's and the ones trained here (``judge.train_judge_classifier`` on
the first --judge-n-train digits of MNIST's training split, cached), scores by the same
protocol (``judge.DigitJudge``): the samples against all 10,000 digits of the test split on
that judge's features, the floor N random training digits against the same test split (mean
of 10 seeded draws). The chapter-05 model is the reference shipped with the course
(``--model reference``, the default) or the student's own (``--model student``, chapter 05's
settings for the profile with the --set overrides, trained into the cache first if absent).
"""
from __future__ import annotations

import json

import torch

from diffusion_course.course.cli import benchmark_parser, check_sample_count, knob_overrides, write_result
from diffusion_course.evaluation.judge import DigitJudge, load_judge, train_judge_classifier
from diffusion_course.recipes.mnist_ddpm import load_mnist_model, sample_digits
from diffusion_course.training.device import pick_device

SAMPLE_KEYS = ("frechet", "frechet_floor", "frechet_floor_sd", "frechet_ratio", "confident_fraction",
               "min_class_fraction")


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/judge_strength.json",
                         profile_help="profile of the course's judge and of the student's model")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 6, 16],
                   help="classifier training epochs, one judge each")
    p.add_argument("--judge-n-train", type=int, default=60_000,
                   help="training digits of each judge (the first of MNIST's training split)")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--eta", type=float, default=1.0)
    args = p.parse_args(argv)
    if min(args.epochs) < 1:
        p.error(f"--epochs must be positive, got {args.epochs}")
    check_sample_count(p, args.n_samples)
    if not 100 <= args.judge_n_train <= 60_000:
        p.error("--judge-n-train must lie in 100..60000 (the training split's size)")
    return args


def judge_rows(args, samples: torch.Tensor, profile: str) -> list[dict]:
    """One judge per number of epochs, each scoring the same samples by the course's protocol."""
    judges = []
    for epochs in args.epochs:
        classifier, cinfo = train_judge_classifier(args.judge_n_train, epochs)
        judge = DigitJudge(classifier, profile, cinfo)  # the course's protocol, this classifier
        report = judge.evaluate(samples)
        judges.append({
            "epochs": epochs, "n_train": args.judge_n_train, "trained_now": cinfo["trained_now"],
            "train_seconds": round(cinfo["seconds"], 1) if cinfo["trained_now"] else None,
            **judge.on_real_digits(), "samples": {k: report[k] for k in SAMPLE_KEYS},
        })
        print(json.dumps(judges[-1]), flush=True)
    return judges


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    ema, info = load_mnist_model(args.profile, args.model, **knob_overrides(args))  # overrides: student only
    seed, n = info["settings"]["seed"], args.n_samples
    samples = sample_digits(ema, info["train_config"], n, args.sample_steps, args.eta,
                            torch.Generator().manual_seed(seed + 1), pick_device())
    course = load_judge(args.profile)
    report = course.evaluate(samples)
    course_row = {**course.describe(), "samples": {k: report[k] for k in SAMPLE_KEYS}}
    print(json.dumps(course_row), flush=True)
    write_result(args, {
        "benchmark": "judge_strength", "profile": course.profile, "data": info["data"],
        "model": {"source": info["source"], "settings": info["settings"], "train_steps": info["steps"]},
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "n_samples": n, "seed": seed + 1},
        "course_judge": course_row, "judges": judge_rows(args, samples, course.profile),
    })


if __name__ == "__main__":
    main()
