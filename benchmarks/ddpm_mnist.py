"""Benchmark: train the chapter-05 MNIST DDPM under a profile and time budget, sample,
and score the samples with the chapter-06 metric. Writes JSON.

    python benchmarks/ddpm_mnist.py --profile cpu --minutes 10 --out build/benchmarks/ddpm_mnist.json
    python benchmarks/ddpm_mnist.py --set train_steps=2000 --set kind=eps --sample-steps 50

Data: the MNIST training split when present. Offline with only the test split, it trains
on test[0:9000] and evaluates on test[9000:10000]; the JSON's "data" says which.
The real-vs-real floor is the Frechet distance between N training images and the same N
held-out images: what a perfect generator of the training data would score.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from diffusion_course.metrics import evaluate_samples, load_or_train_classifier
from diffusion_course.mnist import mnist_files
from diffusion_course.mnist_ddpm import data_spec, held_out_images, make_unet, train_config, training_images
from diffusion_course.runner import parse_value
from diffusion_course.sampling import sample
from diffusion_course.settings import chapter_settings
from diffusion_course.training import train
from diffusion_course.unet import count_parameters


def train_split_available() -> bool:
    try:
        mnist_files("train", download=False)
        return True
    except (FileNotFoundError, ValueError):
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-05 knob, e.g. train_steps=2000")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/ddpm_mnist.json"))
    args = p.parse_args()

    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: parse_value(v) for k, v in overrides.items()}
    if "train_split" not in overrides and not train_split_available():
        overrides.update(train_split="test", n_train=9000)
    cfg = chapter_settings("05", args.profile, **overrides)
    tcfg = train_config(cfg)
    torch.manual_seed(cfg.seed)

    images, labels = training_images(cfg.train_split, cfg.n_train)
    real, _ = held_out_images()
    n = min(args.n_samples, len(real))
    model = make_unet(cfg).to(cfg.device)
    print(f"{count_parameters(model):,} parameters; training {tcfg.steps} steps, "
          f"budget {args.minutes} min, on {cfg.train_split} ({len(images)} images)")
    state = train(model, images, tcfg, labels, max_seconds=args.minutes * 60, device=cfg.device)

    classifier, cinfo = load_or_train_classifier(images, labels, {**data_spec(cfg.train_split, cfg.n_train)})
    ema = state.ema.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start, chunks = time.perf_counter(), []
    for i in range(0, args.n_samples, args.sample_batch):
        b = min(args.sample_batch, args.n_samples - i)
        chunks.append(sample(ema, (b, 1, 28, 28), tcfg.noise_schedule(), steps=args.sample_steps,
                             eta=args.eta, kind=tcfg.kind, generator=gen, device=cfg.device).x0)
    sample_seconds = time.perf_counter() - start
    samples = torch.cat(chunks)
    report = evaluate_samples(classifier, samples[:n], real[:n], real_floor=images[:n])

    result = {
        "benchmark": "ddpm_mnist", "profile": cfg.profile, "settings": cfg.as_dict(),
        "train_config": asdict(tcfg), "data": data_spec(cfg.train_split, cfg.n_train),
        "parameters": count_parameters(model),
        "train_steps_done": state.step, "train_seconds": round(state.seconds, 1),
        "train_images_per_second": round(state.step * tcfg.batch_size / state.seconds, 1),
        "final_loss_mean_last_100": sum(state.losses[-100:]) / len(state.losses[-100:]),
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "clip_x0": True,
                    "n_samples": args.n_samples},
        "sample_seconds_per_image": sample_seconds / args.n_samples,
        "evaluation": report, "classifier": cinfo,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": str(cfg.device),
                    "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("train_steps_done", "train_seconds",
                                             "sample_seconds_per_image", "evaluation")}, indent=2))


if __name__ == "__main__":
    main()
