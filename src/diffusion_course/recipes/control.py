"""Control and personalisation of the class-conditional reference model (chapter 09's twin,
``recipes.mnist_ddpm``), which stays frozen: the one place chapter 16 and
``benchmarks/control.py`` get their subject, their fine-tunes and their ControlNet from.

    python -m diffusion_course.recipes.references mnist-controlnet   # the shipped ControlNet

- the **subject**: crossed sevens (``data.structure.is_crossed_seven``), a way of writing a
  digit the model can draw but has no label for; ``subject_images`` picks the few the methods
  see, ``concept_probe`` is the classifier that recognises the concept in samples;
- **textual inversion** learns one new label vector (``models.control.NewLabels``) with the
  model frozen; **DreamBooth** fine-tunes the model (all of it, or ``LoRA`` adapters) on the
  subject bound to a new label, with or without the prior-preservation loss;
- **ControlNet** (``models.control.ControlNet``) reads a digit's skeleton, trained by the
  course's training loop (``controlnet_model``).
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn as nn

from ..course.settings import MODELS
from ..data.mnist import data_spec, training_images
from ..data.structure import dilate, is_crossed_seven, letter, structure_map
from ..diffusion.objectives import diffusion_loss
from ..diffusion.dps import dps_sample
from ..diffusion.sampling import sdedit
from ..models.control import ControlNet, NewLabels, add_lora, trainable_parameters, with_structure
from ..training.cache import load_or_train, seeded
from ..training.device import autocast, pick_device
from ..training.loop import TrainConfig
from ..training.references import load_reference, reference_path, sha256sum
from .mnist_ddpm import NUM_CLASSES, load_mnist_model, sample_digits

SUBJECT_DIGIT = 7
CONTROLNET = "mnist-controlnet"

# ControlNet's training per profile (batch 128 but ci's 32). The copy starts from the base's
# encoder, so it needs far fewer steps than the base did (6,000); the shipped one is `cpu`'s.
CONTROLNET_RECIPES = {"ci": {"steps": 8, "batch_size": 32, "n_train": 2_000},
                      "cpu": {"steps": 3_000, "batch_size": 128, "n_train": 60_000},
                      "gpu": {"steps": 20_000, "batch_size": 128, "n_train": 60_000}}
REFERENCE_RECIPES = {CONTROLNET: {"profile": "cpu"}}


# ---------------------------------------------------------------------------------------
# The frozen base
# ---------------------------------------------------------------------------------------
def base_model(progress: bool = True) -> tuple[nn.Module, TrainConfig]:
    """The class-conditional reference model, frozen, and its training recipe."""
    net, info = load_mnist_model("cpu", "reference", conditional=True, progress=progress)
    return net.requires_grad_(False), info["train_config"]


# ---------------------------------------------------------------------------------------
# ControlNet
# ---------------------------------------------------------------------------------------
def controlnet_config(profile: str) -> TrainConfig:
    """The base's recipe (linear schedule, v, min-SNR 5, bf16) with a smaller learning rate,
    for the copy that starts trained."""
    recipe = CONTROLNET_RECIPES[profile]
    return TrainConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=1e-3, warmup=100,
                       lr_decay="cosine", ema_decay=0.999, kind="v", min_snr_gamma=5.0,
                       schedule="linear", T=1000, precision="bf16", seed=0)


def control_loss(cfg: TrainConfig):
    """The diffusion loss of ``cfg`` for a ControlNet given each training digit's own skeleton,
    with the null label: the structure map is the only condition."""
    schedule = cfg.noise_schedule()

    def loss(net, x0, y, t, eps):
        structure = structure_map(x0)
        return diffusion_loss(lambda xt, tt: net(xt, tt, None, structure), x0, schedule, cfg.kind,
                              cfg.min_snr_gamma, t=t, eps=eps)
    return loss


def _base_spec() -> dict:
    return {"base": "mnist-cond reference", "sha256": sha256sum(reference_path("mnist-cond"))}


def train_controlnet(profile: str, progress: bool = True) -> tuple[ControlNet, dict]:
    """(EMA ControlNet, info) trained for ``profile`` by the course's loop (cached)."""
    base, _ = base_model(progress)
    cfg, n_train = controlnet_config(profile), CONTROLNET_RECIPES[profile]["n_train"]
    spec = {"method": "controlnet", "structure": "skeleton", "labels": "null", **_base_spec()}
    net, info = load_or_train("controlnet", lambda: ControlNet(base), cfg,
                              lambda: training_images(n_train), data_spec(n_train),
                              device=pick_device(), progress=progress,
                              loss_fn=control_loss(cfg), loss_spec=spec)
    return net, {**info, "train_config": cfg, "source": "student",
                 "settings": {"profile": profile, "steps": cfg.steps, "n_train": n_train}}


