"""Benchmark: the chapter-05 MNIST model as a prior for inverse problems (chapter 12). Per
problem and method: PSNR and SSIM (deepinv's metrics, mean and sd over the digits), the
judge's accuracy on the restorations, seconds per image, and the settings. Writes JSON.

    python benchmarks/inverse_problems.py                          # cpu profile: 100 digits, 100 steps
    python benchmarks/inverse_problems.py --n-images 20 --problems deblur --methods tv dps
    python benchmarks/inverse_problems.py --tune                   # the search behind inverse.TUNED

Problems (``inverse.PROBLEMS``, deepinv physics, measurement noise 0.02 unless denoising):
random 50 % inpainting, a centred 10 x 10 box, Gaussian deblurring (1.5 px), 2x super-
resolution, denoising at sigma 0.1 / 0.2 / 0.4. Methods (``inverse.METHODS``): the pseudo-
inverse, total variation (proximal gradient), plug-and-play HQS with chapter 04's denoising
autoencoder; DPS, DiffPIR and DDRM through deepinv with the course model as the denoiser,
and the course's own DPS (``inverse.dps_sample``). The digits are the first --n-images of
MNIST's test split (never trained on); the judge is ``judge.load_judge(profile)``. The model
is the reference shipped with the course (``--model reference``) or the student's own.

``--tune`` runs the grid search behind ``inverse.TUNED`` instead, on test digits 9,000 and up
(never the scored ones), and writes every setting's mean PSNR.

Run it on an otherwise idle machine: torch uses every core.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from diffusion_course.course.cli import benchmark_parser, write_result
from diffusion_course.course.settings import chapter_settings
from diffusion_course.data.mnist import test_images
from diffusion_course.data.transforms import to_unit
from diffusion_course.evaluation.judge import load_judge
from diffusion_course.models.deepinv import AutoencoderDenoiser, CourseDenoiser
from diffusion_course.recipes.autoencoder import load_denoising_autoencoder
from diffusion_course.recipes.inverse import (METHODS, PROBLEMS, make_problem, psnr_ssim, restore,
                                              settings_for, study, summary)
from diffusion_course.recipes.mnist_ddpm import load_mnist_model

TUNE_GRID = {  # geometric grids around each method's usual range (a first, narrower round put the best at the edges)
    "dps": ("dps_weight", (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)),
    "diffpir": ("diffpir_lambda", (0.1, 0.3, 1.0, 3.0, 10.0)),
    "tv": ("tv_lambda", (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
    "pnp-dae": ("pnp_stepsize", (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)),
}
TUNE_FIRST = 9_000


def tune(problems, methods, denoiser, dae, steps, n, seed) -> dict:
    """Mean PSNR of every grid value (``TUNE_GRID``) per problem and method, on test digits
    TUNE_FIRST.. TUNE_FIRST + n."""
    x = to_unit(test_images()[0][TUNE_FIRST:TUNE_FIRST + n])
    out = {}
    for name in problems:
        physics = make_problem(name, seed)
        y = physics(x)
        for method in methods:
            if method not in TUNE_GRID:
                continue
            knob, values = TUNE_GRID[method]
            scores = {}
            for v in values:
                cfg = replace(settings_for(name, steps), **{knob: v})
                scores[v] = psnr_ssim(restore(method, y, physics, cfg, denoiser, dae, seed), x)[0].mean().item()
                print(f"{name:15s} {method:9s} {knob}={v:<7g} PSNR {scores[v]:.2f} dB", flush=True)
            out.setdefault(name, {})[method] = {"knob": knob, "psnr": scores,
                                                "best": max(scores, key=scores.get)}
    return out


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/inverse_problems.json", knobs=False,
                         profile_help="profile of the judge, the autoencoder and the student's model")
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--n-images", type=int, default=None, help="test digits (default: chapter 12's n_images)")
    p.add_argument("--steps", type=int, default=None, help="network calls per diffusion sampler "
                   "(default: chapter 12's steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune", action="store_true", help="grid-search the methods' settings instead "
                   "(default output build/benchmarks/inverse_problems_tune.json)")
    p.set_defaults(out=None)
    args = p.parse_args(argv)
    args.out = args.out or Path(f"build/benchmarks/inverse_problems{'_tune' if args.tune else ''}.json")
    return args


def run_study(args, cfg, denoiser, dae) -> dict:
    """Chapter 12's study on the first ``n_images`` test digits: every problem and method."""
    test_x, test_y = test_images()
    x, labels = to_unit(test_x[:cfg.n_images]), test_y[:cfg.n_images]
    judge = load_judge(args.profile)
    results = study(args.problems, args.methods, x, labels, denoiser, dae, judge, cfg.steps, cfg.seed)
    out = {"judge": judge.describe(), "summary": summary(results),
           "results": {name: {**{k: v for k, v in r.items() if k != "measurement"},
                              "methods": {m: {k: v for k, v in row.items() if k != "restored"}
                                          for m, row in r["methods"].items()}}
                       for name, r in results.items()}}
    for name, r in out["results"].items():
        for m, row in r["methods"].items():
            print(f"{name:15s} {m:15s} PSNR {row['psnr']:6.2f} +- {row['psnr_sd']:.2f}  SSIM {row['ssim']:.3f}  "
                  f"judge {100 * row['judge_accuracy']:5.1f} %  {1000 * row['seconds_per_image']:7.1f} ms/image")
    print(json.dumps(out["summary"], indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    cfg = chapter_settings("12", args.profile, model=args.model, n_images=args.n_images, steps=args.steps,
                           seed=args.seed)
    net, info = load_mnist_model(args.profile, args.model)
    tcfg = info["train_config"]
    denoiser = CourseDenoiser(net.float(), tcfg.noise_schedule(), tcfg.kind)
    autoencoder, ae_info = load_denoising_autoencoder(chapter_settings("04", args.profile))
    dae = AutoencoderDenoiser(autoencoder)
    result = {"benchmark": "inverse_problems", "profile": args.profile, "model": args.model,
              "settings": cfg.as_dict(), "autoencoder": {k: ae_info[k] for k in ("path", "trained_now", "seconds")}}
    start = time.perf_counter()
    if args.tune:
        result["tuning"] = tune(args.problems, args.methods, denoiser, dae, cfg.steps, 32, cfg.seed)
    else:
        result.update(run_study(args, cfg, denoiser, dae))
    result["seconds"] = time.perf_counter() - start
    print(f"wrote {write_result(args, result, cfg.device)}")


if __name__ == "__main__":
    main()
