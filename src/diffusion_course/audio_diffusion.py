"""Chapter 11 in one place: the four front ends (what the 1-D U-Net sees), the spoken-digit
classifier that judges generated audio, and the chapter's v-diffusion model built, trained
and cached for a profile, so the chapter and ``benchmarks/audio_digits.py`` use exactly
the same thing.

Front ends, all for clips of N = 8,192 samples (1.024 s at 8 kHz) and all ending as a
sequence of 128 positions for the U-Net:

    patch    the waveform [1, 8192]; the U-Net folds 64 samples into channels: [64, 128]
    strided  the waveform [1, 8192]; the U-Net's first layer is a learned Conv1d(1, 64,
             kernel 128, stride 64) and its last a ConvTranspose1d back: [64, 128]
    stft     the complex STFT (n_fft 256, hop 64, 129 bins x 128 frames), real and imaginary
             parts as 258 channels, divided by their standard deviation on the training set
             (so unbounded: no clipping of x0); inverted exactly by the inverse STFT
    logmag   log(|STFT| + 1e-3), 129 bins as channels x 128 frames, mapped linearly from
             [log 1e-3, log 50] to [-1, 1] (bounded, so x0 may be clipped); the phase is
             thrown away and recovered by Griffin-Lim (64 iterations)

The diffusion itself (schedule, v-objective, sampler) is the course's: ``training.train``
with ``TrainConfig(kind="v", schedule="angle")`` and ``sampling.sample(kind="v")``.

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

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import audio
from .fsdd import load_fsdd
from .metrics import frechet_floor, frechet_from_features
from .sampling import sample
from .settings import MODELS, Settings, chapter_settings, pick_device
from .training import TrainConfig, autocast, cache_dir, cache_key, load_or_train, load_or_train_weights, train_config_from
from .unet1d import UNet1d

LENGTH = 8192                      # samples per clip: 1.024 s at 8 kHz
FRAMES = LENGTH // audio.HOP       # 128 STFT frames (torch gives 129 with center=True: the last,
                                   # centred on the clip's final sample, is dropped and zero-filled back)
BINS = audio.N_FFT // 2 + 1        # 129 frequency bins, 0 to 4 kHz in steps of 31.25 Hz
FRONT_ENDS = ("patch", "stft", "strided", "logmag")
LOG_FLOOR, LOG_MAX = 1e-3, 50.0    # |STFT| range mapped to [-1, 1] by the logmag front end
STFT_STD = 0.9                     # std of the STFT's real/imag parts on the training clips


@dataclass(frozen=True)
class FrontEnd:
    """What the U-Net sees: ``encode`` clips [B, N] -> x [B, C, L], ``decode`` back."""

    name: str
    gl_iters: int = 64

    @property
    def channels(self) -> int:
        return {"patch": 1, "strided": 1, "stft": 2 * BINS, "logmag": BINS}[self.name]

    @property
    def clip_x0(self) -> bool:
        """Clip the sampler's x0 estimate to [-1, 1] only where the representation is bounded."""
        return self.name != "stft"

    def unet_kwargs(self) -> dict:
        return {"patch": dict(stem="patch", patch=64), "strided": dict(stem="strided"),
                "stft": dict(stem="conv"), "logmag": dict(stem="conv")}[self.name]

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        if self.name in ("patch", "strided"):
            return wave[:, None, :]
        spec = audio.stft(wave)[..., :FRAMES]
        if self.name == "stft":
            return torch.cat([spec.real, spec.imag], dim=1) / STFT_STD
        logm = torch.log(spec.abs().clamp(max=LOG_MAX) + LOG_FLOOR)
        return 2 * (logm - math.log(LOG_FLOOR)) / (math.log(LOG_MAX + LOG_FLOOR) - math.log(LOG_FLOOR)) - 1

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """|STFT| [B, 129, 128] that ``x`` stands for (logmag only): exp of the inverse map."""
        logm = (x.float() + 1) / 2 * (math.log(LOG_MAX + LOG_FLOOR) - math.log(LOG_FLOOR)) + math.log(LOG_FLOOR)
        return (logm.exp() - LOG_FLOOR).clamp(min=0)

    def decode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float()
        if self.name in ("patch", "strided"):
            return x[:, 0].clamp(-1, 1)
        if self.name == "stft":
            spec = torch.complex(x[:, :BINS], x[:, BINS:]) * STFT_STD
            return audio.istft(F.pad(spec, (0, 1)), LENGTH).clamp(-1, 1)
        mag = F.pad(self.magnitude(x), (0, 1))
        return audio.griffin_lim(mag, LENGTH, self.gl_iters, generator=generator).clamp(-1, 1)


