"""Profiles, per-chapter knobs and the choice of device: the one settings mechanism.

Every notebook has a papermill ``parameters`` cell with ``PROFILE = "auto"`` and the
chapter's knobs set to ``None`` ("use the profile's value"). The notebook then calls

    cfg = chapter_settings("02", PROFILE, n_draws=N_DRAWS, ...)

which resolves the profile, fills in the profile's defaults, validates every value and
returns a read-only ``Settings`` object. Anything unknown fails at once with a message that
lists what is allowed.

Profiles
  ci   seconds, tiny data: what tests and CI run
  cpu  the laptop default: minutes on a CPU, results that still look right
  gpu  full quality
  auto the ``COURSE_PROFILE`` environment variable if set, else ``gpu`` when CUDA or MPS is
       available, else ``cpu``
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

PROFILES = ("ci", "cpu", "gpu")
PROFILE_ENV = "COURSE_PROFILE"
DEVICE_ENV = "COURSE_DEVICE"


# ---------------------------------------------------------------------------------------
# Profile and device
# ---------------------------------------------------------------------------------------
def accelerator_available() -> bool:
    return torch.cuda.is_available() or (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    )


def resolve_profile(profile: str = "auto") -> str:
    """Turn ``auto`` (or an explicit name) into one of ``PROFILES``.

    An explicit profile is used as given. ``auto`` defers to ``$COURSE_PROFILE`` (CI sets it
    to ``ci``), and without it to device detection.
    """
    if not isinstance(profile, str):
        raise TypeError(f"PROFILE must be a string, one of {('auto',) + PROFILES}, got {profile!r}")
    name = profile.strip().lower()
    if name == "auto":
        forced = os.environ.get(PROFILE_ENV, "").strip().lower()
        if forced:
            if forced not in PROFILES:
                raise ValueError(
                    f"${PROFILE_ENV}={forced!r} is not a profile; allowed: {', '.join(PROFILES)}"
                )
            return forced
        return "gpu" if accelerator_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; allowed: auto, {', '.join(PROFILES)}"
        )
    return name


def pick_device(prefer: str | None = None) -> torch.device:
    """The one place where the course chooses a device: cuda, then mps, then cpu.

    ``prefer`` (or ``$COURSE_DEVICE``) forces one, e.g. ``"cpu"`` on a GPU machine.
    """
    want = (prefer or os.environ.get(DEVICE_ENV, "")).strip().lower()
    if want:
        allowed = ("cpu", "cuda", "mps")
        if want.split(":")[0] not in allowed:
            raise ValueError(f"unknown device {want!r}; allowed: {', '.join(allowed)}")
        return torch.device(want)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------
# Knobs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Knob:
    """One chapter setting: its value per profile and what values are allowed."""

    ci: Any
    cpu: Any
    gpu: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None

    @property
    def kind(self) -> type:
        return type(self.cpu)

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        text = f"{self.kind.__name__}"
        if self.min is not None and self.max is not None:
            text += f" in [{self.min}, {self.max}]"
        elif self.min is not None:
            text += f" >= {self.min}"
        elif self.max is not None:
            text += f" <= {self.max}"
        return text

    def check(self, name: str, value: Any) -> Any:
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok_type = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        in_choices = self.choices is None or value in self.choices
        in_range = ok_type and kind in (int, float) and (
            (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        )
        if not ok_type or not in_choices or (kind in (int, float) and not in_range):
            raise ValueError(f"bad value {value!r} for {name}; allowed: {self.allowed()}")
        return value


class Settings(Mapping):
    """Read-only resolved settings: ``cfg.n_draws`` or ``cfg["n_draws"]``."""

    def __init__(self, chapter: str, profile: str, device: torch.device, values: dict):
        self._values = MappingProxyType(dict(values))
        self.chapter, self.profile, self.device = chapter, profile, device

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"chapter {self.chapter} has no setting {name!r}; it has: {', '.join(self._values)}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict:
        return {"chapter": self.chapter, "profile": self.profile, "device": str(self.device),
                **self._values}

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Settings(chapter={self.chapter!r}, profile={self.profile!r}, device='{self.device}', {items})"


# The knobs of every chapter, in one table so instructors can see them all. Notebook
# parameters are the upper-case names (N_DRAWS sets n_draws); matching ignores case.
CHAPTERS: dict[str, dict[str, Knob]] = {
    "01": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "n_samples": Knob(20_000, 200_000, 1_000_000,
                          "Monte Carlo draws per KL estimate", min=100),
        "n_walkers": Knob(2_000, 20_000, 100_000,
                          "random walkers in the diffusion (heat equation) demo", min=10),
    },
    "02": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "n_draws": Knob(20_000, 200_000, 1_000_000,
                        "draws per pixel when checking the chain against q(x_t | x_0)", min=100),
        "T": Knob(1000, 1000, 1000, "number of diffusion steps of the main schedule", min=2),
        "schedule": Knob("linear", "linear", "linear", "schedule used to noise the digit",
                         choices=("linear", "scaled_linear", "cosine")),
        "digit_index": Knob(0, 0, 0, "which MNIST test image to noise", min=0, max=9999),
    },
    "05": {
        "seed": Knob(0, 0, 0, "random seed for training and sampling", min=0),
        "train_split": Knob("test", "train", "train", "MNIST split to train on ('test': its "
                            "first n_train images, the last 1,000 held out)", choices=("train", "test")),
        "n_train": Knob(2_000, 9_000, 60_000, "training images", min=100, max=60_000),
        "train_steps": Knob(60, 3_000, 20_000, "optimiser steps", min=1),
        "batch_size": Knob(32, 64, 128, "images per step", min=1),
        "base_width": Knob(16, 32, 64, "channels of the U-Net's first level", min=8),
        "lr": Knob(2e-3, 2e-3, 1e-3, "peak learning rate (AdamW)", min=0.0),
        "ema_decay": Knob(0.99, 0.995, 0.999, "EMA decay of the weights", min=0.0, max=0.9999),
        "kind": Knob("v", "v", "v", "what the network predicts", choices=("eps", "x0", "v")),
        "min_snr_gamma": Knob(5.0, 5.0, 5.0, "min-SNR loss weighting gamma (0: plain MSE)", min=0.0),
        "sample_steps": Knob(20, 100, 250, "DDIM steps for sample grids", min=1, max=1000),
        "n_samples": Knob(16, 64, 64, "images in the sample grids", min=1),
    },
}


def chapter_knobs(chapter: str) -> dict[str, Knob]:
    key = normalise_chapter(chapter)
    return CHAPTERS[key]


def normalise_chapter(chapter: str | int) -> str:
    """``2``, ``"02"`` and ``"02_forward_process"`` all name chapter ``"02"``."""
    text = str(chapter).strip()
    key = text.split("_", 1)[0].zfill(2) if text else text
    if key not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; known: {', '.join(sorted(CHAPTERS))}")
    return key


def chapter_settings(chapter: str | int, profile: str = "auto", **overrides: Any) -> Settings:
    """Resolve the profile and the chapter's knobs; ``None`` overrides mean "profile default".

    Raises ValueError naming the allowed profiles, knobs or values when anything is off.
    """
    key = normalise_chapter(chapter)
    knobs = CHAPTERS[key]
    name = resolve_profile(profile)
    by_lower = {k.lower(): k for k in knobs}  # N_DRAWS, n_draws and T all match
    given_values = {}
    for k, v in overrides.items():
        if k.lower() in by_lower:
            given_values[by_lower[k.lower()]] = v
    unknown = [k for k in overrides if k.lower() not in by_lower]
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for chapter {key}; "
            f"allowed: {', '.join(knobs)}"
        )
    values = {}
    for knob_name, knob in knobs.items():
        given = given_values.get(knob_name)
        value = getattr(knob, name) if given is None else given
        values[knob_name] = knob.check(knob_name, value)
    return Settings(key, name, pick_device(), values)


def describe(chapter: str | int) -> str:
    """A table of a chapter's knobs and their values per profile (for READMEs and --help)."""
    knobs = chapter_knobs(str(chapter))
    lines = [f"{'knob':<14}{'ci':>12}{'cpu':>12}{'gpu':>12}  allowed / meaning"]
    for name, k in knobs.items():
        lines.append(f"{name:<14}{k.ci!s:>12}{k.cpu!s:>12}{k.gpu!s:>12}  {k.allowed()}: {k.help}")
    return "\n".join(lines)
