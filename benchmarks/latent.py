"""Benchmark: latent diffusion (chapter 10) against the pixel-space chapter-05 model at the
same profile: reconstruction error of the autoencoder, training time, time per training step,
time per image at the same sampler step count, parameters, and the course judge's report card.
Writes JSON.

    python benchmarks/latent.py                                   # cpu profile, 1,000 digits each
    python benchmarks/latent.py --profile ci --n-samples 100      # smoke test
    python benchmarks/latent.py --set kl_weight=0                 # a plain autoencoder instead of the VAE
    python benchmarks/latent.py --variant kl_weight=0             # ... and also score that one
    python benchmarks/latent.py --model student                   # against the student's pixel model

The chapter-10 autoencoder and latent model come from the course's checkpoint cache (trained
there first if absent, as the chapter does: ``recipes.latent.load_or_train_codec`` and
``recipes.latent.load_or_train_latent_ddpm``); the pixel-space chapter-05 model is the reference
shipped with the course (``--model reference``, the default) or the student's own
(``--model student``, chapter 05's settings for the profile), from
``recipes.mnist_ddpm.load_mnist_model``. The training times reported are the ones measured when the
models were trained. Data: the first ``n_train`` digits of MNIST's training split.
Evaluation (``evaluation.judge.load_judge``): the samples against all 10,000 digits of the test split,
the floor N random training digits against the same test split (mean of 10 seeded draws);
the autoencoder's reconstruction error on N random test digits.

Timing: time per image is measured with both models taking turns, each generating
--timing-images digits per turn with the same sampler and step count, the latent one
including its single decoder pass; the fastest of --timing-repeats turns counts (so that a
busy machine slows both alike). The wall time of generating all --n-samples digits is kept
too (seconds_per_image_full_run). The sampling runs in float32 for both (on this CPU bf16
autocast made neither model faster: the JSON also has an interleaved bf16 / fp32 timing).
Time per training step is the fastest of a few interleaved steps of each model. Run it on an
otherwise idle machine if you can; a busy one slows both models, though not always alike.

Target: the latent model samples >= 4x faster per image than the pixel model at
the same step count, with a Frechet distance (on the judge's features, against the test
split) at most 1.5x the pixel model's.
"""
from __future__ import annotations

import json
import time

import torch

from diffusion_course.course.cli import benchmark_parser, check_sample_count, knob_overrides, write_result
from diffusion_course.course.settings import chapter_settings, parse_value
from diffusion_course.data.mnist import N_TEST, data_spec, training_images
from diffusion_course.evaluation.judge import accuracy, load_judge
from diffusion_course.models.unet import count_parameters
from diffusion_course.recipes.latent import (LatentDiffusion, generate_in_batches, generators,
                                             latent_train_config, load_or_train_codec,
                                             load_or_train_latent_ddpm, reconstruction_report,
                                             seconds_per_image, seconds_per_train_step)
from diffusion_course.recipes.mnist_ddpm import load_mnist_model


def summary(pixel: dict, latent: dict) -> dict:
    speedup = pixel["seconds_per_image"] / latent["seconds_per_image"]
    fd_ratio = latent["evaluation"]["frechet"] / pixel["evaluation"]["frechet"]
    return {"sampling_speedup_latent_vs_pixel": speedup,
            "train_step_speedup_latent_vs_pixel": pixel["seconds_per_train_step"] / latent["seconds_per_train_step"],
            "frechet_latent_over_pixel": fd_ratio,
            "targets_met": {"sampling_at_least_4x_faster": speedup >= 4,
                            "frechet_within_1.5x_of_pixel": fd_ratio <= 1.5}}


