"""The course's judges of generated samples, and its one evaluation protocol.

Protocol (every chapter and benchmark that scores generated samples uses it):
  * generated samples are compared with a **held-out reference set** never trained on (for
    MNIST digits: the test split, all 10,000);
  * the **judge** is a classifier of the course (``models.classifier``) trained by one recipe
    on the training split, cached; its features give the Frechet distance, its softmax the
    confident fraction and the class histogram;
  * the **real-vs-real floor** for N samples is the mean FD of N random training samples
    against the same reference over 10 seeded draws (``frechet_floor``), computed once per N:
    an FD from fewer samples is larger, so only the floor at the same N compares.

``Judge`` is that protocol for any classifier, reference set and pool; ``load_judge(profile)``
is the MNIST judge of a profile, ``colour.load_colour_judge`` chapter 14's and
``speech.load_audio_judge`` chapter 11's.

    judge = load_judge(cfg.profile)
    report = judge.evaluate(samples)      # frechet, frechet_floor, frechet_ratio, confident_fraction, ...

Chapter 06 teaches judges of other strengths as a lesson (``benchmarks/judge_strength.py``);
the course's yardstick is this one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.mnist import N_TEST, test_images, training_images
from ..data.paths import cache_dir
from ..models.classifier import ImageClassifier
from ..training.cache import cache_key, cached, seeded
from ..training.classifier import fit_classifier
from ..training.device import pick_device
from .frechet import frechet_from_features, pixel_wasserstein

FLOOR_DRAWS = 10


# ---------------------------------------------------------------------------------------
# Looking through a classifier
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def classify(model, x: torch.Tensor, batch_size: int = 500, prepare=None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, predicted labels, confidence = max softmax probability) of ``x``, in
    batches; ``prepare`` maps a batch to what the classifier reads (a spectrogram, say)."""
    feats, probs = [], []
    for chunk in x.split(batch_size):
        chunk = chunk.float() if prepare is None else prepare(chunk.float().cpu())
        f = model.features(chunk)
        feats.append(f)
        probs.append(F.softmax(model.head(f), dim=1))
    feats, probs = torch.cat(feats), torch.cat(probs)
    conf, pred = probs.max(1)
    return feats, pred, conf


