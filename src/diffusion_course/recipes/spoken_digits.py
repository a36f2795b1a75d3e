"""Chapter 11's spoken-digit model in one place: the v-diffusion U-Net on a front end
(``data.front_ends``), built, trained and cached for a profile, the reference shipped with the
package, and generation, so the chapter and ``benchmarks/audio_digits.py`` use exactly the same
thing. The judge of the clips is ``evaluation.speech.AudioJudge``.

The diffusion itself (schedule, v-objective, sampler) is the course's: ``training.loop.train``
with ``TrainConfig(kind="v", schedule="angle")`` and ``diffusion.sampling.sample(kind="v")``.

The chapter has two models with one recipe: the **student** (the profile's settings, trained
by the chapter) and the **reference** (``REFERENCE_RECIPES``: trained longer, shipped with the
package, ``load_audio_model``), both judged by ``AudioJudge``.

The chapter's model is the log-magnitude front end with ``UNet1d(v_from_x0="angle")``: the
network estimates x0 and returns the v it implies. Measured here: with the plain v-output
U-Net (64 channels at its first level reading 129 bins) the samples were buried in
salt-and-pepper noise and 18% were recognised after 500 steps; with the x0 head, 96% after
500 steps (5 clips per digit, 50-step DDIM, w = 3). The comparison trains every front end
both ways (``load_or_train_audio(cfg, name, train_steps=cfg.compare_steps, v_from_x0=...)``).
"""
from __future__ import annotations

import torch

from ..course.settings import MODELS, Settings, chapter_settings, train_config_from
from ..data.front_ends import FRAMES, LENGTH, LOG_FLOOR, LOG_MAX, STFT_STD, FrontEnd
from ..data.fsdd import load_fsdd
from ..diffusion.sampling import sample
from ..models.unet1d import UNet1d
from ..training.cache import load_or_train
from ..training.device import autocast, pick_device
from ..training.loop import TrainConfig
from ..training.references import load_reference


# ---------------------------------------------------------------------------------------
# The chapter's model
# ---------------------------------------------------------------------------------------
def make_model(cfg: Settings, front_end: str | None = None, v_from_x0: bool | None = None,
               positions: bool = False) -> UNet1d:
    """The chapter's 1-D U-Net for a front end. ``v_from_x0`` (default: yes for the chapter's
    model, ``front_end=None``; no for the comparison, where all four front ends get the same
    plain v-predicting U-Net) lets the network estimate x0 and return the v it implies (see
    ``unet1d``); training and sampling are v-form either way. ``positions``: the U-Net also
    knows where in the window each frame is (``unet1d``)."""
    fe = FrontEnd(front_end or cfg.front_end)
    v_from_x0 = front_end is None if v_from_x0 is None else v_from_x0
    return UNet1d(in_channels=fe.channels, base=cfg.base_width, mults=(1, 2, 2), blocks_per_level=1,
                  attention_levels=(2,), num_classes=10, v_from_x0="angle" if v_from_x0 else None,
                  positions=positions, **fe.unet_kwargs())


def train_config(cfg: Settings) -> TrainConfig:
    """The chapter's recipe: v-prediction on the angle schedule, label dropout for guidance."""
    return train_config_from(cfg, kind="v", schedule="angle", T=1000, label_dropout=0.1)


def data_spec(front_end: str) -> dict:
    return {"dataset": "FSDD", "version": "1.0.10", "split": "train (takes 5-49)", "length": LENGTH,
            "placement": "centre", "normalisation": "peak", "front_end": front_end,
            "log_floor": LOG_FLOOR, "log_max": LOG_MAX, "stft_std": STFT_STD}


