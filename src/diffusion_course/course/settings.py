"""Profiles and per-chapter knobs: the one settings mechanism (the device and precision are
chosen in ``training.device``).

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

import ast
import json
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import torch

from ..training.device import PRECISIONS, accelerator_available, pick_device, resolve_precision
from ..training.loop import TrainConfig

PROFILES = ("ci", "cpu", "gpu")
PROFILE_ENV = "COURSE_PROFILE"
# Chapter-scoped overrides from the runner, as JSON {"05": {"TRAIN_STEPS": 3000}}: every
# chapter_settings("05", ...) sees them, so a chapter that uses chapter 05's model gets the
# model chapter 05 trained. (The runner sets it; `-p 05:TRAIN_STEPS 3000` on its command line.)
OVERRIDES_ENV = "COURSE_OVERRIDES"


# ---------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------
def resolve_profile(profile: str = "auto") -> str:
    """Turn ``auto`` (or an explicit name) into one of ``PROFILES``.

    An explicit profile is used as given. ``auto`` defers to ``$COURSE_PROFILE`` (CI sets it
    to ``ci``), and without it to the device: ``gpu`` with CUDA, else ``cpu`` (also on an
    Apple GPU, MPS: the ``gpu`` sizes are meant for a data-centre card, while a laptop's GPU
    runs the laptop profile faster than its CPU would; it says so).
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
        if torch.cuda.is_available():
            return "gpu"
        if accelerator_available():
            print("an Apple GPU (MPS) was found: running the laptop-sized 'cpu' profile on it "
                  "(PROFILE = 'gpu' asks for the full sizes)")
        return "cpu"
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; allowed: auto, {', '.join(PROFILES)}"
        )
    return name


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


MODELS = ("reference", "student")  # values of the MODEL knob of chapters 06-10 (mnist_ddpm)
MODEL_HELP = ("the chapter-05 model used: the reference shipped with the course, or the "
              "student's own (chapter 05's settings for the profile)")