def train_reference(name: str, progress: bool = True) -> tuple[ControlNet, dict]:
    """What ``python -m diffusion_course.recipes.references mnist-controlnet`` trains."""
    return train_controlnet(REFERENCE_RECIPES[name]["profile"], progress)


def controlnet_model(model: str = "reference", profile: str = "cpu",
                     progress: bool = True) -> tuple[ControlNet, dict]:
    """(ControlNet in eval mode, info): ``"reference"`` the shipped one (loaded offline),
    ``"student"`` trained now for ``profile`` (cached)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "student":
        net, info = train_controlnet(profile, progress)
        return net.eval().requires_grad_(False), info
    base, _ = base_model(progress)
    recipe_profile = REFERENCE_RECIPES[CONTROLNET]["profile"]
    cfg = controlnet_config(recipe_profile)
    net, info = load_reference(CONTROLNET, seeded(lambda: ControlNet(base), cfg.seed), cfg,
                               data_spec(CONTROLNET_RECIPES[recipe_profile]["n_train"]))
    return net.to(pick_device()).eval().requires_grad_(False), {**info, "train_config": cfg,
                                                                "source": "reference"}


# ---------------------------------------------------------------------------------------
# Sampling and scoring
# ---------------------------------------------------------------------------------------
GUIDANCE = 2.0       # chapter 09's weight: every class drawn by the reference, FD/floor at its best
CONCEPT_GUIDANCE = 4.0   # a learned label's weight (and the base's sevens', to compare): crossed sevens
                         # of textual inversion's vector, 200 samples: 78 % at w = 2, 89 % at w = 4
EVAL_STEPS = 20      # DPM-Solver++(2M) steps of every scored sample (chapter 15: within 4 % of the ODE)


def draw(model, tcfg: TrainConfig, n: int, seed: int, labels: torch.Tensor | None = None,
         guidance: float | None = GUIDANCE, steps: int = EVAL_STEPS) -> torch.Tensor:
    """``n`` samples [n, 1, 28, 28] in [-1, 1] by DPM-Solver++(2M): of ``labels`` with
    classifier-free ``guidance``, or unlabelled (the null label) when ``labels`` is None.
    The batch is the whole of n, so a structure-bound net (``with_structure``) fits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return sample_digits(model, tcfg, n, steps, 0.0, g, pick_device(), batch_size=n, labels=labels,
                             guidance=guidance if labels is not None else None, order=2).clamp(-1, 1)


def class_labels(per_class: int) -> torch.Tensor:
    """0, 0, ..., 1, 1, ..., 9: ``per_class`` of each digit."""
    return torch.arange(NUM_CLASSES).repeat_interleave(per_class)


def per_class_report(judge, samples: torch.Tensor, labels: torch.Tensor) -> dict:
    """For each digit asked for: the judge's accuracy and the FD/floor of its samples within the
    class (``DigitJudge.of_class``); with their means over the classes."""
    pred = judge.labels(samples)
    out = {}
    for c in range(NUM_CLASSES):
        m = labels == c
        out[c] = {"accuracy": (pred[m] == c).double().mean().item(),
                  "frechet_ratio": judge.of_class(c).score(samples[m])["frechet_ratio"]}
    out["mean"] = {k: sum(out[c][k] for c in range(NUM_CLASSES)) / NUM_CLASSES for k in ("accuracy", "frechet_ratio")}
    return out