def training_data(front_end: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_fsdd("train", LENGTH)
    return FrontEnd(front_end).encode(data.audio), data.labels


def load_or_train_audio(cfg: Settings, front_end: str | None = None, progress: bool = True,
                        max_seconds: float | None = None, train_steps: int | None = None,
                        v_from_x0: bool | None = None, positions: bool = False,
                        keep_ema_at: tuple[int, ...] = ()):
    """(EMA model, info) of the chapter's model (``front_end=None``: ``cfg.front_end`` with the
    x0-estimating head) or of one comparison model (a named front end, plain v-prediction
    unless ``v_from_x0``), trained for ``train_steps`` (default ``cfg.train_steps``);
    ``keep_ema_at``: steps whose EMA weights ``info["ema_history"]`` keeps."""
    fe = front_end or cfg.front_end
    tcfg = train_config(cfg)
    if train_steps is not None:
        from dataclasses import replace
        tcfg = replace(tcfg, steps=train_steps, warmup=min(100, train_steps // 10))
    return load_or_train(f"fsdd-v-{fe}", lambda: make_model(cfg, front_end, v_from_x0, positions), tcfg,
                         lambda: training_data(fe), data_spec(fe), device=cfg.device,
                         progress=progress, max_seconds=max_seconds, keep_ema_at=keep_ema_at)


# ---------------------------------------------------------------------------------------
# The reference model (shipped with the course) and the one owner of the chapter's model
# ---------------------------------------------------------------------------------------
# The chapter's recipe trained ten times longer with a slower EMA, and the U-Net told where
# each frame sits (``positions``), chosen by ``benchmarks/audio_digits.py --diagnose
# --reference-run``; ``guidance``: the weight its samples are scored and played at (the
# shipped half-precision file at w = 1, 100 clips, 50-step DDIM: 94 % recognised, FD 3.5x the
# floor, 1.06 bursts per clip against the real clips' 1.02; ``benchmarks/audio_digits.py``). Training keeps EMA snapshots at ``snapshot_steps`` in the cache (not
# in the shipped file) for that diagnosis.
REFERENCE_RECIPES = {
    "fsdd-logmag": {"profile": "cpu", "positions": True, "guidance": 1.0,
                    "overrides": {"train_steps": 10_000, "ema_decay": 0.999, "precision": "bf16"}},
}


def reference_settings(name: str = "fsdd-logmag") -> Settings:
    """The chapter-11 settings of a reference model (runner overrides never apply to it)."""
    recipe = REFERENCE_RECIPES[name]
    return chapter_settings("11", recipe["profile"], runner_overrides=False, **recipe["overrides"])


def snapshot_steps(train_steps: int) -> tuple[int, ...]:
    """Steps after which a long run keeps its EMA weights: a quarter, a half, three quarters, all."""
    return tuple(sorted({max(1, train_steps * k // 4) for k in (1, 2, 3, 4)}))


def train_reference(name: str, progress: bool = True):
    """(EMA model, info) of a reference recipe, trained now if not cached (resumable): what
    ``python -m diffusion_course.recipes.references fsdd-logmag`` runs before it writes the file."""
    recipe, cfg = REFERENCE_RECIPES[name], reference_settings(name)
    model, info = load_or_train_audio(cfg, progress=progress, positions=recipe["positions"],
                                      keep_ema_at=snapshot_steps(cfg.train_steps))
    return model, {**info, "train_config": train_config(cfg), "settings": cfg.as_dict()}


def student_model(cfg: Settings, progress: bool = True, max_seconds: float | None = None):
    """(EMA model in eval mode, info) of the chapter's recipe for resolved settings ``cfg``,
    trained now if not cached; ``info`` as ``load_audio_model`` gives it."""
    net, info = load_or_train_audio(cfg, progress=progress, max_seconds=max_seconds)
    return net.eval(), {**info, "source": "student", "settings": cfg.as_dict(), "guidance": cfg.guidance,
                        "train_config": train_config(cfg)}


def load_audio_model(profile: str = "auto", model: str = "reference", progress: bool = True,
                     max_seconds: float | None = None, **overrides):
    """(EMA model in eval mode, info) of chapter 11's model.

    ``model="reference"``: the model shipped with the course (``REFERENCE_RECIPES``), loaded
    offline in a second; ``info["guidance"]`` is the weight it was chosen at. ``model="student"``:
    chapter 11's settings for ``profile`` with ``overrides`` (and the runner's chapter-11
    overrides), trained now if not cached; ``info["guidance"]`` is the ``guidance`` knob.
    ``info["source"]`` says which model this is, ``info["settings"]`` its settings.
    """
    if model not in MODELS:
        raise ValueError(f"unknown audio model {model!r}; allowed: {', '.join(MODELS)}")
    if model == "student":
        return student_model(chapter_settings("11", profile, **overrides), progress, max_seconds)
    if overrides:
        raise ValueError(f"the reference model has fixed settings; overrides {sorted(overrides)} "
                         f"apply to model='student' only")
    name = "fsdd-logmag"
    recipe, cfg = REFERENCE_RECIPES[name], reference_settings(name)
    tcfg = train_config(cfg)
    net, info = load_reference(name, make_model(cfg, positions=recipe["positions"]), tcfg, data_spec(cfg.front_end))
    return net.to(pick_device()).eval(), {**info, "source": "reference", "guidance": recipe["guidance"],
                                       "train_config": tcfg}


def receptive_field(model: UNet1d, channels: int, length: int, t: int = 500, threshold: float = 0.01) -> dict:
    """Measured reach of one output position: the gradient of the output at the centre frame
    with respect to every input frame (seeded random input, label 0, step ``t``), and the span of
    frames whose gradient exceeds ``threshold`` of the largest. Attention at the coarsest
    level lets the network look at the whole window; how far a trained one really looks is
    what this measures (chapter 11's 1,000-step student in a cpu run: 59 of 128 frames; an
    earlier initialisation of the same recipe: 9 to 20, depending on the random input; the
    reference: 117 to 120)."""
    device = next(model.parameters()).device
    x = torch.randn(1, channels, length, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_()
    was_training = model.training
    model.eval()
    out = model(x, torch.tensor([t], device=device), torch.tensor([0], device=device))
    out[0, :, length // 2].pow(2).sum().backward()
    model.train(was_training)
    g = x.grad[0].abs().sum(0)
    hit = (g > threshold * g.max()).nonzero().flatten()
    return {"frames": length, "first": int(hit.min()), "last": int(hit.max()),
            "span_fraction": (int(hit.max()) - int(hit.min()) + 1) / length}


@torch.no_grad()
def generate(model: UNet1d, front_end: str, labels: torch.Tensor, steps: int = 50, eta: float = 0.0,
             guidance: float | None = 3.0, seed: int = 0, precision: str = "fp32",
             batch_size: int = 100, gl_iters: int = 64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(waveforms [B, 8192], model-space samples [B, C, L]) for the digits ``labels``: the
    course sampler in v-form on the angle schedule, ``eta`` 0 (DDIM) or 1 (ancestral)."""
    fe = FrontEnd(front_end, gl_iters)
    schedule = TrainConfig(schedule="angle", T=1000).noise_schedule()
    g = torch.Generator().manual_seed(seed)
    length = LENGTH if front_end in ("patch", "strided") else FRAMES
    waves, xs = [], []
    for chunk in labels.split(batch_size):
        with autocast(precision, device):
            x = sample(model, (len(chunk), fe.channels, length), schedule, steps=steps, eta=eta,
                       kind="v", clip_x0=fe.clip_x0, labels=chunk, guidance=guidance, generator=g,
                       device=device).x0.float()
        xs.append(x)
        waves.append(fe.decode(x, generator=g))
    return torch.cat(waves), torch.cat(xs)
