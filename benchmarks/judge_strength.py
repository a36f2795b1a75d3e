"""Benchmark: how the judge changes the verdict. Scores one fixed set of chapter-05 samples,
and the real held-out digits, with evaluation classifiers trained for different numbers
of epochs. Writes JSON.

    python benchmarks/judge_strength.py --profile cpu --epochs 1 3 6 16

A better-trained classifier is surer of real digits and of good samples (the confident
fraction rises), and its features spread the digits further apart: the FD of the samples and
the real-vs-real floor both grow, their ratio less so. Numbers from different judges are
therefore not comparable: the course fixes one recipe (``metrics.load_or_train_classifier``,
3 epochs in ``cpu``).

The chapter-05 model of the profile comes from the checkpoint cache (trained first if it
is not there, as chapter 05 would); every classifier is cached too. Data as in
``ddpm_mnist.py``: offline with only the MNIST test split, models train on test[0:9000]
and are scored on test[9000:10000].
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from diffusion_course.metrics import evaluate_samples, judge_real, load_or_train_classifier
from diffusion_course.mnist_ddpm import (HELD_OUT, benchmark_settings, data_spec, held_out_images,
                                         load_or_train_mnist_ddpm, sample_digits, train_config,
                                         training_images)
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-05 knob of the model being judged")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 6, 16],
                   help="classifier training epochs, one judge each")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/judge_strength.json"))
    args = p.parse_args()
    if min(args.epochs) < 1:
        p.error(f"--epochs must be positive, got {args.epochs}")
    if not 10 <= args.n_samples <= HELD_OUT:
        p.error(f"--n-samples must lie in 10..{HELD_OUT} (the held-out set's size)")

    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = benchmark_settings(args.profile, overrides)
    tcfg = train_config(cfg)
    spec = data_spec(cfg.train_split, cfg.n_train)
    images, labels = training_images(cfg.train_split, cfg.n_train)
    real, real_labels = held_out_images()
    n = args.n_samples
    if n > len(images):  # the floor draws n of the training digits
        p.error(f"--n-samples must not exceed the {len(images)} training images")
    ema, info = load_or_train_mnist_ddpm(cfg)
    samples = sample_digits(ema, tcfg, n, args.sample_steps, args.eta,
                            torch.Generator().manual_seed(cfg.seed + 1), cfg.device)

    judges = []
    for epochs in args.epochs:
        classifier, cinfo = load_or_train_classifier(images, labels, spec, epochs=epochs)
        report = evaluate_samples(classifier, samples, real[:n], floor_pool=images)
        judges.append({
            "epochs": epochs, "trained_now": cinfo["trained_now"],
            "train_seconds": round(cinfo["seconds"], 1) if cinfo["trained_now"] else None,
            **judge_real(classifier, real, real_labels),
            "samples": {k: report[k] for k in ("frechet", "frechet_floor", "frechet_floor_sd",
                                               "frechet_ratio", "confident_fraction",
                                               "min_class_fraction")},
        })
        print(json.dumps(judges[-1]), flush=True)

    result = {
        "benchmark": "judge_strength", "profile": cfg.profile, "data": spec,
        "model": {"settings": cfg.as_dict(), "train_steps": info["steps"]},
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "n_samples": n,
                    "seed": cfg.seed + 1},
        "judges": judges, "machine": machine_info(cfg.device),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