def drift(before: dict, after: dict) -> dict:
    """Per class, accuracy change (points) and FD/floor ratio after/before; over the classes
    other than the subject's, the worst of each and the mean factor; the subject's class apart."""
    rows = {c: {"accuracy_points": 100 * (after[c]["accuracy"] - before[c]["accuracy"]),
                "frechet_factor": after[c]["frechet_ratio"] / before[c]["frechet_ratio"]}
            for c in range(NUM_CLASSES)}
    others = [rows[c] for c in range(NUM_CLASSES) if c != SUBJECT_DIGIT]
    return {"per_class": rows, "worst_accuracy_points": min(r["accuracy_points"] for r in others),
            "worst_frechet_factor": max(r["frechet_factor"] for r in others),
            "mean_frechet_factor": sum(r["frechet_factor"] for r in others) / len(others),
            "subject_class": rows[SUBJECT_DIGIT]}


# ---------------------------------------------------------------------------------------
# The subject and its classifier
# ---------------------------------------------------------------------------------------
def subject_images(n: int = 5) -> torch.Tensor:
    """The first ``n`` crossed sevens of the training split: all the methods see of the concept."""
    x, y = training_images()
    return x[is_crossed_seven(x, y)][:n]


def letter_images(ch: str = "A", n: int = 5) -> torch.Tensor:
    """``n`` drawings of a letter (turned by -8..8 degrees): a concept the model cannot draw."""
    return torch.stack([letter(ch, rotate=a) for a in torch.linspace(-8, 8, n).tolist()])


class ConceptProbe:
    """Recognises crossed sevens: logistic regression on the judge's features, trained on the
    training split's sevens (the rule ``is_crossed_seven`` gives the answer; the subject images
    are left out), tested on the test split's. A sample shows the concept when the judge reads
    a seven and the probe says crossed."""

    def __init__(self, judge, exclude: int = 5, steps: int = 300, seed: int = 0):
        self.judge = judge
        x, y = training_images()
        sevens = x[y == SUBJECT_DIGIT]
        crossed = is_crossed_seven(sevens, torch.full((len(sevens),), SUBJECT_DIGIT))
        keep = torch.ones(len(sevens), dtype=torch.bool)
        keep[crossed.nonzero().flatten()[:exclude]] = False          # the subject images
        feats = judge.classify(sevens[keep])[0]
        self.mean, self.std = feats.mean(0), feats.std(0) + 1e-6
        self.linear = seeded(lambda: nn.Linear(feats.shape[1], 1), seed)
        target = crossed[keep].float()
        pos = target.mean()
        weight = torch.where(target > 0, 0.5 / pos, 0.5 / (1 - pos))  # both classes count equally
        opt = torch.optim.Adam(self.linear.parameters(), lr=1e-2)
        z = (feats - self.mean) / self.std
        for _ in range(steps):
            loss = (weight * nn.functional.binary_cross_entropy_with_logits(
                self.linear(z).squeeze(1), target, reduction="none")).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.linear.requires_grad_(False)
        tx, ty = judge.test_x, judge.test_y
        test_sevens = tx[ty == SUBJECT_DIGIT]
        truth = is_crossed_seven(test_sevens, torch.full((len(test_sevens),), SUBJECT_DIGIT))
        said = self.crossed(test_sevens)
        self.held_out = {"sevens": len(test_sevens), "crossed": int(truth.sum()),
                         "recall": said[truth].float().mean().item(),
                         "specificity": (~said[~truth]).float().mean().item()}
        self.held_out["balanced_accuracy"] = (self.held_out["recall"] + self.held_out["specificity"]) / 2

    def crossed(self, x: torch.Tensor) -> torch.Tensor:
        """The probe's verdict alone (for images already known to be sevens)."""
        z = (self.judge.classify(x.clamp(-1, 1))[0] - self.mean) / self.std
        return self.linear(z).squeeze(1) > 0

    def concept_rate(self, samples: torch.Tensor) -> float:
        """The fraction of ``samples`` that are sevens (judge) and crossed (probe)."""
        return ((self.judge.labels(samples) == SUBJECT_DIGIT) & self.crossed(samples)).float().mean().item()


