"""Benchmark: train the chapter-05 MNIST DDPM under a profile and time budget, sample,
and score the samples with the chapter-06 metric. Writes JSON.

    python benchmarks/ddpm_mnist.py --profile cpu --minutes 10 --out build/benchmarks/ddpm_mnist.json
    python benchmarks/ddpm_mnist.py --set train_steps=2000 --set kind=eps --sample-steps 50
    python benchmarks/ddpm_mnist.py --profile cpu --keep   # also cache the model for the chapters

It trains a fresh model every run (in a temporary cache) unless --keep is given. Run it on
an otherwise idle machine: torch uses every core, and a second busy process on a 2-core
machine can make each step many times slower.

Data: the MNIST training split when present. Offline with only the test split, it trains
on test[0:9000] and evaluates on test[9000:10000]; the JSON's "data" says which.
The real-vs-real floor is the Frechet distance between N random training images and the same
N held-out images, averaged over 10 seeded draws: what a perfect generator of the training
data would score (``metrics.frechet_floor``).
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

from diffusion_course.metrics import evaluate_samples, judge_real, load_or_train_classifier
from diffusion_course.mnist_ddpm import (benchmark_settings, data_spec, held_out_images,
                                         load_or_train_mnist_ddpm, make_unet, sample_digits,
                                         train_config, training_images)
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value
from diffusion_course.training import CACHE_ENV
from diffusion_course.unet import count_parameters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-05 knob, e.g. train_steps=2000")
    p.add_argument("--n-samples", type=int, default=1000)
    # Ancestral sampling (eta = 1) with 100 respaced steps measured best for the cpu model
    # (benchmarks/sampling_steps.py); DDIM is --eta 0.
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/ddpm_mnist.json"))
    p.add_argument("--keep", action="store_true",
                   help="train into the course's checkpoint cache (reused by the chapters, and "
                        "by this benchmark: then nothing is retrained) instead of a fresh temp one")
    args = p.parse_args()

    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = benchmark_settings(args.profile, overrides)
    tcfg = train_config(cfg)
    torch.manual_seed(cfg.seed)

    images, labels = training_images(cfg.train_split, cfg.n_train)
    real, real_labels = held_out_images()
    n = min(args.n_samples, len(real))
    print(f"{count_parameters(make_unet(cfg)):,} parameters; training {tcfg.steps} steps, "
          f"budget {args.minutes} min, on {cfg.train_split} ({len(images)} images)")
    if args.keep:  # --keep trains into the course's cache, where the chapters find it
        ema, info = load_or_train_mnist_ddpm(cfg, max_seconds=args.minutes * 60)
    else:  # measure a fresh run in a temporary cache, then restore the user's setting
        previous = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="ddpm-benchmark-")
        try:
            ema, info = load_or_train_mnist_ddpm(cfg, max_seconds=args.minutes * 60)
        finally:
            shutil.rmtree(os.environ.pop(CACHE_ENV), ignore_errors=True)
            if previous is not None:
                os.environ[CACHE_ENV] = previous

    classifier, cinfo = load_or_train_classifier(images, labels, data_spec(cfg.train_split, cfg.n_train))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = time.perf_counter()
    samples = sample_digits(ema, tcfg, args.n_samples, args.sample_steps, args.eta, gen,
                            cfg.device, args.sample_batch)
    sample_seconds = time.perf_counter() - start
    report = evaluate_samples(classifier, samples[:n], real[:n], floor_pool=images)
    # The same report card for real held-out digits: what a perfect generator would get.
    cinfo.update(judge_real(classifier, real, real_labels))

    result = {
        "benchmark": "ddpm_mnist", "profile": cfg.profile, "settings": cfg.as_dict(),
        "train_config": asdict(tcfg), "data": data_spec(cfg.train_split, cfg.n_train),
        "parameters": count_parameters(ema), "trained_now": info["trained_now"],
        "train_steps_done": info["steps"], "train_complete": info["complete"],
        "train_seconds": round(info["seconds"], 1),
        "train_images_per_second": round(info["steps"] * tcfg.batch_size / info["seconds"], 1),
        "final_loss_mean_last_100": sum(info["losses"][-100:]) / len(info["losses"][-100:]),
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "clip_x0": True,
                    "n_samples": args.n_samples},
        "sample_seconds_per_image": sample_seconds / args.n_samples,
        "evaluation": report, "classifier": cinfo,
        "machine": machine_info(cfg.device),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("train_steps_done", "train_seconds",
                                             "sample_seconds_per_image", "evaluation")}, indent=2))


if __name__ == "__main__":
    main()
