"""The judge of generated speech (chapter 11): a small spoken-digit classifier on log-mel
spectrograms, trained once and cached, with the held-out clips as the reference and the
training clips as the pool the real-vs-real floor is drawn from (``judge.Judge``); and the
burst count, which hears what the Frechet distance does not: a clip in three separate bursts
is not one spoken word.
"""
from __future__ import annotations

import torch

from ..data.front_ends import LENGTH
from ..data.fsdd import load_fsdd
from ..data.paths import cache_dir
from ..models.classifier import SpokenDigitClassifier
from ..training.cache import cache_key, seeded
from ..training.classifier import fit_classifier
from .judge import Judge, cached_classifier


def voiced_segments(x: torch.Tensor, sample_rate: int = 8000, frame_ms: float = 20.0,
                    threshold_db: float = -30.0, min_gap_ms: float = 60.0,
                    min_length_ms: float = 40.0) -> list[tuple[float, float]]:
    """The separated voiced stretches of one clip, as (start, end) in seconds.

    Frames of ``frame_ms`` are voiced when their RMS is within ``threshold_db`` of the clip's
    loudest frame; voiced runs closer than ``min_gap_ms`` are one segment (the short pauses
    inside a word), and segments shorter than ``min_length_ms`` are dropped (clicks). A
    spoken digit is one segment, or two across a stop consonant ("eight", "six"); a clip in
    three or more bursts does not sound like one word."""
    x = x.detach().float().cpu().flatten()
    frame = max(1, round(sample_rate * frame_ms / 1000))
    n = len(x) // frame
    if n == 0:
        return []
    rms = x[: n * frame].view(n, frame).pow(2).mean(1).sqrt()
    if rms.max() <= 0:
        return []
    voiced = (20 * torch.log10(rms / rms.max()).clamp(min=-200) >= threshold_db).tolist()
    runs, start = [], None
    for i, v in enumerate(voiced + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append([start, i])
            start = None
    gap, shortest = min_gap_ms / frame_ms, min_length_ms / frame_ms
    merged = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < gap:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    seconds = frame / sample_rate
    return [(a * seconds, b * seconds) for a, b in merged if b - a >= shortest]


def burst_count(x: torch.Tensor, sample_rate: int = 8000, **kwargs) -> int:
    """How many separated voiced segments one clip has (``voiced_segments``)."""
    return len(voiced_segments(x, sample_rate, **kwargs))


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
                     progress: bool = True) -> SpokenDigitClassifier:
    """The course's classifier recipe (``training.classifier``) on log-mel spectrograms with
    random time shifts; the initial weights and the dropout come from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    bs, lr, max_shift = (CLASSIFIER_RECIPE[k] for k in ("batch_size", "lr", "max_shift"))

    def run():
        model = SpokenDigitClassifier()
        with torch.no_grad():
            specs = model.spectrogram(waves)
        steps = epochs * (len(specs) // bs)
        return fit_classifier(model, specs, labels, steps, bs, lr, g,
                              lambda x, g: _shift_frames(x, g, max_shift), progress)

    return seeded(run, seed)


def load_or_train_classifier(epochs: int = 10, seed: int = 0, progress: bool = True
                             ) -> tuple[SpokenDigitClassifier, dict]:
    """The chapter's judge, trained on the FSDD train split (takes 5-49), cached."""
    spec = {"dataset": "FSDD", "split": "train", "length": LENGTH, "placement": "centre",
            "normalisation": "peak"}
    key = cache_key({"classifier": SpokenDigitClassifier().config, "epochs": epochs, "seed": seed,
                     **CLASSIFIER_RECIPE}, spec)

    def train_model():
        data = load_fsdd("train", LENGTH)
        return train_classifier(data.audio, data.labels, epochs, seed, progress)

    return cached_classifier(cache_dir() / f"fsdd-classifier-{key}.pt", SpokenDigitClassifier, train_model)


def burst_summary(waves: torch.Tensor) -> dict:
    """Separated voiced segments per clip (``burst_count``): the mean and the fractions of
    clips in 1, 2 and 3 or more bursts. Real FSDD clips: 98.4 % one segment, mean 1.016."""
    counts = torch.tensor([burst_count(w) for w in waves], dtype=torch.float64)
    return {"mean": counts.mean().item(), "one": (counts == 1).double().mean().item(),
            "two": (counts == 2).double().mean().item(), "three_or_more": (counts >= 3).double().mean().item(),
            "silent": (counts == 0).double().mean().item()}


def energy_centre(waves: torch.Tensor, sample_rate: int = 8000) -> torch.Tensor:
    """Each clip's energy-weighted mean time in seconds: where in the window the speech sits
    (the window's middle is 0.512 s; the held-out clips' energy centres are 0.47 s ± 0.03)."""
    e = waves.detach().float().cpu().pow(2)
    t = torch.arange(waves.shape[-1], dtype=torch.float32) / sample_rate
    return (e * t).sum(-1) / e.sum(-1).clamp_min(1e-12)


class AudioJudge(Judge):
    """Chapter 11's judge: the spoken-digit classifier with the held-out clips (takes 0-4) as
    the reference and the training clips as the floors' pool."""

    def __init__(self, classifier: SpokenDigitClassifier, test_x: torch.Tensor, test_y: torch.Tensor,
                 pool: torch.Tensor, info: dict | None = None):
        super().__init__(classifier, test_x, test_y, pool, info, prepare=classifier.spectrogram,
                         batch_size=250)

    def evaluate(self, waves: torch.Tensor, labels: torch.Tensor) -> dict:
        """Accuracy of the digits asked for (overall and per digit), mean confidence, the
        Frechet distance of classifier features against the held-out clips with the floor at
        the same N and their ratio, and the burst count (``burst_summary``)."""
        report, pred, conf = self.score_with_labels(waves)
        labels = labels.cpu()
        return {**report, "accuracy": (pred == labels).double().mean().item(),
                "per_digit_accuracy": [round((pred[labels == d] == d).double().mean().item(), 3)
                                       for d in range(10) if (labels == d).any()],
                "mean_confidence": conf.mean().item(), "bursts": burst_summary(waves)}


def load_audio_judge(epochs: int = 10, seed: int = 0, progress: bool = True) -> AudioJudge:
    """The judge with its classifier (``load_or_train_classifier``), the held-out clips (takes
    0-4) as the reference and the training clips (takes 5-49) as the floor's pool."""
    classifier, info = load_or_train_classifier(epochs, seed, progress)
    test = load_fsdd("test")
    return AudioJudge(classifier, test.audio, test.labels, load_fsdd("train").audio, info)
