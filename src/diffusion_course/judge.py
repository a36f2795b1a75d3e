"""The course's one judge of generated MNIST digits, and its one evaluation protocol.

Protocol (every chapter and benchmark that scores MNIST digits uses it):
  * generated digits are compared with MNIST's **test split**, all 10,000 digits, never trained on;
  * the **judge** is the course classifier (``metrics.MNISTClassifier``) trained by one recipe
    per profile on the training split, cached; its features give the Frechet distance, its
    softmax the confident fraction and the class histogram (``metrics.evaluate_samples``);
  * the **real-vs-real floor** for N samples is the mean FD of N random training digits
    against the same test split over 10 seeded draws (``metrics.frechet_floor``), computed
    once per N.

    judge = load_judge(PROFILE)
    report = judge.evaluate(samples)      # frechet, frechet_floor, frechet_ratio, confident_fraction, ...

Chapter 06 teaches judges of other strengths as a lesson (``benchmarks/judge_strength.py``);
the course's yardstick is this one.
"""
from __future__ import annotations

import torch

from .metrics import (MNISTClassifier, classify, evaluate_samples, frechet_floor, judge_real,
                      load_or_train_classifier)
from .mnist_ddpm import N_TEST, test_images, training_images
from .settings import resolve_profile

# One recipe per profile: cpu and gpu share the full one (at least 99.0 % test accuracy and
# 97 % of real test digits confident > 0.9; measured in benchmarks/ddpm_mnist.py's JSON);
# ci trains a small judge in seconds.
JUDGE_RECIPES = {"ci": {"n_train": 10_000, "epochs": 1},
                 "cpu": {"n_train": 60_000, "epochs": 3},
                 "gpu": {"n_train": 60_000, "epochs": 3}}
FLOOR_DRAWS = 10


class DigitJudge:
    """The judge of a profile with the test split's features, and the training pool that
    floors are drawn from; floors are computed once per N."""

    def __init__(self, classifier: MNISTClassifier, profile: str, info: dict):
        self.classifier, self.profile, self.info = classifier.eval(), profile, info
        self.test_x, self.test_y = test_images()
        self.pool = training_images()[0]  # the whole training split: floors draw from it
        self.test_features = classify(classifier, self.test_x)[0]
        self._floors: dict[int, dict] = {}

    def floor(self, n: int) -> dict:
        """``metrics.frechet_floor`` for ``n`` samples (mean and sd over 10 seeded draws)."""
        if n not in self._floors:
            self._floors[n] = frechet_floor(self.classifier, self.pool, self.test_features, n,
                                            draws=FLOOR_DRAWS)
        return self._floors[n]

    def evaluate(self, samples: torch.Tensor) -> dict:
        """The report card of ``samples`` (digits in [-1, 1], clipped here): FD against the test
        split, the floor at the same N and their ratio, confident fraction, class histogram."""
        x = samples.detach().float().cpu().clamp(-1, 1)
        n = len(x)
        return evaluate_samples(self.classifier, x, self.test_x[:n], floor=self.floor(n),
                                real_features=self.test_features)

    def labels(self, samples: torch.Tensor) -> torch.Tensor:
        """The digit the judge sees in each sample."""
        return classify(self.classifier, samples.detach().float().cpu().clamp(-1, 1))[1]

    def on_real_digits(self) -> dict:
        """Accuracy and confident fraction on the 10,000 real test digits: the reference
        for generated ones."""
        return judge_real(self.classifier, self.test_x, self.test_y)

    def describe(self) -> dict:
        recipe = JUDGE_RECIPES[self.profile]
        return {"profile": self.profile, **recipe, "reference": f"test[0:{N_TEST}]",
                "floor_pool": f"train[0:{len(self.pool)}]", "floor_draws": FLOOR_DRAWS,
                "trained_now": self.info["trained_now"], **self.on_real_digits()}


def train_judge_classifier(n_train: int, epochs: int, progress: bool = True) -> tuple[MNISTClassifier, dict]:
    """A classifier of the judge's architecture and recipe, trained for ``epochs`` on the first
    ``n_train`` training digits (cached): the course's judge, or a weaker or stronger one for
    chapter 06's lesson (``benchmarks/judge_strength.py``)."""
    x, y = training_images(n_train)
    return load_or_train_classifier(x, y, {"dataset": "MNIST", "train_images": f"train[0:{n_train}]"},
                                    epochs=epochs, progress=progress)


_JUDGES: dict[str, DigitJudge] = {}


def load_judge(profile: str = "auto", progress: bool = True) -> DigitJudge:
    """The course's judge for ``profile``, trained once and cached (on disk and in memory)."""
    name = resolve_profile(profile)
    if name not in _JUDGES:
        classifier, info = train_judge_classifier(**JUDGE_RECIPES[name], progress=progress)
        _JUDGES[name] = DigitJudge(classifier, name, info)
    return _JUDGES[name]
