"""Train a reference model and write its package file (then pin the printed sha256 in
``training.references.SHA256``):

    python -m diffusion_course.recipes.references mnist-ddpm    # chapters 05-10's reference
    python -m diffusion_course.recipes.references mnist-cond    # chapter 09's class-conditional twin
    python -m diffusion_course.recipes.references fsdd-logmag   # chapter 11's spoken digits
    python -m diffusion_course.recipes.references mnist-pd-1    # progressive distillation (also -2, -4, -8)
    python -m diffusion_course.recipes.references mnist-cd      # consistency distillation
    python -m diffusion_course.recipes.references mnist-controlnet  # chapter 16's ControlNet
    python -m diffusion_course.recipes.references mnist-clip    # chapter 17's encoder pair
    python -m diffusion_course.recipes.references mnist-text    # chapter 17's text-to-image U-Net (after mnist-clip)

Training goes through ``training.cache.load_or_train`` (the course cache, resumable: run the
same command again after an interruption). Run it on an otherwise idle machine. On several
GPUs, launch it with ``torchrun --nproc-per-node N -m diffusion_course.recipes.references
NAME``: each of N processes takes a slice of every batch (``training.distributed``; the recipe's
batch size is then per process, so the run is another recipe, with another cache entry).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..training import distributed
from ..training.references import COMMAND, export_reference, sha256sum
from . import control, few_step, mnist_ddpm, spoken_digits, text_to_image


def trainers() -> dict:
    """Every reference name -> the function that trains it: (EMA model, ``load_or_train`` info
    with ``train_config`` and ``settings``). Each recipe lives beside its model."""
    return {**{name: mnist_ddpm.train_reference for name in mnist_ddpm.REFERENCE_RECIPES},
            **{name: spoken_digits.train_reference for name in spoken_digits.REFERENCE_RECIPES},
            **{name: few_step.train_reference for name in few_step.REFERENCE_RECIPES},
            **{name: control.train_reference for name in control.REFERENCE_RECIPES},
            **{name: text_to_image.train_reference for name in text_to_image.REFERENCE_RECIPES}}


def main(argv: list[str] | None = None) -> int:
    train_by_name = trainers()
    parser = argparse.ArgumentParser(prog="python -m diffusion_course.recipes.references",
                                     description="Train a reference model and write its package file.")
    parser.add_argument("name", choices=sorted(train_by_name))
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: the package's)")
    args = parser.parse_args(argv)
    distributed.start()
    print(f"training reference {args.name}")
    ema, info = train_by_name[args.name](args.name)
    if not distributed.is_main():
        return 0
    if not info["complete"]:
        print("training stopped early; run the command again to resume", file=sys.stderr)
        return 1
    settings = {k: v for k, v in info["settings"].items() if k != "device"}
    path = export_reference(args.name, ema.cpu(), info["train_config"], info, settings,
                            COMMAND.format(name=args.name), args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB), {info['steps']} steps in "
          f"{info['seconds'] / 60:.1f} min\nsha256 {sha256sum(path)}  (pin it in training.references.SHA256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
