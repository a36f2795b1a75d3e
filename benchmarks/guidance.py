"""Benchmark: classifier-free guidance on the class-conditional chapter-05 MNIST model.
For each guidance weight w: accuracy on the requested digit (the course's judge), Frechet
distance to the test split, the real-vs-real floor, FD / floor and seconds per image.
Writes JSON.

    python benchmarks/guidance.py --profile cpu --out build/benchmarks/guidance.json
    python benchmarks/guidance.py --weights 0,1,2,4 --n-samples 500 --sample-steps 50
    python benchmarks/guidance.py --model student --set train_steps=3000   # another chapter-05 recipe

The conditional model is the reference shipped with the course (``--model reference``, the
default) or the student's own (``--model student``: chapter 05's settings for the profile
with the --set overrides, labels, label dropout ``recipes.mnist_ddpm.LABEL_DROPOUT``), trained into
the course's checkpoint cache if it is not there yet, so chapter 09 and this benchmark share
it; ``--minutes`` caps that training. Run it on an otherwise idle machine.

Data: the first ``n_train`` digits of MNIST's training split. Evaluation
(``evaluation.judge.load_judge``):
the samples against all 10,000 digits of the test split, the floor N random training digits
against the same test split (mean of 10 seeded draws). Requested labels are balanced
(0, 1, ..., 9, 0, 1, ...), and every w starts from the same noise. w = 0 is the unconditional
model (the null label), w = 1 the conditional one, w > 1 guided:
out = out_uncond + w (out_cond - out_uncond).
The target: at w = 2, at least 95% of the digits are classified as the requested one.
"""
from __future__ import annotations

import json
import time

import torch

from diffusion_course.course.cli import (benchmark_parser, check_sample_count, knob_overrides, model_record,
                                         write_result)
from diffusion_course.data.mnist import N_TEST
from diffusion_course.diffusion.sampling import guidance_weights
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.models.unet import count_parameters
from diffusion_course.recipes.mnist_ddpm import NUM_CLASSES, load_mnist_model, sample_digits
from diffusion_course.training.device import pick_device

TARGET_W, TARGET_ACCURACY = 2.0, 0.95
REPORT_KEYS = ("frechet", "frechet_floor", "frechet_floor_sd", "frechet_ratio", "confident_fraction",
               "min_class_fraction")


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/guidance.json")
    p.add_argument("--minutes", type=float, default=None,
                   help="cap on the student's training time (default none)")
    p.add_argument("--weights", default="0,0.5,1,2,3,5", help="comma-separated guidance weights")
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per weight (10..{N_TEST})")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.0, help="0: DDIM (the chapter's sampler)")
    p.add_argument("--sample-batch", type=int, default=250)
    args = p.parse_args(argv)
    check_sample_count(p, args.n_samples)
    return args


def guidance_rows(model, info, judge, args, device) -> list[dict]:
    """One row per guidance weight: accuracy on the requested digits (overall and per class),
    the judge's scores and the seconds per image; every weight starts from the same noise."""
    tcfg, seed, n = info["train_config"], info["settings"]["seed"], args.n_samples
    requested = torch.arange(n) % NUM_CLASSES
    # warm-up, so the first timing is not penalised
    sample_digits(model, tcfg, 8, 2, 0.0, torch.Generator(), device, labels=requested[:8], guidance=1.0)
    rows = []
    for w in guidance_weights(args.weights):
        start = time.perf_counter()
        x = sample_digits(model, tcfg, n, args.sample_steps, args.eta, torch.Generator().manual_seed(seed + 1),
                          device, args.sample_batch, labels=requested, guidance=w)
        seconds = time.perf_counter() - start
        pred, rep = judge.labels(x), judge.evaluate(x)
        per_class = [(pred[requested == c] == c).double().mean().item() for c in range(NUM_CLASSES)]
        rows.append({"w": w, "accuracy": (pred == requested).double().mean().item(),
                     "accuracy_per_class": [round(a, 4) for a in per_class],
                     **{k: rep[k] for k in REPORT_KEYS}, "seconds_per_image": seconds / n})
        print(f"w = {w:g}: accuracy {rows[-1]['accuracy']:.3f}, FD {rep['frechet']:.2f} "
              f"(floor {rep['frechet_floor']:.2f}, ratio {rep['frechet_ratio']:.2f}), "
              f"{1000 * seconds / n:.1f} ms per image")
    return rows


def summary(rows: list[dict]) -> dict:
    at, best = {r["w"]: r for r in rows}, min(rows, key=lambda r: r["frechet_ratio"])
    return {"target": f"accuracy on the requested digit at w = {TARGET_W:g} >= {TARGET_ACCURACY}",
            "accuracy_at_target_w": at[TARGET_W]["accuracy"] if TARGET_W in at else None,
            "target_met": (at[TARGET_W]["accuracy"] >= TARGET_ACCURACY) if TARGET_W in at else None,
            "best_frechet_ratio_w": best["w"], "best_frechet_ratio": best["frechet_ratio"]}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    model, info = load_mnist_model(args.profile, args.model, conditional=True,  # overrides: student only
                                   max_seconds=None if args.minutes is None else args.minutes * 60,
                                   **knob_overrides(args))
    device = pick_device()
    print(f"{count_parameters(model):,} parameters; {info['source']} model, "
          f"{'trained now' if info['trained_now'] else 'cached'}: "
          f"{info['steps']} steps, {info['seconds']:.0f} s of training")
    judge = load_judge(args.profile)
    rows = guidance_rows(model, info, judge, args, device)
    result = {
        "benchmark": "guidance", "profile": judge.profile, **model_record(model, info),
        "sampler": {"steps": args.sample_steps, "eta": args.eta, "clip_x0": True,
                    "n_samples_per_w": args.n_samples, "n_evaluated": args.n_samples,
                    "network_calls_per_step": 2, "note": "both branches in one batched call"},
        "weights": rows, "summary": summary(rows), "judge": judge.describe(),
    }
    write_result(args, result, device)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