MODEL_KNOB = Knob("reference", "reference", "reference", MODEL_HELP, choices=MODELS)  # chapters 06-08, 12, 13

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
    "03": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "n_points": Knob(4_000, 20_000, 100_000, "training points drawn from the ring of 8 "
                         "Gaussians", min=100),
        "T": Knob(100, 100, 1000, "diffusion steps of the 2-D DDPM (cosine schedule)", min=2),
        "train_steps": Knob(800, 4_000, 10_000, "optimiser steps of the 2-D DDPM", min=1),
        "n_samples": Knob(2_000, 5_000, 20_000, "points sampled from the DDPM and each GAN", min=100),
        "elbo_draws": Knob(1_000, 5_000, 20_000, "Monte Carlo draws per term of the ELBO", min=10),
        "gan_steps": Knob(400, 5_000, 8_000, "training steps of each GAN", min=10),
        "gan_seeds": Knob(2, 3, 5, "GANs trained, one per seed", min=1, max=20),
        "ddpm_seeds": Knob(3, 3, 3, "2-D DDPMs trained for the mode count, one per seed (the first is "
                           "the one sections 6-7 study)", min=1, max=20),
    },
    "04": {
        "seed": Knob(0, 0, 0, "random seed for initialisation, batches and noise", min=0),
        "n_train": Knob(2_000, 9_000, 60_000, "training images (the first of MNIST's training "
                        "split)", min=100, max=60_000),
        "n_eval": Knob(100, 1_000, 1_000, "test images for MSE / PSNR", min=10, max=10_000),
        "train_steps": Knob(100, 1_000, 4_000, "optimiser steps of each of the three denoisers "
                            "(autoencoder, U-Net without and with skips)", min=1),
        "batch_size": Knob(32, 64, 128, "images per step", min=1),
        "lr": Knob(2e-3, 2e-3, 1e-3, "learning rate (Adam, constant)", min=0.0),
        "max_noise_std": Knob(1.0, 1.0, 1.0, "training noise: each image gets sigma ~ U(0, max_noise_std)",
                              min=0.0),
        "width": Knob(16, 16, 32, "channels at 28x28 (twice as many at 14x14 and 7x7)", min=8),
        "latent_channels": Knob(4, 4, 4, "channels of the autoencoder's 7x7 latent grid", min=1),
    },
    "05": {
        "seed": Knob(0, 0, 0, "random seed for training and sampling", min=0),
        "n_train": Knob(2_000, 60_000, 60_000, "training images (the first of MNIST's training "
                        "split)", min=100, max=60_000),
        "train_steps": Knob(60, 4_000, 20_000, "optimiser steps", min=1),
        "batch_size": Knob(32, 128, 128, "images per step", min=1),
        "base_width": Knob(16, 32, 64, "channels of the U-Net's first level", min=8),
        "patch": Knob(2, 2, 1, "pixels per side folded into channels before the U-Net "
                      "(2: it runs at 14x14 and 7x7, about twice as fast)", choices=(1, 2)),
        "lr": Knob(2e-3, 3e-3, 1e-3, "peak learning rate (AdamW)", min=0.0),
        "ema_decay": Knob(0.99, 0.995, 0.999, "EMA decay of the weights", min=0.0, max=0.9999),
        "kind": Knob("v", "v", "v", "what the network predicts", choices=("eps", "x0", "v")),
        "min_snr_gamma": Knob(5.0, 5.0, 5.0, "min-SNR loss weighting gamma (0: plain MSE)", min=0.0),
        "precision": Knob("auto", "auto", "auto", "forward pass in bfloat16 or float32 ('auto': "
                          "bf16 where the hardware has fast bf16 maths, e.g. AMX CPUs)",
                          choices=("auto", *PRECISIONS)),
        "sample_steps": Knob(20, 100, 250, "DDIM steps of the schedule-mismatch grids", min=1, max=1000),
        "n_samples": Knob(16, 64, 64, "images in the sample grids", min=1),
        "n_compare": Knob(64, 500, 1_000, "digits each model draws for the side-by-side with the "
                          "reference model", min=10, max=10_000),
        "folder_steps": Knob(20, 500, 2_000, "optimiser steps of section 9's model trained on a "
                             "folder of PNG digits", min=1),
    },
    "06": {
        "seed": Knob(0, 0, 0, "random seed for the samples, the bad generators and the resampling", min=0),
        "model": MODEL_KNOB,
        "n_samples": Knob(200, 1_000, 2_000, "digits generated by the chapter-05 model",
                          min=50, max=10_000),
        "sample_steps": Knob(20, 50, 100, "DDIM steps (eta = 0) per generated digit", min=1, max=1000),
        "n_resamples": Knob(10, 10, 20, "random subsets per sample size in the bias curve", min=2),
    },
    "07": {
        "seed": Knob(0, 0, 0, "random seed for every noise draw in the chapter", min=0),
        "model": MODEL_KNOB,
        "sample_steps": Knob(20, 50, 100, "DDIM steps for the eta grid, the determinism check and "
                             "the interpolations", min=1, max=1000),
        "inversion_steps": Knob(20, 100, 250, "steps of DDIM inversion (and of the generation "
                                "back from the inverted noise)", min=1, max=1000),
        "n_eval": Knob(50, 200, 1_000, "digits per (sampler, steps) setting in the steps vs "
                       "quality table", min=10, max=10_000),
        "max_steps": Knob(20, 250, 1000, "largest step count of the table: it uses 10, 20, 50, "
                          "100, 250, 1000 up to this", min=10, max=1000),
    },
    # Chapters 08-11: each entry is owned by its chapter; keep the keys sorted.
    "08": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "model": MODEL_KNOB,
        "n_points": Knob(4_000, 20_000, 100_000, "2-D training points (ring of 8 Gaussians) for "
                         "the denoising-score-matching network", min=100),
        "score_steps": Knob(400, 3_000, 10_000, "optimiser steps of the 2-D score network", min=1),
        "n_particles": Knob(1_000, 2_000, 5_000, "particles in each Langevin run", min=100),
        "langevin_steps": Knob(200, 500, 1_000, "steps of plain Langevin; annealed Langevin spends "
                               "the same number over its 10 noise levels", min=10),
        "sample_steps": Knob(10, 50, 100, "steps of the MNIST sample grids", min=2, max=1000),
        "n_eval": Knob(50, 200, 1_000, "digits per (sampler, steps) setting in the quality "
                       "table", min=10, max=10_000),
        "max_steps": Knob(10, 100, 250, "largest step count of the quality table: it uses 10, 20, "
                          "50, 100, 250 up to this", min=10, max=1000),
    },
    "09": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "model": Knob("reference", "reference", "reference", "the class-conditional model used: the "
                      "reference shipped with the course, or the student's own (chapter 05's "
                      "settings for the profile)", choices=MODELS),
        "guidance_weights": Knob("0,0.5,2", "0,0.5,1,2,3,5", "0,0.5,1,1.5,2,3,5,8",
                                 "comma-separated guidance weights w of the sweep"),
        "sample_steps": Knob(20, 50, 100, "DDIM steps (eta = 0) of every generation in the "
                             "chapter", min=1, max=1000),
        "n_eval": Knob(50, 200, 1_000, "digits per guidance weight in the sweep", min=10, max=10_000),
    },
    "10": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "model": Knob("reference", "reference", "reference", "the pixel-space model compared against: the "
                      "reference shipped with the course, or the student's own (chapter 05's "
                      "settings for the profile)", choices=MODELS),
        "n_train": Knob(2_000, 60_000, 60_000, "training images of the autoencoder and the "
                        "latent model (the first of MNIST's training split)", min=100, max=60_000),
        "latent_channels": Knob(4, 4, 4, "channels of the 7x7 latent grid (4: 196 numbers, "
                                "a quarter of the 784 pixels)", min=1, max=16),
        "ae_width": Knob(16, 32, 32, "autoencoder channels at 28x28 (twice as many at 14x14 "
                         "and 7x7)", min=8),
        "kl_weight": Knob(1e-4, 1e-4, 1e-4, "weight of the KL term per latent number (0: plain "
                          "autoencoder, no KL, deterministic code)", min=0.0, max=1.0),
        "ae_steps": Knob(80, 3_000, 8_000, "optimiser steps of the autoencoder", min=1),
        "ae_batch_size": Knob(32, 64, 128, "images per autoencoder step", min=1),
        "ae_lr": Knob(2e-3, 2e-3, 1e-3, "peak learning rate of the autoencoder (Adam)", min=0.0),
        "base_width": Knob(16, 32, 64, "channels of the latent U-Net (one level, at 7x7)", min=8),
        "blocks_per_level": Knob(1, 1, 2, "residual blocks of the latent U-Net's down path",
                                 min=1, max=4),
        "train_steps": Knob(60, 6_000, 40_000, "optimiser steps of the latent diffusion model "
                            "(a step costs about a quarter of a pixel-model step, so cpu's 6,000 "
                            "take about the wall time of 1,600 chapter-05 steps)", min=1),
        "batch_size": Knob(32, 128, 128, "latents per step", min=1),
        "lr": Knob(2e-3, 3e-3, 1e-3, "peak learning rate of the latent model (AdamW)", min=0.0),
        "ema_decay": Knob(0.99, 0.995, 0.999, "EMA decay of the latent model's weights",
                          min=0.0, max=0.9999),
        "precision": Knob("auto", "auto", "auto", "training forward pass in bfloat16 or float32 "
                          "('auto': bf16 where the hardware has fast bf16 maths)",
                          choices=("auto", "fp32", "bf16")),
        "sample_steps": Knob(20, 100, 100, "sampler steps, the same for the pixel and the latent "
                             "model", min=1, max=1000),
        "eta": Knob(1.0, 1.0, 1.0, "sampler eta for both models (1: ancestral DDPM update, "
                    "0: DDIM)", min=0.0, max=1.0),
        "n_eval": Knob(100, 1_000, 1_000, "digits per model in the quality table", min=10,
                       max=10_000),
    },
    "11": {
        "seed": Knob(0, 0, 0, "random seed for every draw in the chapter", min=0),
        "model": Knob("reference", "reference", "reference", "the model sections 7-9 sample and judge: "
                      "'reference' (shipped with the course, trained 10,000 steps) or 'student' (the "
                      "chapter's own training); the listening grid always plays both", choices=MODELS),
        "front_end": Knob("logmag", "logmag", "logmag", "what the chapter's U-Net sees: the waveform "
                          "in patches of 64, an STFT (real, imaginary), the waveform through a learned "
                          "strided conv, or a log-magnitude STFT (phase by Griffin-Lim)",
                          choices=("patch", "stft", "strided", "logmag")),
        "train_steps": Knob(40, 1_000, 8_000, "optimiser steps of the chapter's model", min=1),
        "compare_steps": Knob(10, 300, 2_000, "optimiser steps of each front end in the "
                              "comparison (same budget for all four)", min=1),
        "batch_size": Knob(16, 32, 64, "clips per step", min=1),
        "base_width": Knob(16, 64, 128, "channels of the 1-D U-Net's first level", min=8),
        "lr": Knob(2e-3, 2e-3, 1e-3, "peak learning rate (AdamW)", min=0.0),
        "ema_decay": Knob(0.9, 0.995, 0.999, "EMA decay of the weights", min=0.0, max=0.9999),
        "min_snr_gamma": Knob(5.0, 5.0, 5.0, "min-SNR loss weighting gamma (0: plain MSE)", min=0.0),
        "precision": Knob("auto", "auto", "auto", "forward pass in bfloat16 or float32 ('auto': "
                          "bf16 where the hardware has fast bf16 maths)", choices=("auto", *PRECISIONS)),
        "guidance": Knob(1.5, 1.5, 1.5, "classifier-free guidance weight w of the student model (1: "
                         "plain conditional; the reference samples at its own measured w)", min=0.0),
        "ddim_steps": Knob(10, 50, 50, "steps of the deterministic DDIM sampler (eta = 0)", min=1, max=1000),
        "ancestral_steps": Knob(20, 200, 200, "steps of the stochastic ancestral sampler (eta = 1)",
                                min=1, max=1000),
        "n_per_digit": Knob(1, 10, 30, "generated clips per digit that the classifier scores", min=1),
        "classifier_epochs": Knob(1, 10, 20, "epochs of the spoken-digit classifier", min=1, max=100),
        "gl_iters": Knob(16, 64, 64, "Griffin-Lim iterations that recover the phase", min=0, max=1000),
    },
    "12": {
        "seed": Knob(0, 0, 0, "random seed of the test digits drawn, the measurement noise and "
                     "the samplers", min=0),
        "model": MODEL_KNOB,
        "n_images": Knob(8, 100, 500, "test digits restored per problem (MNIST's test split, "
                         "never trained on)", min=1, max=10_000),
        "steps": Knob(20, 100, 250, "network calls of each diffusion sampler (DPS, DiffPIR, "
                      "DDRM)", min=2, max=1000),
        "n_posterior": Knob(4, 8, 16, "posterior samples drawn for one measurement, to show "
                            "the spread", min=2, max=64),
    },
    "13": {
        "seed": Knob(0, 0, 0, "seed of the starting noise of every scored sample (training "
                     "uses chapter 05's seed)", min=0),
        "model": MODEL_KNOB,
        "train_steps": Knob(30, 1_200, 8_000, "optimiser steps of every trained variant, "
                            "chapter 05's batch (equal images seen)", min=1),
        "n_eval": Knob(50, 500, 2_000, "digits scored per setting", min=10, max=10_000),
        "common_steps": Knob(10, 100, 250, "ancestral sampling steps every variant is scored at",
                             min=1, max=1000),
        "n_seeds": Knob(2, 3, 5, "starting-noise seeds of the spread estimate", min=2, max=20),
    },
    "14": {
        # what a student turns; the sizes of the models and data sets are fixed per profile by
        # the recipe (recipes.variants.SIZES)
        "seed": Knob(0, 0, 0, "random seed for every draw and training run in the chapter", min=0),
        # 1-3: mixture-of-Gaussians noise
        "mix_p": Knob(0.5, 0.5, 0.5, "weight p of the noise mixture's first component",
                      min=0.01, max=0.99),
        "mix_phi": Knob(0.5, 0.5, 0.5, "common standard deviation phi of both mixture components "
                        "(1: Gaussian noise)", min=0.05, max=1.0),
        "n_draws": Knob(100_000, 400_000, 2_000_000, "Monte Carlo draws per check of the noise law "
                        "and of the forward chain's marginal", min=1_000),
        "toy_train_steps": Knob(400, 4_000, 10_000, "optimiser steps of each 2-D model (Gaussian "
                                "and mixture noise: same steps, batch and seed)", min=1),
        "n_samples": Knob(2_000, 5_000, 20_000, "points sampled from each 2-D model and sampler",
                          min=100),
        "mnist_train_steps": Knob(40, 2_000, 8_000, "optimiser steps of each MNIST model (Gaussian "
                                  "and mixture noise: same budget)", min=1),
        "n_eval": Knob(32, 300, 1_000, "digits per MNIST model and sampler scored by the judge",
                       min=10, max=10_000),
        "sample_steps": Knob(20, 100, 250, "ancestral sampling steps of the MNIST and colour DDPMs",
                             min=1, max=1000),
        # 4: ARDM
        "binarisation": Knob("threshold", "threshold", "threshold", "how MNIST is binarised: "
                             "intensity > 0.5 or Bernoulli(intensity) (seeded)",
                             choices=("threshold", "bernoulli")),
        "ardm_train_steps": Knob(150, 2_500, 30_000, "optimiser steps of the ARDM", min=1),
        "n_exact": Knob(2, 6, 64, "test digits whose exact likelihood is computed (784 network "
                        "calls per order)", min=1, max=10_000),
        "elbo_draws": Knob(8, 64, 256, "(t, order) draws per test digit for the bound", min=1),
        "ardm_groups": Knob("8,49", "1,4,16,49", "1,2,4,8,16,49,98,196", "comma-separated pixels "
                            "per network call of the sampling comparison (784/k calls)"),
        "n_ardm_samples": Knob(4, 16, 64, "digits sampled per group size", min=1),
        # 5: colour
        "colour_data": Knob("synthetic", "synthetic", "cifar10", "training images of the colour "
                            "DDPM: the synthetic shapes (no download) or CIFAR-10 (163 MiB download)",
                            choices=("synthetic", "cifar10")),
        "colour_train_steps": Knob(40, 2_000, 30_000, "optimiser steps of the colour DDPM", min=1),
        "colour_n_eval": Knob(50, 200, 1_000, "colour images generated and scored by the colour "
                              "judge", min=10, max=5_000),
    },
    "15": {
        "seed": Knob(0, 0, 0, "seed of the starting noises every sampler shares", min=0),
        "distilled": Knob("reference", "reference", "reference", "the distilled students: "
                          "\"reference\" (shipped with the course) or \"student\" (distilled now by "
                          "the profile's recipe, cached)", choices=("reference", "student")),
        "n_eval": Knob(50, 300, 1_000, "digits scored per sampler and budget", min=10, max=10_000),
        "calls": Knob("1,2,4,10", "1,2,4,8,10,20", "1,2,4,8,10,20", "comma-separated budgets of "
                      "network calls per digit in the table"),
        "reference_steps": Knob(50, 1000, 1000, "DDIM steps of the converged probability-flow ODE "
                                "every deterministic sampler is measured against", min=1, max=1000),
        "demo_steps": Knob(3, 100, 600, "optimiser steps of the distillation round the chapter runs "
                           "itself (the shipped students trained longer)", min=1),
        "tolerances": Knob("0.05", "0.05,0.02,0.01", "0.05,0.02,0.01,0.005", "comma-separated error "
                           "tolerances of the adaptive solver"),
    },
    "16": {
        "seed": Knob(0, 0, 0, "seed of the fine-tunes and of every sample", min=0),
        "controlnet": Knob("reference", "reference", "reference", "the ControlNet: \"reference\" "
                           "(shipped with the course) or \"student\" (trained now by the profile's "
                           "recipe, cached)", choices=("reference", "student")),
        "ti_steps": Knob(3, 400, 1_000, "optimiser steps of textual inversion", min=1),
        "db_steps": Knob(3, 400, 1_000, "optimiser steps of each DreamBooth fine-tune", min=1),
        "batch": Knob(8, 32, 64, "subject images per step (and as many prior images)", min=1),
        "n_prior": Knob(20, 500, 2_000, "DreamBooth's class images drawn by the frozen model", min=10),
        "lora_rank": Knob(4, 4, 4, "rank of the LoRA adapters", min=1, max=64),
        "n_concept": Knob(10, 200, 500, "samples of each learned label", min=2, max=10_000),
        "per_class": Knob(5, 100, 300, "samples per digit when measuring drift", min=2, max=1_000),
        "n_structure": Knob(10, 300, 1_000, "test skeletons each structure method is given",
                            min=2, max=10_000),
    },
    "17": {
        "seed": Knob(0, 0, 0, "seed of the encoder pair's training and of every sample", min=0),
        "model": Knob("reference", "reference", "reference", "the encoder pair and text-to-image "
                      "U-Net sampled from: \"reference\" (shipped with the course) or \"student\" "
                      "(trained now by the profile's recipe, cached)", choices=("reference", "student")),
        "clip_steps": Knob(40, 400, 2_000, "optimiser steps of the encoder pair the chapter trains "
                           "itself (the shipped one trained 2,000)", min=1),
        "n_test": Knob(1_024, 10_000, 10_000, "test digits for retrieval and the zero-shot "
                       "classifier", min=64, max=10_000),
        "guidance_weights": Knob("1,3", "1,2,3,4,5", "1,2,3,4,5", "comma-separated guidance "
                                 "weights w of the caption sweep"),
        "per_class": Knob(3, 30, 100, "prompts per digit at each guidance weight", min=2, max=1_000),
        "sample_steps": Knob(8, 20, 20, "DPM-Solver++(2M) steps of every sample", min=2, max=1000),
    },
}


