"""The command line every benchmark shares (``benchmarks/*.py``): a profile, the chapter-05
model and its knob overrides, a note and the JSON file to write.

    parser = benchmark_parser(__doc__, "build/benchmarks/ddpm_mnist.json", model="student")
    args = parser.parse_args(argv)
    model, info = load_mnist_model(args.profile, args.model, **knob_overrides(args))
    ...
    write_result(args, {"benchmark": "ddpm_mnist", ...})     # + machine and note

A benchmark is a thin command over a recipe: it parses, calls the package, prints and writes.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

from ..data.mnist import N_TEST
from ..models.unet import count_parameters
from ..training.device import machine_info, pick_device
from .settings import MODELS, parse_value


def benchmark_parser(doc: str, out: str, model: str | None = "reference", knobs: bool = True,
                     profile_help: str = "profile of the judge and of the student's model",
                     model_help: str = "the reference shipped with the course, or the student's own "
                                       "chapter-05 model",
                     knob_help: str = "override a chapter-05 knob of the student's model, e.g. train_steps=2000"
                     ) -> argparse.ArgumentParser:
    """``--profile`` (default cpu), ``--out`` (default ``out``) and ``--note``; with ``model``,
    ``--model`` (reference or student, default ``model``); with ``knobs``, ``--set KNOB=VALUE``
    (knobs of the student's model, repeatable). The description is the first paragraph of
    ``doc``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help=profile_help)
    if model is not None:
        p.add_argument("--model", choices=MODELS, default=model, help=model_help)
    if knobs:
        p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help=knob_help)
    p.add_argument("--out", type=Path, default=Path(out), help=f"the JSON file to write (default {out})")
    p.add_argument("--note", default=None, help='stored in the JSON, e.g. "machine idle"')
    return p


def knob_overrides(args: argparse.Namespace) -> dict:
    """``--set`` as {knob: value}, each value read like the runner's ``-p`` (``parse_value``)."""
    pairs = [kv.split("=", 1) for kv in getattr(args, "set", [])]
    bad = [kv for kv in pairs if len(kv) != 2]
    if bad:
        raise SystemExit(f"--set takes KNOB=VALUE, got {['='.join(kv) for kv in bad]}")
    return {k: parse_value(v) for k, v in pairs}


def check_sample_count(parser: argparse.ArgumentParser, n: int | None, flag: str = "--n-samples") -> None:
    """Digits are scored against the test split, so at most its 10,000 (and at least 10)."""
    if n is not None and not 10 <= n <= N_TEST:
        parser.error(f"{flag} must lie in 10..{N_TEST} (the test split's size)")


def model_record(model, info: dict) -> dict:
    """What a benchmark's chapter-05 model is (an ``info`` of ``recipes.mnist_ddpm.load_mnist_model``):
    its source, settings, recipe and data, its size, and how its training went."""
    return {"model": info["source"], "settings": info["settings"], "train_config": asdict(info["train_config"]),
            "data": info["data"], "parameters": count_parameters(model),
            "trained_now": info["trained_now"], "train_steps_done": info["steps"],
            "train_complete": info["complete"], "train_seconds": round(info["seconds"], 1)}


def write_result(args: argparse.Namespace, result: dict, device=None, path: Path | None = None) -> Path:
    """``result`` with the machine it ran on and ``--note``, as JSON at ``path`` (``--out``)."""
    path = Path(path or args.out)
    result = {**result, "machine": machine_info(device or pick_device()), "note": args.note}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def spread(values: list[float]) -> dict:
    """What a benchmark reports of one number over its seeds: mean, sd (0 for one seed),
    min, max and how many."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}