# ---------------------------------------------------------------------------------------
# The judge: a small spoken-digit classifier on log-mel spectrograms
# ---------------------------------------------------------------------------------------
class DigitClassifier(nn.Module):
    """Three 1-D conv layers over the frames of a log-mel spectrogram (64 mel bands as
    channels, 129 frames), then a 128-d feature layer. Convolving over time with the bands
    as channels costs about 10M multiply-adds per clip, several times faster on a CPU than
    the same depth of 2-D convolutions over the spectrogram image."""

    def __init__(self, n_mels: int = 64, feature_dim: int = 128, width: int = 128):
        super().__init__()
        self.config = {"n_mels": n_mels, "feature_dim": feature_dim, "width": width}
        w = width
        self.body = nn.Sequential(
            nn.BatchNorm1d(n_mels),
            nn.Conv1d(n_mels, w, 5, padding=2), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(w, w, 3, padding=1), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(w, w, 3, padding=1), nn.BatchNorm1d(w), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2),
            nn.Linear(w, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        return audio.log_mel(wave, self.config["n_mels"])

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        return self.body(spec)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(spec))


CLASSIFIER_RECIPE = {"batch_size": 64, "lr": 3e-3, "max_shift": 16}


def _shift_frames(spec: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random time shifts of up to ``max_shift`` frames (64 samples each), filled with the
    spectrogram's floor: the classifier must not rely on where a digit sits in the window."""
    out = torch.full_like(spec, spec.min().item())
    n = spec.shape[-1]
    for i, s in enumerate(torch.randint(-max_shift, max_shift + 1, (len(spec),), generator=g).tolist()):
        if s >= 0:
            out[i, ..., s:] = spec[i, ..., : n - s]
        else:
            out[i, ..., : n + s] = spec[i, ..., -s:]
    return out


def train_classifier(waves: torch.Tensor, labels: torch.Tensor, epochs: int = 10, seed: int = 0,
                     progress: bool = True) -> DigitClassifier:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier()
    with torch.no_grad():
        specs = model.spectrogram(waves)
    bs, lr, max_shift = (CLASSIFIER_RECIPE[k] for k in ("batch_size", "lr", "max_shift"))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * (len(specs) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="classifier", disable=not progress):
        idx = torch.randint(0, len(specs), (bs,), generator=g)
        loss = F.cross_entropy(model(_shift_frames(specs[idx], g, max_shift)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def load_or_train_classifier(epochs: int = 10, seed: int = 0, progress: bool = True
                             ) -> tuple[DigitClassifier, dict]:
    """The chapter's judge, trained on the FSDD train split (takes 5-49), cached."""
    spec = {"dataset": "FSDD", "split": "train", "length": LENGTH, "placement": "centre",
            "normalisation": "peak"}
    key = cache_key({"classifier": DigitClassifier().config, "epochs": epochs, "seed": seed,
                     **CLASSIFIER_RECIPE}, spec)

    def train_model():
        data = load_fsdd("train", LENGTH)
        return train_classifier(data.audio, data.labels, epochs, seed, progress)

    return load_or_train_weights(cache_dir() / f"fsdd-classifier-{key}.pt", DigitClassifier(), train_model)


@torch.no_grad()
def classify(model: DigitClassifier, waves: torch.Tensor, batch_size: int = 250
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, predicted digits, confidence) of clips [N, samples]."""
    feats, probs = [], []
    for chunk in waves.split(batch_size):
        f = model.features(model.spectrogram(chunk.float().cpu()))
        feats.append(f)
        probs.append(F.softmax(model.head(f), dim=1))
    feats, probs = torch.cat(feats), torch.cat(probs)
    conf, pred = probs.max(1)
    return feats, pred, conf


def burst_summary(waves: torch.Tensor) -> dict:
    """Separated voiced segments per clip (``audio.burst_count``): the mean and the fractions
    of clips in 1, 2 and 3 or more bursts. Real FSDD clips: 98.4 % one segment, mean 1.016."""
    counts = torch.tensor([audio.burst_count(w) for w in waves], dtype=torch.float64)
    return {"mean": counts.mean().item(), "one": (counts == 1).double().mean().item(),
            "two": (counts == 2).double().mean().item(), "three_or_more": (counts >= 3).double().mean().item(),
            "silent": (counts == 0).double().mean().item()}


def energy_centre(waves: torch.Tensor, sample_rate: int = 8000) -> torch.Tensor:
    """Each clip's energy-weighted mean time in seconds: where in the window the speech sits
    (the window's middle is 0.512 s; the held-out clips' energy centres are 0.47 s ± 0.03)."""
    e = waves.detach().float().cpu().pow(2)
    t = torch.arange(waves.shape[-1], dtype=torch.float32) / sample_rate
    return (e * t).sum(-1) / e.sum(-1).clamp_min(1e-12)


FLOOR_DRAWS = 10


class AudioJudge:
    """Chapter 11's judge: the spoken-digit classifier with the held-out clips' features (and
    its accuracy on them, ``held_out_accuracy``) and the training clips that floors are drawn
    from; floors are computed once per N (as ``judge.DigitJudge`` does for MNIST)."""

    def __init__(self, classifier: DigitClassifier, real: torch.Tensor, real_labels: torch.Tensor,
                 pool: torch.Tensor, info: dict | None = None):
        self.classifier, self.real, self.pool, self.info = classifier.eval(), real, pool, info or {}
        self.real_features, pred, _ = classify(classifier, real)
        self.held_out_accuracy = (pred == real_labels.cpu()).double().mean().item()
        self._floors: dict[int, dict] = {}

    def floor(self, n: int) -> dict:
        """``metrics.frechet_floor`` for ``n`` clips: ``n`` random training clips against the
        held-out ones, mean and sd over 10 seeded draws (an FD from fewer clips is larger, so
        only the floor at the same N compares)."""
        if n not in self._floors:
            self._floors[n] = frechet_floor(self.classifier, self.pool, self.real_features, n,
                                            draws=FLOOR_DRAWS, classify_fn=classify)
        return self._floors[n]

    def evaluate(self, waves: torch.Tensor, labels: torch.Tensor) -> dict:
        """Accuracy of the digits asked for (overall and per digit), mean confidence, the
        Frechet distance of classifier features against the held-out clips with the floor at
        the same N and their ratio, and the burst count (``burst_summary``)."""
        f_fake, pred, conf = classify(self.classifier, waves)
        labels = labels.cpu()
        fd = frechet_from_features(f_fake, self.real_features)
        floor = self.floor(len(waves))
        return {"n_samples": len(waves), "accuracy": (pred == labels).double().mean().item(),
                "per_digit_accuracy": [round((pred[labels == d] == d).double().mean().item(), 3)
                                       for d in range(10) if (labels == d).any()],
                "mean_confidence": conf.mean().item(), "frechet": fd, **floor,
                "frechet_ratio": fd / floor["frechet_floor"], "bursts": burst_summary(waves)}


def load_audio_judge(epochs: int = 10, seed: int = 0, progress: bool = True) -> AudioJudge:
    """The judge with its classifier (``load_or_train_classifier``), the held-out clips (takes
    0-4) as the real set and the training clips (takes 5-49) as the floor's pool."""
    classifier, info = load_or_train_classifier(epochs, seed, progress)
    test = load_fsdd("test")
    return AudioJudge(classifier, test.audio, test.labels, load_fsdd("train").audio, info)


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
    ``python -m diffusion_course.reference fsdd-logmag`` runs before it writes the file."""
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
    from .reference import load_reference

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
