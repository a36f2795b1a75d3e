"""Benchmark: classifier-free guidance on the class-conditional chapter-05 MNIST model.
For each guidance weight w: accuracy on the requested digit (chapter-06 classifier),
Frechet distance to held-out digits, the real-vs-real floor, FD / floor and seconds per
image. Writes JSON.

    python benchmarks/guidance.py --profile cpu --out build/benchmarks/guidance.json
    python benchmarks/guidance.py --weights 0,1,2,4 --n-samples 500 --sample-steps 50
    python benchmarks/guidance.py --set train_steps=3000   # another chapter-05 recipe

The conditional model (chapter-05 recipe, labels, label dropout ``--label-dropout``) is
trained into the course's checkpoint cache if it is not there yet, so chapter 09 and this
benchmark share it; ``--minutes`` caps that training. Run it on an otherwise idle machine.

Data: the MNIST training split when present. Offline with only the test split, the model
and the classifier train on test[0:9000] and evaluation uses test[9000:10000]; the JSON's
"data" says which. Requested labels are balanced (0, 1, ..., 9, 0, 1, ...), and every w
starts from the same noise. w = 0 is the unconditional model (the null label), w = 1 the
conditional one, w > 1 guided: out = out_uncond + w (out_cond - out_uncond).
The target: at w = 2, at least 95% of the digits are classified as the requested one.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from diffusion_course.metrics import (classify, evaluate_samples, frechet_floor, judge_real,
                                      load_or_train_classifier)
from diffusion_course.mnist_ddpm import (NUM_CLASSES, benchmark_settings, cond_train_config, data_spec,
                                         held_out_images, load_or_train_mnist_cond, training_images)
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value
from diffusion_course.sampling import guidance_weights, sample
from diffusion_course.training import autocast
from diffusion_course.unet import count_parameters

TARGET_W, TARGET_ACCURACY = 2.0, 0.95


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-05 knob, e.g. train_steps=2000")
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--minutes", type=float, default=None, help="cap on training time (default none)")
    p.add_argument("--weights", default="0,0.5,1,2,3,5", help="comma-separated guidance weights")
    p.add_argument("--n-samples", type=int, default=1000, help="digits per weight (<= 1000 evaluated)")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.0, help="0: DDIM (the chapter's sampler)")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--classifier-epochs", type=int, default=3, help="the chapter-06 cpu judge")
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/guidance.json"))
    args = p.parse_args()

    weights = guidance_weights(args.weights)
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = benchmark_settings(args.profile, overrides)
    tcfg = cond_train_config(cfg, args.label_dropout)
    spec = data_spec(cfg.train_split, cfg.n_train)
    torch.manual_seed(cfg.seed)

    images, labels = training_images(cfg.train_split, cfg.n_train)
    real, real_labels = held_out_images()
    n = min(args.n_samples, len(real))
    model, info = load_or_train_mnist_cond(cfg, args.label_dropout,
                                           max_seconds=None if args.minutes is None else args.minutes * 60)
    print(f"{count_parameters(model):,} parameters; {'trained now' if info['trained_now'] else 'cached'}: "
          f"{info['steps']} steps, {info['seconds']:.0f} s of training on {cfg.train_split}")
    classifier, cinfo = load_or_train_classifier(images, labels, spec, epochs=args.classifier_epochs)
    cinfo.update(judge_real(classifier, real, real_labels))
    floor = frechet_floor(classifier, images, classify(classifier, real[:n])[0], n)  # one for every w

    schedule = tcfg.noise_schedule()
    requested = torch.arange(args.n_samples) % NUM_CLASSES
    x_T = torch.randn((args.n_samples, 1, 28, 28), generator=torch.Generator().manual_seed(cfg.seed + 1))
    with autocast(tcfg.precision, cfg.device):  # warm-up, so the first timing is not penalised
        sample(model, (8, 1, 28, 28), schedule, steps=2, eta=0.0, kind=tcfg.kind, x_T=x_T[:8],
               labels=requested[:8], guidance=1.0, device=cfg.device)
    rows = []
    for w in weights:
        gen = torch.Generator().manual_seed(cfg.seed + 2)
        start, chunks = time.perf_counter(), []
        for i in range(0, args.n_samples, args.sample_batch):
            sl = slice(i, min(i + args.sample_batch, args.n_samples))
            with autocast(tcfg.precision, cfg.device):
                chunks.append(sample(model, x_T[sl].shape, schedule, steps=args.sample_steps, eta=args.eta,
                                     kind=tcfg.kind, x_T=x_T[sl], labels=requested[sl], guidance=w,
                                     generator=gen, device=cfg.device).x0.float())
        seconds = time.perf_counter() - start
        x = torch.cat(chunks).clamp(-1, 1)
        _, pred, _ = classify(classifier, x)
        rep = evaluate_samples(classifier, x[:n], real[:n], floor=floor)
        per_class = [(pred[requested == c] == c).double().mean().item() for c in range(NUM_CLASSES)]
        rows.append({"w": w, "accuracy": (pred == requested).double().mean().item(),
                     "accuracy_per_class": [round(a, 4) for a in per_class],
                     "frechet": rep["frechet"], "frechet_floor": rep["frechet_floor"],
                     "frechet_floor_sd": rep["frechet_floor_sd"],
                     "frechet_ratio": rep["frechet_ratio"], "confident_fraction": rep["confident_fraction"],
                     "min_class_fraction": rep["min_class_fraction"],
                     "seconds_per_image": seconds / args.n_samples})
        print(f"w = {w:g}: accuracy {rows[-1]['accuracy']:.3f}, FD {rep['frechet']:.2f} "
              f"(floor {rep['frechet_floor']:.2f}, ratio {rep['frechet_ratio']:.2f}), "
              f"{1000 * seconds / args.n_samples:.1f} ms per image")

    at = {r["w"]: r for r in rows}
    best = min(rows, key=lambda r: r["frechet_ratio"])
    summary = {"target": f"accuracy on the requested digit at w = {TARGET_W:g} >= {TARGET_ACCURACY}",
               "accuracy_at_target_w": at[TARGET_W]["accuracy"] if TARGET_W in at else None,
               "target_met": (at[TARGET_W]["accuracy"] >= TARGET_ACCURACY) if TARGET_W in at else None,
               "best_frechet_ratio_w": best["w"], "best_frechet_ratio": best["frechet_ratio"]}
    result = {
        "benchmark": "guidance", "profile": cfg.profile, "settings": cfg.as_dict(),
        "train_config": asdict(tcfg), "data": spec, "parameters": count_parameters(model),
        "trained_now": info["trained_now"], "train_steps_done": info["steps"],
        "train_complete": info["complete"], "train_seconds": round(info["seconds"], 1),
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "clip_x0": True,
                    "n_samples_per_w": args.n_samples, "n_evaluated": n,
                    "network_calls_per_step": 2, "note": "both branches in one batched call"},
        "weights": rows, "summary": summary, "classifier": cinfo, "machine": machine_info(cfg.device),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
