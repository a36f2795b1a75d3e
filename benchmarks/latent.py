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
there first if absent, as the chapter does: ``latent.load_or_train_codec`` and
``latent.load_or_train_latent_ddpm``); the pixel-space chapter-05 model is the reference
shipped with the course (``--model reference``, the default) or the student's own
(``--model student``, chapter 05's settings for the profile), from
``mnist_ddpm.load_mnist_model``. The training times reported are the ones measured when the
models were trained. Data: the first ``n_train`` digits of MNIST's training split.
Evaluation (``judge.load_judge``): the samples against all 10,000 digits of the test split,
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

import argparse
import json
import time
from pathlib import Path

import torch

from diffusion_course.judge import load_judge
from diffusion_course.latent import (LatentDiffusion, latent_train_config, load_or_train_codec,
                                     load_or_train_latent_ddpm, reconstruction_report,
                                     seconds_per_image, seconds_per_train_step)
from diffusion_course.metrics import accuracy
from diffusion_course.mnist_ddpm import MODELS, N_TEST, data_spec, load_mnist_model, training_images
from diffusion_course.report import machine_info
from diffusion_course.runner import parse_value
from diffusion_course.sampling import sample
from diffusion_course.settings import chapter_settings
from diffusion_course.training import autocast
from diffusion_course.unet import count_parameters


def summary(pixel: dict, latent: dict) -> dict:
    speedup = pixel["seconds_per_image"] / latent["seconds_per_image"]
    fd_ratio = latent["evaluation"]["frechet"] / pixel["evaluation"]["frechet"]
    return {"sampling_speedup_latent_vs_pixel": speedup,
            "train_step_speedup_latent_vs_pixel": pixel["seconds_per_train_step"] / latent["seconds_per_train_step"],
            "frechet_latent_over_pixel": fd_ratio,
            "targets_met": {"sampling_at_least_4x_faster": speedup >= 4,
                            "frechet_within_1.5x_of_pixel": fd_ratio <= 1.5}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--model", choices=MODELS, default="reference",
                   help="the pixel-space model compared against: the shipped reference, or the "
                        "student's own chapter-05 model (the chapter-10 knob MODEL)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a chapter-10 knob, e.g. kl_weight=0 or train_steps=3000")
    p.add_argument("--n-samples", type=int, default=1000, help=f"digits per model (10..{N_TEST})")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--timing-images", type=int, default=50, help="digits per timed turn")
    p.add_argument("--timing-repeats", type=int, default=3, help="timed turns per model")
    p.add_argument("--variant", action="append", default=[], metavar="KNOB=VALUE",
                   help="also train (or load) and score a latent model with this chapter-10 knob changed, "
                        "e.g. kl_weight=0 (reconstruction, quality and time per image only)")
    p.add_argument("--out", type=Path, default=Path("build/benchmarks/latent.json"))
    p.add_argument("--note", default=None, help='stored in the JSON, e.g. "machine idle"')
    args = p.parse_args(argv)
    if not 10 <= args.n_samples <= N_TEST:
        p.error(f"--n-samples must lie in 10..{N_TEST} (the test split's size)")
    torch.set_num_threads(torch.get_num_threads())  # respect OMP_NUM_THREADS

    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = chapter_settings("10", args.profile, **{**overrides, "model": args.model})
    device = cfg.device

    # the two models, the course's judge, the data
    pixel_model, pinfo = load_mnist_model(args.profile, cfg.model)
    tcfg05 = pinfo["train_config"]
    codec, cinfo = load_or_train_codec(cfg)
    unet, linfo = load_or_train_latent_ddpm(cfg, codec, cinfo["key"])
    tcfg10 = latent_train_config(cfg)
    train_x = training_images(cfg.n_train)[0]
    judge = load_judge(args.profile)
    n = args.n_samples
    # n random test digits and n random training digits (MNIST is stored in writer order, so
    # the first n would not be a fair draw)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(judge.test_x), generator=g)[:n]
    real, real_y = judge.test_x[pick], judge.test_y[pick]
    drawn = train_x[torch.randperm(len(train_x), generator=g)[:n]]

    # 1. the autoencoder on test digits; training digits reconstructed and scored like samples
    rec = codec.reconstruct(real.to(device)).cpu()
    recon = {**reconstruction_report(codec, real.to(device)), "test_digits": n,
             "classifier_accuracy_on_reconstructions": accuracy(judge.classifier, rec, real_y),
             "classifier_accuracy_on_originals": accuracy(judge.classifier, real, real_y),
             "reconstructions_as_samples": judge.evaluate(codec.reconstruct(drawn.to(device)))}

    # 2. cost of a training step (interleaved), from the training data each model sees
    latents = codec.encode(train_x[:2000].to(device)).cpu()
    step_s = seconds_per_train_step({"pixel": pixel_model, "latent": unet},
                                    {"pixel": train_x[:2000], "latent": latents},
                                    {"pixel": tcfg05, "latent": tcfg10}, device=device)

    # 3. generation: the same sampler and step count for both, float32
    ldm = LatentDiffusion(unet, codec, tcfg10.noise_schedule(), kind=tcfg10.kind, precision="fp32")

    def pixel_generate(b, gen, precision="fp32"):
        with autocast(precision, device):
            return sample(pixel_model, (b, 1, 28, 28), tcfg05.noise_schedule(), steps=cfg.sample_steps,
                          eta=cfg.eta, kind=tcfg05.kind, generator=gen, device=device).x0.float()

    def latent_generate(b, gen, precision="fp32"):
        ldm.precision = precision
        out = ldm.sample(b, cfg.sample_steps, eta=cfg.eta, generator=gen, device=device)[0]
        ldm.precision = "fp32"
        return out

    rows = {}
    for name, generate, params in (("pixel", pixel_generate, count_parameters(pixel_model)),
                                   ("latent", latent_generate, count_parameters(unet))):
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        start = time.perf_counter()
        x = torch.cat([generate(min(args.sample_batch, n - i), gen) for i in range(0, n, args.sample_batch)])
        seconds = time.perf_counter() - start
        rows[name] = {"parameters": params, "seconds_per_image": seconds / n,
                      "seconds_per_train_step": step_s[name], "evaluation": judge.evaluate(x)}
        print(f"{name:6s}: {1000 * seconds / n:.2f} ms/image, FD {rows[name]['evaluation']['frechet']:.3f}, "
              f"FD/floor {rows[name]['evaluation']['frechet_ratio']:.2f}", flush=True)
    # the headline time per image: both models take turns generating --timing-images digits at the same
    # step count, the fastest of --timing-repeats turns each (a busy machine slows both alike)
    timing = seconds_per_image({name: (lambda b, f=f: f(b, torch.Generator().manual_seed(0)))
                                for name, f in (("pixel", pixel_generate), ("latent", latent_generate))},
                               n=args.timing_images, repeats=args.timing_repeats)
    for name in rows:
        rows[name]["seconds_per_image_full_run"] = rows[name]["seconds_per_image"]
        rows[name]["seconds_per_image"] = timing[name]
    rows["pixel"].update(model=pinfo["source"], train_seconds=pinfo["seconds"], train_steps=pinfo["steps"],
                         batch_size=tcfg05.batch_size, trained_now=pinfo["trained_now"])
    rows["latent"].update(train_seconds=cinfo["seconds"] + linfo["seconds"], train_steps=linfo["steps"],
                          batch_size=tcfg10.batch_size, trained_now=linfo["trained_now"] or cinfo["trained_now"],
                          autoencoder_train_seconds=cinfo["seconds"], latent_model_train_seconds=linfo["seconds"],
                          decoder_parameters=count_parameters(codec.autoencoder.decoder),
                          encoder_parameters=count_parameters(codec.autoencoder.encoder))
    # a short interleaved check of precision: 20 digits each, at the same step count
    prec = {}
    for precision in ("fp32", "bf16"):
        short = {f"{m}_{precision}": (lambda b, f=f, pr=precision: f(b, torch.Generator().manual_seed(0), pr))
                 for m, f in (("pixel", pixel_generate), ("latent", latent_generate))}
        prec.update(seconds_per_image(short, n=20, repeats=2))

    variants = {}
    for kv in args.variant:
        k, v = kv.split("=", 1)
        vcfg = chapter_settings("10", args.profile, **{**overrides, k: parse_value(v)})
        vcodec, vcinfo = load_or_train_codec(vcfg)
        vunet, vlinfo = load_or_train_latent_ddpm(vcfg, vcodec, vcinfo["key"])
        vldm = LatentDiffusion(vunet, vcodec, latent_train_config(vcfg).noise_schedule(), kind="v", precision="fp32")
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        start = time.perf_counter()
        x = torch.cat([vldm.sample(min(args.sample_batch, n - i), cfg.sample_steps, eta=cfg.eta, generator=gen,
                                   device=device)[0] for i in range(0, n, args.sample_batch)])
        seconds = time.perf_counter() - start
        vrec = vcodec.reconstruct(real.to(device)).cpu()
        variants[kv] = {
            "autoencoder": {"variational": vcodec.autoencoder.config["variational"], "shift": vcodec.shift,
                            "scale": vcodec.scale, "train_seconds": vcinfo["seconds"],
                            "held_out": {**reconstruction_report(vcodec, real.to(device)),
                                         "classifier_accuracy_on_reconstructions":
                                             accuracy(judge.classifier, vrec, real_y)}},
            "latent_model_train_seconds": vlinfo["seconds"], "seconds_per_image": seconds / n,
            "evaluation": judge.evaluate(x)}
        print(f"variant {kv}: FD {variants[kv]['evaluation']['frechet']:.3f}, "
              f"PSNR {variants[kv]['autoencoder']['held_out']['psnr_db']:.1f} dB", flush=True)

    result = {
        "benchmark": "latent", "profile": cfg.profile, "settings": cfg.as_dict(),
        "pixel_settings": pinfo["settings"], "data": data_spec(cfg.n_train),
        "autoencoder": {"variational": codec.autoencoder.config["variational"], "kl_weight": cfg.kl_weight,
                        "latent_shape": list(codec.latent_shape), "shift": codec.shift, "scale": codec.scale,
                        "train_seconds": cinfo["seconds"], "trained_now": cinfo["trained_now"],
                        "held_out": recon},
        "sampler": {"steps": cfg.sample_steps, "eta": cfg.eta, "n_samples": n, "precision": "fp32",
                    "pixel_clip_x0": True, "latent_clip_x0": False},
        "pixel": rows["pixel"], "latent": rows["latent"], "latent_variants": variants,
        "seconds_per_image_at_sample_steps_by_precision_short_run": prec,
        "judge": judge.describe(), "machine": machine_info(device), "note": args.note,
        "summary": summary(rows["pixel"], rows["latent"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