def parse_value(text: str):
    """A knob value written on a command line (the runner's ``-p``, a benchmark's ``--set``): Python literals (3, 0.5, True, None, 'x') else plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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


def scoped_overrides(chapter: str | int) -> dict:
    """The overrides the runner was given for ``chapter`` (``$COURSE_OVERRIDES``), e.g.
    ``{"TRAIN_STEPS": 3000}`` for chapter 05 after ``-p 05:TRAIN_STEPS 3000``."""
    text = os.environ.get(OVERRIDES_ENV, "").strip()
    if not text:
        return {}
    try:
        scoped = json.loads(text)
        if not isinstance(scoped, dict) or not all(isinstance(v, dict) for v in scoped.values()):
            raise ValueError("not an object of objects")
    except ValueError as e:
        raise ValueError(f"${OVERRIDES_ENV} must be JSON like {{\"05\": {{\"TRAIN_STEPS\": 3000}}}}: "
                         f"{e}") from None
    return dict(scoped.get(normalise_chapter(chapter), {}))


def chapter_settings(chapter: str | int, profile: str = "auto", runner_overrides: bool = True,
                     **overrides: Any) -> Settings:
    """Resolve the profile and the chapter's knobs; ``None`` overrides mean "profile default".

    Knobs left at ``None`` take the runner's overrides for this chapter if there are any
    (``runner_overrides``; so a chapter that uses chapter 05's model gets the model that
    chapter 05 trained), else the profile's value.
    Raises ValueError naming the allowed profiles, knobs or values when anything is off.
    """
    key = normalise_chapter(chapter)
    knobs = CHAPTERS[key]
    name = resolve_profile(profile)
    by_lower = {k.lower(): k for k in knobs}  # N_DRAWS, n_draws and T all match
    unknown = [k for k in overrides if k.lower() not in by_lower]
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for chapter {key}; "
            f"allowed: {', '.join(knobs)}"
        )
    given_values = {}
    scoped = scoped_overrides(key) if runner_overrides else {}
    for source in (scoped, overrides):  # the notebook's own values win over the runner's
        for k, v in source.items():
            if k.lower() not in by_lower:
                raise ValueError(f"${OVERRIDES_ENV} sets unknown setting {k!r} for chapter "
                                 f"{key}; allowed: {', '.join(knobs)}")
            if v is not None:
                given_values[by_lower[k.lower()]] = v
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


def train_config_from(cfg, **recipe) -> TrainConfig:
    """The one translation from a chapter's resolved knobs (``Settings``) to a
    ``TrainConfig``, for every model the course trains.

    Knobs named like a field are copied (``train_steps`` becomes ``steps``); a
    ``min_snr_gamma`` of 0 means plain MSE; ``precision`` "auto" is resolved for the
    settings' device. ``recipe`` sets the fields that are fixed for a model rather than
    knobs of its chapter (e.g. ``kind="v"``, ``schedule="angle"``), and wins over a knob.
    Always: warm-up over min(100, steps / 10) steps, cosine decay, gradient clipping at 1.
    """
    fields = set(TrainConfig.__dataclass_fields__)
    values = {"steps": cfg["train_steps"], "lr_decay": "cosine", "grad_clip": 1.0}
    for name in fields & set(cfg) - {"steps"}:
        values[name] = cfg[name]
    if "min_snr_gamma" in values:
        values["min_snr_gamma"] = values["min_snr_gamma"] or None
    values.update(recipe)
    values["warmup"] = recipe.get("warmup", min(100, values["steps"] // 10))
    values["precision"] = resolve_precision(values.get("precision", "fp32"), cfg.device)
    return TrainConfig(**values)
