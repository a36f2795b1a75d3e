"""Chapter 05's recipe on your own pictures: the course's U-Net (v-prediction, min-SNR 5, the
linear schedule with T = 1000, AdamW, EMA) trained on every image of a folder, then a grid of
samples and the check that the model is not copying its training images.

    python -m diffusion_course train --images DIR --size 32 --channels 3 --minutes 10
    torchrun --nproc-per-node 4 -m diffusion_course train --images DIR --size 64   # 4 GPUs

The settings are chapter 05's for the profile (``--set KNOB=VALUE`` changes one, e.g.
``--set base_width=64``); the model is cached and resumable like every other: run the same
command again after an interruption, or with more ``--minutes``, and it goes on from its last
checkpoint. A tenth of the images (at least one) is held out: their distance to the nearest
training image is what "not a copy" looks like, and the samples' distances are set beside it.
Writes ``samples.png`` and ``report.json`` into ``--out`` (default ``build/images/<folder>``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..course.cli import knob_overrides
from ..course.plotting import tile
from ..course.settings import chapter_settings, resolve_profile, train_config_from
from ..data.image_folder import load_image_folder
from ..evaluation.coverage import nearest_neighbour_distances
from ..models.unet import UNet, count_parameters
from ..training import distributed
from ..training.cache import load_or_train
from .sampler_sweep import generate


def levels(size: int) -> tuple[int, ...]:
    """The U-Net's width multipliers for ``size`` x ``size`` images folded into 2x2 patches:
    halve until the coarsest grid is at most 8 x 8 (where attention is cheap)."""
    if size < 8 or size % 2:
        raise ValueError(f"size {size} is too small or odd: use an even size of at least 8 (e.g. 32 or 64)")
    mults, side = [1], size // 2
    while side > 8:
        if side % 2:
            raise ValueError(f"size {size} cannot be halved down to 8 x 8 or less (the U-Net halves "
                             f"{size // 2} after folding 2x2 patches): use a size like 32, 48 or 64")
        mults.append(2)
        side //= 2
    return tuple(mults)


def make_unet(size: int, channels: int, width: int) -> UNet:
    """Chapter 05's U-Net for ``channels`` x ``size`` x ``size`` images (2x2 patches, attention
    at the coarsest level)."""
    mults = levels(size)
    return UNet(in_channels=channels, base=width, mults=mults, blocks_per_level=1, patch=2,
                attention_levels=(len(mults) - 1,))


def split(n: int) -> int:
    """How many images are held out: a tenth, at least one (and never all)."""
    if n < 2:
        raise ValueError(f"a folder of {n} image cannot be split into training and held-out images; add more")
    return max(1, n // 10)


def train_on_folder(folder: Path, size: int, channels: int, profile: str, minutes: float | None,
                    steps: int | None = None, overrides: dict | None = None, progress: bool = True):
    """(EMA model, info, data, number held out): chapter 05's recipe on ``folder``'s images."""
    data = load_image_folder(folder, size, channels)
    held = split(len(data.images))
    cfg = chapter_settings("05", profile, runner_overrides=False,
                           **{**(overrides or {}), **({"train_steps": steps} if steps else {})})
    tcfg = train_config_from(cfg, schedule="linear", T=1000)
    device = distributed.start()
    spec = {**data.spec(folder, size, channels), "held_out": f"first {held}"}
    ema, info = load_or_train(f"folder-{Path(folder).resolve().name}", lambda: make_unet(size, channels, cfg.base_width),
                              tcfg, lambda: (data.images[held:], None), spec, device=device, progress=progress,
                              max_seconds=None if minutes is None else 60 * minutes)
    return ema, {**info, "train_config": tcfg, "settings": cfg.as_dict()}, data, held


def report(ema, info: dict, data, held: int, n: int, sample_steps: int, out: Path) -> dict:
    """Sample ``n`` images (ancestral, ``sample_steps`` steps), save the grid, and measure how
    close they sit to the training images against the held-out ones."""
    tcfg, c, size = info["train_config"], data.images.shape[1], data.images.shape[-1]
    device = next(ema.parameters()).device
    x_T = torch.randn((n, c, size, size), generator=torch.Generator().manual_seed(tcfg.seed + 1))
    samples = generate(ema, tcfg, x_T, sample_steps, "ddpm", generator=torch.Generator().manual_seed(tcfg.seed + 2),
                       device=device, batch=250).cpu()
    train_x, held_x = data.images[held:], data.images[:held]
    near_samples = nearest_neighbour_distances(samples, train_x)
    near_held = nearest_neighbour_distances(held_x, train_x)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    grid = tile(samples, nrow=int(n ** 0.5) or 1)
    Image.fromarray((grid.numpy() * 255).round().astype("uint8")).save(out / "samples.png")
    return {"images": len(data.images), "held_out": held, "skipped_files": data.skipped, "classes": data.classes,
            "size": size, "channels": c, "parameters": count_parameters(ema), "train_steps_done": info["steps"],
            "train_steps": tcfg.steps, "complete": info["complete"], "train_minutes": round(info["seconds"] / 60, 2),
            "cache": info["path"], "samples": n, "sample_steps": sample_steps,
            "nearest_training_distance": {"samples_median": near_samples.median().item(),
                                          "held_out_median": near_held.median().item(),
                                          "samples_min": near_samples.min().item()},
            "grid": str(out / "samples.png")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffusion_course train", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="a folder of images (flat, or one subfolder per class)")
    p.add_argument("--size", type=int, default=32, help="side in pixels after resizing and centre-cropping")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="1: grayscale, 3: colour")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget of this run (it resumes)")
    p.add_argument("--steps", type=int, default=None, help="training steps in all (default: chapter 05's profile)")
    p.add_argument("--profile", default="auto", help="chapter 05's settings: ci, cpu, gpu or auto")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="a chapter-05 knob")
    p.add_argument("--samples", type=int, default=64, help="images in the sample grid")
    p.add_argument("--sample-steps", type=int, default=100, help="ancestral sampling steps")
    p.add_argument("--out", type=Path, default=None, help="where samples.png and report.json go")
    args = p.parse_args(argv)
    try:
        ema, info, data, held = train_on_folder(args.images, args.size, args.channels, resolve_profile(args.profile),
                                                args.minutes, args.steps, knob_overrides(args))
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    if data.skipped:
        print(f"skipped {len(data.skipped)} file(s) that could not be read: {', '.join(data.skipped[:10])}",
              file=sys.stderr)
    if not distributed.is_main():
        return 0
    out = args.out or Path("build") / "images" / args.images.resolve().name
    result = report(ema, info, data, held, args.samples, args.sample_steps, out)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    near = result["nearest_training_distance"]
    print(f"{result['train_steps_done']} of {result['train_steps']} steps ({result['train_minutes']} min, "
          f"{'complete' if result['complete'] else 'run the command again to go on'}); samples in {result['grid']}; "
          f"nearest training image: samples {near['samples_median']:.2f}, held-out images "
          f"{near['held_out_median']:.2f} (median pixel distance: much smaller for the samples means copying)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