def parse(argv: list[str] | None):
    p = benchmark_parser(__doc__, "build/benchmarks/latent.json",
                         model_help="the pixel-space model compared against: the shipped reference, or "
                                    "the student's own chapter-05 model (the chapter-10 knob MODEL)",
                         knob_help="override a chapter-10 knob, e.g. kl_weight=0 or train_steps=3000")
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per model (10..{N_TEST})")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--timing-images", type=int, default=50, help="digits per timed turn")
    p.add_argument("--timing-repeats", type=int, default=3, help="timed turns per model")
    p.add_argument("--variant", action="append", default=[], metavar="KNOB=VALUE",
                   help="also train (or load) and score a latent model with this chapter-10 knob changed, "
                        "e.g. kl_weight=0 (reconstruction, quality and time per image only)")
    args = p.parse_args(argv)
    check_sample_count(p, args.n_samples)
    return args


def held_out(codec, judge, real, real_y, device) -> dict:
    """The autoencoder on held-out test digits: reconstruction error and the judge's accuracy."""
    rec = codec.reconstruct(real.to(device)).cpu()
    return {**reconstruction_report(codec, real.to(device)),
            "classifier_accuracy_on_reconstructions": accuracy(judge.classifier, rec, real_y)}


def generation_rows(gens: dict, judge, n: int, args, seed: int) -> dict:
    """Each model's n digits (the same sampler and steps, float32), scored; then the headline
    time per image: both models take turns generating --timing-images digits, the fastest of
    --timing-repeats turns each (a busy machine slows both alike)."""
    rows = {}
    for name, generate in gens.items():
        start = time.perf_counter()
        x = generate_in_batches(generate, n, args.sample_batch, torch.Generator().manual_seed(seed + 1))
        seconds = time.perf_counter() - start
        rows[name] = {"seconds_per_image_full_run": seconds / n, "evaluation": judge.evaluate(x)}
        print(f"{name:6s}: {1000 * seconds / n:.2f} ms/image, FD {rows[name]['evaluation']['frechet']:.3f}, "
              f"FD/floor {rows[name]['evaluation']['frechet_ratio']:.2f}", flush=True)
    timing = seconds_per_image({name: (lambda b, f=f: f(b, torch.Generator().manual_seed(0)))
                                for name, f in gens.items()}, n=args.timing_images, repeats=args.timing_repeats)
    for name in rows:
        rows[name]["seconds_per_image"] = timing[name]
    return rows


def precision_check(gens: dict) -> dict:
    """A short interleaved check of bf16 against fp32: 20 digits each, at the same step count."""
    prec = {}
    for precision in ("fp32", "bf16"):
        prec.update(seconds_per_image({f"{m}_{precision}": (lambda b, f=f, pr=precision:
                                                            f(b, torch.Generator().manual_seed(0), pr))
                                       for m, f in gens.items()}, n=20, repeats=2))
    return prec