def feature_distance(judge, samples: torch.Tensor, targets: torch.Tensor) -> float:
    """Subject fidelity: the mean over samples of the distance, in the judge's features, to the
    nearest of the ``targets`` images (smaller is closer)."""
    fs, ft = judge.classify(samples.clamp(-1, 1))[0], judge.classify(targets)[0]
    return torch.cdist(fs, ft).amin(1).mean().item()


# ---------------------------------------------------------------------------------------
# Textual inversion and DreamBooth
# ---------------------------------------------------------------------------------------
# Steps, batch and the prior's size are chapter 16's knobs (``course.settings``).
LEARNING_RATES = {"inversion": 1e-2, "full": 1e-4, "lora": 1e-3}
PRIOR_WEIGHT = 1.0   # lambda of the prior-preservation loss (Ruiz et al. 2023 use 1)


def _fit(model: nn.Module, params: list, images: torch.Tensor, label: int, tcfg: TrainConfig,
         steps: int, batch: int, lr: float, seed: int,
         min_snr_gamma: float | None, prior: tuple | None = None, prior_weight: float = PRIOR_WEIGHT) -> dict:
    """Adam on ``params`` for the subject loss on ``images`` (all with ``label``) plus, with
    ``prior`` = (images, labels), ``prior_weight`` times the same loss on the prior images:

        L = E ||f(x_t, t, label) - target||^2  +  lambda E ||f(x'_t, t, y') - target'||^2

    (min-SNR weighted with ``min_snr_gamma``; None: the plain loss). Returns the loss curve
    and the time."""
    g = torch.Generator().manual_seed(seed)
    schedule, opt = tcfg.noise_schedule(), torch.optim.Adam(params, lr=lr)
    device = next(model.parameters()).device
    losses, start = [], time.perf_counter()

    def term(x, y):
        t = torch.randint(1, schedule.T + 1, (len(x),), generator=g)
        eps = torch.randn(x.shape, generator=g)
        return diffusion_loss(model, x.to(device), schedule, tcfg.kind, min_snr_gamma, y.to(device),
                              t=t.to(device), eps=eps.to(device))

    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=g)
        with autocast(tcfg.precision, device):
            loss = term(images[idx], torch.full((batch,), label))
            if prior is not None:
                j = torch.randint(0, len(prior[0]), (batch,), generator=g)
                loss = loss + prior_weight * term(prior[0][j], prior[1][j])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "seconds": time.perf_counter() - start, "steps": steps,
            "trainable": sum(p.numel() for p in params)}


def textual_inversion(base: nn.Module, tcfg: TrainConfig, images: torch.Tensor, steps: int, batch: int,
                      seed: int = 0, lr: float = LEARNING_RATES["inversion"]) -> tuple[NewLabels, dict]:
    """One new label vector learned from ``images`` by the plain diffusion loss (Gal et al.),
    everything else frozen. It starts as the null label's vector: a word that means nothing
    yet. Not min-SNR: that weighting puts little weight on the noisy steps where a digit's shape
    is decided (crossed sevens at w = 2, 200 samples: 62 % with it, 78 % without)."""
    model = NewLabels(base.requires_grad_(False), base.label_emb.weight[base.num_classes])
    info = _fit(model, [model.vectors], images, model.new_label(), tcfg, steps, batch, lr, seed, None)
    return model.eval(), info


