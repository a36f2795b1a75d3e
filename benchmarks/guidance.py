"""Benchmark: classifier-free guidance on the class-conditional chapter-05 MNIST model.
For each guidance weight w: accuracy on the requested digit (the course's judge), Frechet
distance to the test split, the real-vs-real floor, FD / floor and seconds per image.
Writes JSON.

    python benchmarks/guidance.py --profile cpu --out build/benchmarks/guidance.json
    python benchmarks/guidance.py --weights 0,1,2,4 --n-samples 500 --sample-steps 50
    python benchmarks/guidance.py --model student --set train_steps=3000   # another chapter-05 recipe

The conditional model is the reference shipped with the course (``--model reference``, the
default) or the student's own (``--model student``: chapter 05's settings for the profile
with the --set overrides, labels, label dropout ``mnist_ddpm.LABEL_DROPOUT``), trained into
the course's checkpoint cache if it is not there yet, so chapter 09 and this benchmark share
it; ``--minutes`` caps that training. Run it on an otherwise idle machine.

Data: the first ``n_train`` digits of MNIST's training split. Evaluation (``judge.load_judge``):
the samples against all 10,000 digits of the test split, the floor N random training digits
against the same test split (mean of 10 seeded draws). Requested labels are balanced
(0, 1, ..., 9, 0, 1, ...), and every w starts from the same noise. w = 0 is the unconditional
model (the null label), w = 1 the conditional one, w > 1 guided:
out = out_uncond + w (out_cond - out_uncond).
The target: at w = 2, at least 95% of the digits are classified as the requested one.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from diffusion_course.judge import load_judge
from diffusion_course.mnist_ddpm import MODELS, N_TEST, NUM_CLASSES, load_mnist_model, sample_digits
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value
from diffusion_course.sampling import guidance_weights
from diffusion_course.settings import pick_device
from diffusion_course.unet import count_parameters

TARGET_W, TARGET_ACCURACY = 2.0, 0.95


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="profile of the judge and of the student's model")
    p.add_argument("--model", choices=MODELS, default="reference",
                   help="the shipped conditional reference, or the student's own")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-05 knob of the student's model, e.g. train_steps=2000")
    p.add_argument("--minutes", type=float, default=None,
                   help="cap on the student's training time (default none)")
    p.add_argument("--weights", default="0,0.5,1,2,3,5", help="comma-separated guidance weights")
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per weight (10..{N_TEST})")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.0, help="0: DDIM (the chapter's sampler)")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/guidance.json"))
    p.add_argument("--note", default=None, help='stored in the JSON, e.g. "machine idle"')
    args = p.parse_args(argv)
    if not 10 <= args.n_samples <= N_TEST:
        p.error(f"--n-samples must lie in 10..{N_TEST} (the test split's size)")

    weights = guidance_weights(args.weights)
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    model, info = load_mnist_model(args.profile, args.model, conditional=True,  # overrides: student only
                                   max_seconds=None if args.minutes is None else args.minutes * 60,
                                   **overrides)
    tcfg, seed, device = info["train_config"], info["settings"]["seed"], pick_device()
    print(f"{count_parameters(model):,} parameters; {info['source']} model, "
          f"{'trained now' if info['trained_now'] else 'cached'}: "
          f"{info['steps']} steps, {info['seconds']:.0f} s of training")
    judge = load_judge(args.profile)

    n = args.n_samples
    requested = torch.arange(n) % NUM_CLASSES
    # warm-up, so the first timing is not penalised
    sample_digits(model, tcfg, 8, 2, 0.0, torch.Generator(), device, labels=requested[:8], guidance=1.0)
    rows = []
    for w in weights:  # the same generator seed for every w: the same x_T
        gen = torch.Generator().manual_seed(seed + 1)
        start = time.perf_counter()
        x = sample_digits(model, tcfg, n, args.sample_steps, args.eta, gen, device, args.sample_batch,
                          labels=requested, guidance=w)
        seconds = time.perf_counter() - start
        pred = judge.labels(x)
        rep = judge.evaluate(x)
        per_class = [(pred[requested == c] == c).double().mean().item() for c in range(NUM_CLASSES)]
        rows.append({"w": w, "accuracy": (pred == requested).double().mean().item(),
                     "accuracy_per_class": [round(a, 4) for a in per_class],
                     **{k: rep[k] for k in ("frechet", "frechet_floor", "frechet_floor_sd", "frechet_ratio",
                                            "confident_fraction", "min_class_fraction")},
                     "seconds_per_image": seconds / n})
        print(f"w = {w:g}: accuracy {rows[-1]['accuracy']:.3f}, FD {rep['frechet']:.2f} "
              f"(floor {rep['frechet_floor']:.2f}, ratio {rep['frechet_ratio']:.2f}), "
              f"{1000 * seconds / n:.1f} ms per image")

    at = {r["w"]: r for r in rows}
    best = min(rows, key=lambda r: r["frechet_ratio"])
    summary = {"target": f"accuracy on the requested digit at w = {TARGET_W:g} >= {TARGET_ACCURACY}",
               "accuracy_at_target_w": at[TARGET_W]["accuracy"] if TARGET_W in at else None,
               "target_met": (at[TARGET_W]["accuracy"] >= TARGET_ACCURACY) if TARGET_W in at else None,
               "best_frechet_ratio_w": best["w"], "best_frechet_ratio": best["frechet_ratio"]}
    result = {
        "benchmark": "guidance", "profile": judge.profile, "model": info["source"],
        "settings": info["settings"], "train_config": asdict(tcfg), "data": info["data"],
        "parameters": count_parameters(model), "trained_now": info["trained_now"],
        "train_steps_done": info["steps"], "train_complete": info["complete"],
        "train_seconds": round(info["seconds"], 1),
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "clip_x0": True,
                    "n_samples_per_w": n, "n_evaluated": n,
                    "network_calls_per_step": 2, "note": "both branches in one batched call"},
        "weights": rows, "summary": summary, "judge": judge.describe(),
        "machine": machine_info(device), "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