def variant_row(kv: str, args, overrides: dict, judge, real, real_y, cfg) -> dict:
    """Another latent model (one chapter-10 knob changed): its autoencoder, quality and time."""
    k, v = kv.split("=", 1)
    vcfg = chapter_settings("10", args.profile, **{**overrides, k: parse_value(v)})
    vcodec, vcinfo = load_or_train_codec(vcfg)
    vunet, vlinfo = load_or_train_latent_ddpm(vcfg, vcodec, vcinfo["key"])
    vldm = LatentDiffusion(vunet, vcodec, latent_train_config(vcfg).noise_schedule(), kind="v", precision="fp32")
    start = time.perf_counter()
    x = generate_in_batches(lambda b, g: vldm.sample(b, cfg.sample_steps, eta=cfg.eta, generator=g,
                                                     device=cfg.device)[0],
                            args.n_samples, args.sample_batch, torch.Generator().manual_seed(cfg.seed + 1))
    row = {"autoencoder": {"variational": vcodec.autoencoder.config["variational"], "shift": vcodec.shift,
                           "scale": vcodec.scale, "train_seconds": vcinfo["seconds"],
                           "held_out": held_out(vcodec, judge, real, real_y, cfg.device)},
           "latent_model_train_seconds": vlinfo["seconds"],
           "seconds_per_image": (time.perf_counter() - start) / args.n_samples, "evaluation": judge.evaluate(x)}
    print(f"variant {kv}: FD {row['evaluation']['frechet']:.3f}, "
          f"PSNR {row['autoencoder']['held_out']['psnr_db']:.1f} dB", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(torch.get_num_threads())  # respect OMP_NUM_THREADS
    overrides = knob_overrides(args)
    cfg = chapter_settings("10", args.profile, **{**overrides, "model": args.model})
    device, n = cfg.device, args.n_samples
    pixel_model, pinfo = load_mnist_model(args.profile, cfg.model)
    tcfg05, tcfg10 = pinfo["train_config"], latent_train_config(cfg)
    codec, cinfo = load_or_train_codec(cfg)
    unet, linfo = load_or_train_latent_ddpm(cfg, codec, cinfo["key"])
    train_x, judge = training_images(cfg.n_train)[0], load_judge(args.profile)
    # n random test digits and n random training digits (MNIST is stored in writer order, so
    # the first n would not be a fair draw)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(judge.test_x), generator=g)[:n]
    real, real_y = judge.test_x[pick], judge.test_y[pick]
    drawn = train_x[torch.randperm(len(train_x), generator=g)[:n]]
    recon = {**held_out(codec, judge, real, real_y, device), "test_digits": n,
             "classifier_accuracy_on_originals": accuracy(judge.classifier, real, real_y),
             "reconstructions_as_samples": judge.evaluate(codec.reconstruct(drawn.to(device)))}
    step_s = seconds_per_train_step({"pixel": pixel_model, "latent": unet},   # interleaved
                                    {"pixel": train_x[:2000], "latent": codec.encode(train_x[:2000].to(device)).cpu()},
                                    {"pixel": tcfg05, "latent": tcfg10}, device=device)
    ldm = LatentDiffusion(unet, codec, tcfg10.noise_schedule(), kind=tcfg10.kind, precision="fp32")
    gens = generators(pixel_model, tcfg05, ldm, cfg.sample_steps, cfg.eta, device)
    rows = generation_rows(gens, judge, n, args, cfg.seed)
    for name, model in (("pixel", pixel_model), ("latent", unet)):
        rows[name].update(parameters=count_parameters(model), seconds_per_train_step=step_s[name])
    rows["pixel"].update(model=pinfo["source"], train_seconds=pinfo["seconds"], train_steps=pinfo["steps"],
                         batch_size=tcfg05.batch_size, trained_now=pinfo["trained_now"])
    rows["latent"].update(train_seconds=cinfo["seconds"] + linfo["seconds"], train_steps=linfo["steps"],
                          batch_size=tcfg10.batch_size, trained_now=linfo["trained_now"] or cinfo["trained_now"],
                          autoencoder_train_seconds=cinfo["seconds"], latent_model_train_seconds=linfo["seconds"],
                          decoder_parameters=count_parameters(codec.autoencoder.decoder),
                          encoder_parameters=count_parameters(codec.autoencoder.encoder))
    result = {
        "benchmark": "latent", "profile": cfg.profile, "settings": cfg.as_dict(),
        "pixel_settings": pinfo["settings"], "data": data_spec(cfg.n_train),
        "autoencoder": {"variational": codec.autoencoder.config["variational"], "kl_weight": cfg.kl_weight,
                        "latent_shape": list(codec.latent_shape), "shift": codec.shift, "scale": codec.scale,
                        "train_seconds": cinfo["seconds"], "trained_now": cinfo["trained_now"], "held_out": recon},
        "sampler": {"steps": cfg.sample_steps, "eta": cfg.eta, "n_samples": n, "precision": "fp32",
                    "pixel_clip_x0": True, "latent_clip_x0": False},
        "pixel": rows["pixel"], "latent": rows["latent"],
        "latent_variants": {kv: variant_row(kv, args, overrides, judge, real, real_y, cfg) for kv in args.variant},
        "seconds_per_image_at_sample_steps_by_precision_short_run": precision_check(gens),
        "judge": judge.describe(), "summary": summary(rows["pixel"], rows["latent"]),
    }
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {write_result(args, result, device)}")


if __name__ == "__main__":
    main()