@torch.no_grad()
def accuracy(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` labels ``y``."""
    _, pred, _ = classify(model, x)
    return (pred.cpu() == y.cpu()).double().mean().item()


def judge_real(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor, confident: float = 0.9) -> dict:
    """The judge on real held-out digits, the reference for generated ones: its accuracy and
    the fraction it labels with confidence above ``confident`` (as ``evaluate_samples``)."""
    _, pred, conf = classify(model, x)
    return {"held_out_accuracy": (pred.cpu() == y.cpu()).double().mean().item(),
            "held_out_confident_fraction": (conf > confident).double().mean().item()}


def frechet_floor(classifier: ImageClassifier, pool: torch.Tensor, real_features: torch.Tensor,
                  n: int, draws: int = 10, seed: int = 0, classify_fn=None) -> dict:
    """The real-vs-real floor: the FD a *perfect* generator would score with ``n`` samples.

    A perfect generator draws from its training data, so the floor is the FD of ``n`` images
    drawn at random from ``pool`` (the training images) against the held-out features,
    averaged over ``draws`` seeded draws: one draw is noisy (at N = 200 its spread is a
    quarter to a third of its mean). Random, not ``pool[:n]``: MNIST is stored in writer order
    (the test split's first 5,000 digits come from NIST SD-3 writers, the last 5,000 from
    SD-1), so the first n digits are one kind of writer and their FD measures that shift too.

    Returns frechet_floor (the mean), frechet_floor_sd (spread of one draw), floor_draws and
    floor_n; ``evaluate_samples(..., floor=...)`` reuses it for every set of ``n`` samples.
    ``classify_fn(classifier, x)`` -> (features, ...): another judge's (default: ``classify``,
    MNIST; chapter 11's spoken-digit judge passes its own).
    """
    if not 1 <= n <= len(pool):
        raise ValueError(f"the floor draws n = {n} real images from a pool of {len(pool)}; "
                         f"pass at least as many training images as samples")
    if draws < 1:
        raise ValueError(f"floor draws must be at least 1, got {draws}")
    g = torch.Generator().manual_seed(seed)
    picks = [torch.randperm(len(pool), generator=g)[:n] for _ in range(draws)]
    used = torch.cat(picks).unique()  # sorted; classify each image once, however many draws share it
    feats = (classify_fn or classify)(classifier, pool[used.to(pool.device)])[0]
    fds = np.array([frechet_from_features(feats[torch.searchsorted(used, p).to(feats.device)],
                                          real_features) for p in picks])
    return {"frechet_floor": float(fds.mean()),
            "frechet_floor_sd": float(fds.std(ddof=1)) if draws > 1 else 0.0,
            "floor_draws": draws, "floor_n": n}


def evaluate_samples(classifier: ImageClassifier, samples: torch.Tensor, real: torch.Tensor,
                     floor_pool: torch.Tensor | None = None, floor_draws: int = 10,
                     floor: dict | None = None, confident: float = 0.9,
                     real_features: torch.Tensor | None = None) -> dict:
    """The chapter-06 report card for a set of generated digits against held-out real ones.

    ``floor_pool``: the generator's training images (at least as many as samples), for the
    real-vs-real floor at the same N (``frechet_floor``: the mean over ``floor_draws`` random
    draws of N of them). Or ``floor``: a ``frechet_floor`` result for the same N and ``real``,
    computed once for many sets of samples. ``real_features``: the judge's features of the
    reference set when already computed (``judge.DigitJudge``); ``real`` then serves only the
    pixel metric.
    Keys: frechet, confident_fraction (max softmax > ``confident``), class_histogram,
    min_class_fraction, pixel_wasserstein (a weak metric, see ``pixel_wasserstein``), and
    with a floor also frechet_floor, frechet_floor_sd, floor_draws, floor_n and
    frechet_ratio = frechet / frechet_floor.
    """
    if floor is not None and floor_pool is not None:
        raise ValueError("pass floor_pool (to compute the floor) or floor (computed), not both")
    if floor is not None and floor["floor_n"] != len(samples):
        raise ValueError(f"the floor was computed for N = {floor['floor_n']}, not for these "
                         f"{len(samples)} samples: FDs at different N do not compare")
    f_fake, pred, conf = classify(classifier, samples)
    f_real = classify(classifier, real)[0] if real_features is None else real_features
    hist = torch.bincount(pred, minlength=10).double() / len(pred)
    out = {"n_samples": len(samples), "frechet": frechet_from_features(f_fake, f_real),
           "confident_fraction": (conf > confident).double().mean().item(),
           "class_histogram": [round(v, 4) for v in hist.tolist()],
           "min_class_fraction": hist.min().item(),
           "pixel_wasserstein": pixel_wasserstein(samples, real)}
    if floor_pool is not None:
        floor = frechet_floor(classifier, floor_pool, f_real, len(samples), floor_draws)
    if floor is not None:
        out.update(floor)
        out["frechet_ratio"] = out["frechet"] / max(out["frechet_floor"], 1e-12)
    return out


# ---------------------------------------------------------------------------------------
# The protocol for any classifier, reference set and pool
# ---------------------------------------------------------------------------------------
class Judge:
    """A classifier in eval mode with the features of the held-out reference set
    (``test_x``, labels ``test_y``), and the pool of training samples that floors are drawn
    from; floors are computed once per N. ``prepare`` maps samples to the classifier's input
    and ``batch_size`` is how many it reads at a time."""

    def __init__(self, classifier, test_x: torch.Tensor, test_y: torch.Tensor, pool: torch.Tensor,
                 info: dict | None = None, prepare=None, batch_size: int = 500):
        self.classifier, self.info = classifier.eval(), info or {}
        self.test_x, self.test_y, self.pool = test_x, test_y, pool
        self.prepare, self.batch_size = prepare, batch_size
        self.test_features, pred, _ = self.classify(test_x)
        self.test_accuracy = (pred == test_y.cpu()).double().mean().item()
        self._floors: dict[int, dict] = {}

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, predicted labels, confidence) of ``x``."""
        return classify(self.classifier, x, self.batch_size, self.prepare)

    def floor(self, n: int) -> dict:
        """``frechet_floor`` for ``n`` samples: mean and sd over 10 seeded draws of ``n``
        training samples against the reference set."""
        if n not in self._floors:
            self._floors[n] = frechet_floor(self.classifier, self.pool, self.test_features, n,
                                            draws=FLOOR_DRAWS,
                                            classify_fn=lambda model, x: self.classify(x))
        return self._floors[n]

    def score(self, samples: torch.Tensor, confident: float = 0.9) -> dict:
        """FD of ``samples`` against the reference set, the floor at the same N and their
        ratio, the confident fraction (max softmax above ``confident``) and the class histogram."""
        return self.score_with_labels(samples, confident)[0]

    def score_with_labels(self, samples: torch.Tensor, confident: float = 0.9
                          ) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """``score``, and the predicted labels and confidences it was computed from."""
        feats, pred, conf = self.classify(samples)
        hist = torch.bincount(pred, minlength=self.classifier.head.out_features).double() / len(pred)
        out = {"n_samples": len(samples), "frechet": frechet_from_features(feats, self.test_features),
               "confident_fraction": (conf > confident).double().mean().item(),
               "class_histogram": hist.tolist(), "min_class_fraction": hist.min().item(),
               **self.floor(len(samples))}
        out["frechet_ratio"] = out["frechet"] / max(out["frechet_floor"], 1e-12)
        return out, pred, conf


# ---------------------------------------------------------------------------------------
# The MNIST judge
# ---------------------------------------------------------------------------------------
# One recipe per profile: cpu and gpu share the full one (at least 99.0 % test accuracy and
# 97 % of real test digits confident > 0.9; measured in benchmarks/ddpm_mnist.py's JSON);
# ci trains a small judge in seconds.
JUDGE_RECIPES = {"ci": {"n_train": 10_000, "epochs": 1},
                 "cpu": {"n_train": 60_000, "epochs": 3},
                 "gpu": {"n_train": 60_000, "epochs": 3}}


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels: cheap, and the judge generalises from fewer digits."""
    pad = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()
    return pad[:, :, dy:dy + 28, dx:dx + 28]


# Batch 64 and a one-cycle peak of 1e-2: on 9,000 digits batch 128 and lr 2e-3 gave 82 %
# after one epoch where this gives ~94 %.
CLASSIFIER_RECIPE = {"batch_size": 64, "lr": 1e-2}


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 3,
                     batch_size: int = CLASSIFIER_RECIPE["batch_size"],
                     lr: float = CLASSIFIER_RECIPE["lr"], seed: int = 0,
                     progress: bool = True, device: torch.device | str = "cpu") -> ImageClassifier:
    """Cross-entropy with random 2-pixel shifts, AdamW and a one-cycle learning rate.
    Batches and shifts come from a seeded CPU generator; the model is returned on the CPU."""
    g = torch.Generator().manual_seed(seed)
    steps = epochs * (len(images) // batch_size)
    return seeded(lambda: fit_classifier(ImageClassifier().to(device), images, labels, steps, batch_size,
                                         lr, g, _augment, progress, device), seed)


def load_or_train_classifier(images: torch.Tensor, labels: torch.Tensor, data_spec: dict,
                             epochs: int = 3, seed: int = 0, progress: bool = True
                             ) -> tuple[ImageClassifier, dict]:
    """The course's evaluation classifier, cached like the diffusion models (trained on the
    device ``training.device.pick_device`` chooses, returned on the CPU)."""
    key = cache_key({"classifier": ImageClassifier().config, "epochs": epochs, "seed": seed,
                     **CLASSIFIER_RECIPE}, data_spec)
    return cached_classifier(
        cache_dir() / f"mnist-classifier-{key}.pt", ImageClassifier,
        lambda: train_classifier(images, labels, epochs, seed=seed, progress=progress,
                                 device=pick_device(), **CLASSIFIER_RECIPE))


def cached_classifier(path: Path, make, train) -> tuple[torch.nn.Module, dict]:
    """A judge's classifier: its weights loaded from the cache file ``path`` into ``make()``,
    or ``train()``'s model, whose weights are then cached there."""
    def load(weights):
        model = make()
        model.load_state_dict(weights)
        return model.eval()

    def compute():
        model = train()
        return model, model.state_dict()

    return cached(path, load, compute)


class DigitJudge(Judge):
    """The MNIST judge of a profile: the test split is the reference, the whole training split
    the floors' pool."""

    def __init__(self, classifier: ImageClassifier, profile: str, info: dict):
        test_x, test_y = test_images()
        super().__init__(classifier, test_x, test_y, training_images()[0], info)
        self.profile, self._class_judges, self._pool_labels = profile, {}, None

    def evaluate(self, samples: torch.Tensor) -> dict:
        """The report card of ``samples`` (digits in [-1, 1], clipped here): FD against the test
        split, the floor at the same N and their ratio, confident fraction, class histogram,
        and the (weak) pixel Wasserstein distance of chapter 06."""
        x = samples.detach().float().cpu().clamp(-1, 1)
        report = self.score(x)
        return {**report, "class_histogram": [round(v, 4) for v in report["class_histogram"]],
                "pixel_wasserstein": pixel_wasserstein(x, self.test_x[:len(x)])}

    def labels(self, samples: torch.Tensor) -> torch.Tensor:
        """The digit the judge sees in each sample."""
        return self.classify(samples.detach().float().cpu().clamp(-1, 1))[1]

    def on_real_digits(self) -> dict:
        """Accuracy and confident fraction on the 10,000 real test digits: the reference
        for generated ones."""
        return judge_real(self.classifier, self.test_x, self.test_y)

    def of_class(self, digit: int) -> Judge:
        """The protocol within one class: the test digits of that class are the reference and
        the training digits of that class the floors' pool (chapter 16's per-class drift)."""
        if digit not in self._class_judges:
            if self._pool_labels is None:           # the pool is the training split: its labels, read once
                self._pool_labels = training_images()[1]
            self._class_judges[digit] = Judge(self.classifier, self.test_x[self.test_y == digit],
                                              self.test_y[self.test_y == digit],
                                              self.pool[self._pool_labels == digit], self.info)
        return self._class_judges[digit]

    def describe(self) -> dict:
        recipe = JUDGE_RECIPES[self.profile]
        return {"profile": self.profile, **recipe, "reference": f"test[0:{N_TEST}]",
                "floor_pool": f"train[0:{len(self.pool)}]", "floor_draws": FLOOR_DRAWS,
                "trained_now": self.info["trained_now"], **self.on_real_digits()}


def train_judge_classifier(n_train: int, epochs: int, progress: bool = True) -> tuple[ImageClassifier, dict]:
    """A classifier of the judge's architecture and recipe, trained for ``epochs`` on the first
    ``n_train`` training digits (cached): the course's judge, or a weaker or stronger one for
    chapter 06's lesson (``benchmarks/judge_strength.py``)."""
    x, y = training_images(n_train)
    return load_or_train_classifier(x, y, {"dataset": "MNIST", "train_images": f"train[0:{n_train}]"},
                                    epochs=epochs, progress=progress)


_JUDGES: dict[str, DigitJudge] = {}


def load_judge(profile: str, progress: bool = True) -> DigitJudge:
    """The course's judge for a resolved ``profile`` (``ci``, ``cpu`` or ``gpu``; a chapter's
    ``cfg.profile``), trained once and cached (on disk and in memory)."""
    if profile not in JUDGE_RECIPES:
        raise ValueError(f"the judge is made per profile: {profile!r} is not one of "
                         f"{', '.join(JUDGE_RECIPES)} (resolve 'auto' with course.settings.resolve_profile)")
    if profile not in _JUDGES:
        classifier, info = train_judge_classifier(**JUDGE_RECIPES[profile], progress=progress)
        _JUDGES[profile] = DigitJudge(classifier, profile, info)
    return _JUDGES[profile]