def dreambooth(base: nn.Module, tcfg: TrainConfig, images: torch.Tensor, steps: int, batch: int,
               seed: int = 0, prior: tuple | None = None, rank: int | None = None,
               lr: float | None = None) -> tuple[NewLabels, dict]:
    """Fine-tune on ``images`` bound to a new label that starts as the subject's class label
    ("a [V] seven"); with ``prior`` (images, labels the frozen model drew) the prior-preservation
    term keeps the old labels' meaning. ``rank``: train ``LoRA`` adapters of that rank (and the
    new vector) instead of every weight."""
    # LoRA's A starts random: drawn under ``seed``, so a fine-tune is the same in any process
    net = copy.deepcopy(base).requires_grad_(True) if rank is None else seeded(lambda: add_lora(base, rank), seed)
    model = NewLabels(net, base.label_emb.weight[SUBJECT_DIGIT])
    params = [p for p in model.parameters() if p.requires_grad]
    lr = lr if lr is not None else LEARNING_RATES["full" if rank is None else "lora"]
    info = _fit(model, params, images, model.new_label(), tcfg, steps, batch, lr, seed, tcfg.min_snr_gamma, prior)
    assert info["trainable"] == trainable_parameters(model)
    return model.eval().requires_grad_(False), {**info, "rank": rank, "prior": prior is not None}


def prior_images(base: nn.Module, tcfg: TrainConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamBooth's class images, drawn by the frozen model: half of them of the subject's class
    (the paper's class prior), half of every class in turn (drift reaches them all). Drawn
    unguided (w = 1), from the model's own conditional distribution: the prior term's minimum
    is then the base model itself (guided images would pull it towards guided samples)."""
    labels = torch.cat([torch.full((n // 2,), SUBJECT_DIGIT), torch.arange(n - n // 2) % NUM_CLASSES])
    return draw(base, tcfg, n, seed, labels, guidance=1.0), labels


# ---------------------------------------------------------------------------------------
# Structure: ControlNet against SDEdit and DPS
# ---------------------------------------------------------------------------------------
SDEDIT_T0 = 600       # SDEdit's start: the sketch noised to step 600 of 1000
DPS_STEPS, DPS_WEIGHT = 50, 400.0   # chapter 12's weight for random inpainting


def sketch(structure: torch.Tensor) -> torch.Tensor:
    """A skeleton drawn as an image in [-1, 1], strokes 3 pixels wide: what SDEdit starts from."""
    return dilate(structure) * 2 - 1


class KnownPixels:
    """The structure as a measurement for DPS: y = M x, M keeps the pixels on the skeleton
    (ink: 1) and those more than 2 pixels from it (background: 0), in [0, 1] images."""

    def __init__(self, structure: torch.Tensor):
        near = dilate(dilate(structure))
        self.mask = torch.maximum(structure, 1 - near)
        self.y = structure * self.mask          # 1 on the skeleton, 0 far from it

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x.device) * x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(y.device) * y


STRUCTURE_METHODS = ("controlnet", "unconditioned", "sdedit", "dps")


def follow_structure(method: str, structure: torch.Tensor, base: nn.Module, tcfg: TrainConfig, seed: int,
                     controlnet: ControlNet | None = None) -> torch.Tensor:
    """Digits [n, 1, 28, 28] in [-1, 1] meant to follow the skeletons ``structure`` [n, 1, 28, 28],
    none of them told the class: ``controlnet`` reads them; ``unconditioned`` ignores them (the
    base model with the null label); ``sdedit`` starts from the sketch (``sketch``) noised to
    step ``SDEDIT_T0``; ``dps`` treats them as a measurement (``KnownPixels``)."""
    if method not in STRUCTURE_METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(STRUCTURE_METHODS)}")
    n, schedule, g = len(structure), tcfg.noise_schedule(), torch.Generator().manual_seed(seed)
    if method == "controlnet":
        if controlnet is None:
            raise ValueError("method 'controlnet' needs the controlnet")
        return draw(with_structure(controlnet, structure), tcfg, n, seed)
    if method == "unconditioned":
        return draw(base, tcfg, n, seed)
    if method == "sdedit":
        with torch.no_grad(), autocast(tcfg.precision, pick_device()):
            out = sdedit(base, sketch(structure), SDEDIT_T0, schedule, steps=EVAL_STEPS, eta=0.0,
                         kind=tcfg.kind, generator=g, device=pick_device()).x0
        return out.float().clamp(-1, 1)
    physics = KnownPixels(structure.to(pick_device()))
    out = dps_sample(base, schedule, tcfg.kind, physics.y, physics, DPS_STEPS, DPS_WEIGHT, generator=g)
    return (out.cpu() * 2 - 1).clamp(-1, 1)
