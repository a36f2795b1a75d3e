"""Text to image at MNIST scale (chapter 17): captions, a CLIP-style encoder pair, and a U-Net
that draws what a caption asks for, each trained by the course's training loop; the one place
chapter 17 and ``benchmarks/text_to_image.py`` get them from.

    python -m diffusion_course.recipes.references mnist-clip   # the shipped encoder pair
    python -m diffusion_course.recipes.references mnist-text   # the shipped text-to-image U-Net

- **captions** (``data.captions``): every training and test digit described by its label and
  its measured thickness and slant, in varied words; ``caption_data`` holds them per split;
- **the encoder pair** (``models.text.ContrastivePair``) trained with CLIP's loss on
  (digit, caption) batches; ``retrieval`` and ``zero_shot`` measure it;
- **the text-to-image U-Net** (``models.text.TextConditionedUNet``): chapter 05's U-Net with
  cross-attention at 7 x 7 and in the middle, reading the frozen text encoder's token vectors.
  It starts from the chapter-05 reference (the cross-attention's output projections start at
  zero, so at step 0 it *is* that unconditional model) and learns to listen, with 10 % of
  captions dropped for classifier-free guidance;
- ``text_to_image``: the whole pipeline, prompt to pixels, in one function.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from ..course.settings import MODELS
from ..data.captions import (ATTRIBUTES, CONTEXT_LENGTH, NUMBER_WORDS, AttributeScale, Tokeniser,
                             captions_for, held_out_levels, hold_out, measure)
from ..data.mnist import test_images, training_images
from ..diffusion.sampling import sample
from ..evaluation.compute import median_seconds, peak_memory
from ..models.text import ContrastivePair, ImageEncoder, TextConditionedUNet, TextEncoder, contrastive_loss
from ..models.unet import UNet
from ..training.cache import load_or_train, seeded
from ..training.device import autocast, pick_device
from ..training.loop import TrainConfig
from ..training.references import load_reference, reference_path, sha256sum
from . import control
from .mnist_ddpm import load_mnist_model, make_unet, reference_settings

CLIP, TEXT_UNET = "mnist-clip", "mnist-text"
CAPTION_DROPOUT = 0.1     # probability of training on the empty caption (GLIDE: 20 %)
CAPTION_SEED = 0          # the draw of each digit's template and words
CAPTION_DRAWS = 2         # captions per training digit for the encoder pair (other words, same content)

# Training per profile. The encoder pair is small and trains from scratch; the U-Net starts
# from the chapter-05 reference, so it needs a fraction of that model's 24,000 steps.
CLIP_RECIPES = {"ci": {"steps": 40, "batch_size": 128, "n_train": 2_000},
                "cpu": {"steps": 2_000, "batch_size": 256, "n_train": 60_000},
                "gpu": {"steps": 10_000, "batch_size": 512, "n_train": 60_000}}
TEXT_RECIPES = {"ci": {"steps": 6, "batch_size": 32, "n_train": 2_000},
                "cpu": {"steps": 4_000, "batch_size": 128, "n_train": 60_000},
                "gpu": {"steps": 20_000, "batch_size": 128, "n_train": 60_000}}
REFERENCE_RECIPES = {CLIP: {"profile": "cpu"}, TEXT_UNET: {"profile": "cpu"}}

EVAL_STEPS = 20           # DPM-Solver++(2M) steps of every scored sample (chapter 15)


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------
TOKENISER = Tokeniser()


@functools.lru_cache(maxsize=2)
def _measured(split: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images, labels, measured values) of a split, measured once per process."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = training_images() if split == "train" else test_images()
    return images, labels, measure(images)


@functools.lru_cache(maxsize=1)
def attribute_scale() -> AttributeScale:
    """The terciles and medians of the training split, per class: one scale for every caption
    and every score."""
    _, labels, values = _measured("train")
    return AttributeScale(values, labels)


@functools.lru_cache(maxsize=4)
def caption_data(split: str, draws: int = 1) -> dict:
    """A split's digits with everything said about them: images, labels, measured values,
    levels, whether the digit has its class's held-out combination, and ``draws`` captions per
    digit (as text, and as token ids [draws, N, L]; the first draw is the same for any
    ``draws``). Training captions never name a held-out combination; test captions say what
    the digit is."""
    images, labels, values = _measured(split)
    levels = attribute_scale().levels(values, labels)
    g = torch.Generator().manual_seed(CAPTION_SEED + (split == "test"))
    texts = [captions_for(labels, levels, g, training=split == "train") for _ in range(draws)]
    return {"images": images, "labels": labels, "values": values, "levels": levels,
            "held_out": hold_out(labels, levels), "texts": texts,
            "ids": torch.stack([TOKENISER.encode(t) for t in texts])}


def _training_pairs(n_train: int, draws: int):
    """(images, caption ids) of the first ``n_train`` training digits, each digit once per
    draw of its caption: what the training loop samples pairs from."""
    data = caption_data("train", draws)
    return data["images"][:n_train].repeat(draws, 1, 1, 1), data["ids"][:, :n_train].reshape(-1, CONTEXT_LENGTH)


def _data_spec(n_train: int, draws: int) -> dict:
    return {"dataset": "MNIST captions", "train_images": f"train[0:{n_train}]", "caption_draws": draws,
            "caption_seed": CAPTION_SEED, "vocabulary": len(TOKENISER), "context": CONTEXT_LENGTH}


# ---------------------------------------------------------------------------------------
# The encoder pair
# ---------------------------------------------------------------------------------------
def make_pair() -> ContrastivePair:
    """The encoder pair: a 2-layer transformer of width 64 and a 3-convolution CNN, both into
    a 64-dimensional joint space."""
    return ContrastivePair(TextEncoder(len(TOKENISER), CONTEXT_LENGTH), ImageEncoder())


def clip_config(profile: str, steps: int | None = None) -> TrainConfig:
    """The course's loop settings for CLIP's loss (the diffusion fields are unused); ``steps``
    replaces the profile's number of steps."""
    recipe = CLIP_RECIPES[profile]
    steps = steps or recipe["steps"]
    return TrainConfig(steps=steps, batch_size=recipe["batch_size"], lr=1e-3, warmup=min(100, steps // 10 + 1),
                       lr_decay="cosine", weight_decay=0.1, ema_decay=0.995, precision="fp32", seed=0)


def clip_loss(net, images, ids, t, eps):
    """The training loop's loss hook: CLIP's loss of the batch (the loop's t and eps unused)."""
    return contrastive_loss(net(images, ids))


def train_pair(profile: str, progress: bool = True, steps: int | None = None) -> tuple[ContrastivePair, dict]:
    """(EMA encoder pair, info) trained for ``profile`` (``steps`` replacing its number of
    steps) by the course's loop (cached)."""
    cfg, n_train = clip_config(profile, steps), CLIP_RECIPES[profile]["n_train"]
    net, info = load_or_train("clip", make_pair, cfg, lambda: _training_pairs(n_train, CAPTION_DRAWS),
                              _data_spec(n_train, CAPTION_DRAWS), device=pick_device(), progress=progress,
                              loss_fn=clip_loss, loss_spec={"loss": "symmetric contrastive"})
    return net, {**info, "train_config": cfg, "source": "student",
                 "settings": {"profile": profile, "steps": cfg.steps, "n_train": n_train}}


def _shipped_or_trained(name: str, model: str, profile: str, progress: bool, train, make, config, recipes: dict,
                        data_spec) -> tuple[nn.Module, dict]:
    """(network, info): ``"reference"`` the shipped ``name`` (built by ``make``, its recipe
    ``config`` and ``data_spec(n_train)`` checked against the file), ``"student"``
    ``train(profile, progress)`` (cached)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "student":
        return train(profile, progress)
    recipe_profile = REFERENCE_RECIPES[name]["profile"]
    cfg = config(recipe_profile)
    net, info = load_reference(name, seeded(make, 0), cfg, data_spec(recipes[recipe_profile]["n_train"]))
    return net, {**info, "source": "reference", "train_config": cfg}


def encoder_pair(model: str = "reference", profile: str = "cpu", progress: bool = True
                 ) -> tuple[ContrastivePair, dict]:
    """(encoder pair in eval mode, on the CPU, info): ``"reference"`` the shipped one,
    ``"student"`` trained now for ``profile`` (cached)."""
    net, info = _shipped_or_trained(CLIP, model, profile, progress, train_pair, make_pair, clip_config,
                                    CLIP_RECIPES, lambda n: _data_spec(n, CAPTION_DRAWS))
    return net.cpu().eval().requires_grad_(False), info


@torch.no_grad()
def retrieval(pair: ContrastivePair, images: torch.Tensor, ids: torch.Tensor, batch: int = 64,
              ks: tuple[int, ...] = (1, 5)) -> dict:
    """Top-k accuracy of finding a digit's own caption among ``batch`` (image -> caption) and a
    caption's own digit (caption -> image), over consecutive batches; chance is k / batch."""
    hits = {f"{d}_top{k}": 0.0 for d in ("image_to_caption", "caption_to_image") for k in ks}
    n = len(images) // batch * batch
    for i in range(0, n, batch):
        logits = pair(images[i:i + batch], ids[i:i + batch])
        for name, m in (("image_to_caption", logits), ("caption_to_image", logits.T)):
            ranked = m.topk(max(ks), dim=1).indices
            own = torch.arange(batch)[:, None]
            for k in ks:
                hits[f"{name}_top{k}"] += (ranked[:, :k] == own).any(1).sum().item()
    return {**{k: v / n for k, v in hits.items()}, "batch": batch, "n": n,
            **{f"chance_top{k}": k / batch for k in ks}}


ZERO_SHOT_PROMPT = "a handwritten {}"


@torch.no_grad()
def zero_shot(pair: ContrastivePair, images: torch.Tensor, prompt: str = ZERO_SHOT_PROMPT) -> torch.Tensor:
    """The digit each image is closest to among the ten prompts "a handwritten zero", ...:
    a classifier nobody trained as one."""
    texts = pair.embed_texts(TOKENISER.encode([prompt.format(w) for w in NUMBER_WORDS]))
    return torch.cat([(pair.embed_images(images[i:i + 1000]) @ texts.T).argmax(1)
                      for i in range(0, len(images), 1000)])


# ---------------------------------------------------------------------------------------
# The text-to-image U-Net
# ---------------------------------------------------------------------------------------
CONTEXT_WIDTH = 64        # the text encoder's width: what the cross-attention's keys read


def text_config(profile: str) -> TrainConfig:
    """The chapter-05 reference's recipe (linear schedule, v, min-SNR 5, bf16) with a smaller
    learning rate for a network that starts trained, and caption dropout."""
    recipe = TEXT_RECIPES[profile]
    return TrainConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=5e-4,
                       warmup=min(100, recipe["steps"] // 10 + 1), lr_decay="cosine", ema_decay=0.999,
                       kind="v", min_snr_gamma=5.0, schedule="linear", T=1000,
                       label_dropout=CAPTION_DROPOUT, precision="bf16", seed=0)


def make_text_unet(pair: ContrastivePair | None = None, start: nn.Module | None = None) -> TextConditionedUNet:
    """The chapter-05 U-Net (reference settings) with cross-attention, reading ``pair``'s text
    encoder; its U-Net weights are ``start``'s where both have them (the new cross-attention
    starts with a zero output, so the result computes what ``start`` computes)."""
    unet = UNet(**{**make_unet(reference_settings("mnist-ddpm")).config, "context_dim": CONTEXT_WIDTH})
    text = TextEncoder(len(TOKENISER), CONTEXT_LENGTH)
    if pair is not None:
        text.load_state_dict(pair.text.state_dict())
    if start is not None:
        missing, unexpected = unet.load_state_dict(start.state_dict(), strict=False)
        if unexpected or not all(".cross." in k or k.startswith("mid_cross.") for k in missing):
            raise ValueError(f"the starting U-Net does not fit: missing {missing}, unexpected {unexpected}")
    return TextConditionedUNet(text, unet)


def _start_spec() -> dict:
    return {"start": "mnist-ddpm reference", "start_sha256": sha256sum(reference_path("mnist-ddpm")),
            "text_encoder": "mnist-clip reference", "clip_sha256": sha256sum(reference_path(CLIP))}


def train_text_unet(profile: str, progress: bool = True) -> tuple[TextConditionedUNet, dict]:
    """(EMA text-to-image U-Net, info) for ``profile``, trained by the course's loop (cached),
    starting from the chapter-05 reference with the shipped encoder pair's text encoder."""
    cfg, n_train = text_config(profile), TEXT_RECIPES[profile]["n_train"]

    def make():
        pair, _ = encoder_pair("reference")
        start, _ = load_mnist_model("cpu", "reference", progress=progress)
        return make_text_unet(pair, start.cpu())

    net, info = load_or_train("text-unet", make, cfg, lambda: _training_pairs(n_train, 1),
                              {**_data_spec(n_train, 1), **_start_spec()}, device=pick_device(),
                              progress=progress)
    return net, {**info, "train_config": cfg, "source": "student",
                 "settings": {"profile": profile, "steps": cfg.steps, "n_train": n_train}}


def text_unet(model: str = "reference", profile: str = "cpu", progress: bool = True
              ) -> tuple[TextConditionedUNet, dict]:
    """(text-to-image U-Net in eval mode, info): the shipped one or one trained now; its
    training recipe (the samplers need it) in ``info["train_config"]``."""
    net, info = _shipped_or_trained(TEXT_UNET, model, profile, progress, train_text_unet, make_text_unet,
                                    text_config, TEXT_RECIPES, lambda n: {**_data_spec(n, 1), **_start_spec()})
    return net.to(pick_device()).eval().requires_grad_(False), info


def train_reference(name: str, progress: bool = True):
    """What ``python -m diffusion_course.recipes.references mnist-clip`` (or ``mnist-text``) trains."""
    profile = REFERENCE_RECIPES[name]["profile"]
    return train_pair(profile, progress) if name == CLIP else train_text_unet(profile, progress)


# ---------------------------------------------------------------------------------------
# The pipeline, and what it is scored on
# ---------------------------------------------------------------------------------------
def text_to_image(prompts: list[str], model: TextConditionedUNet, tcfg: TrainConfig, guidance: float,
                  seed: int = 0, steps: int = EVAL_STEPS, precision: str | None = None) -> torch.Tensor:
    """Prompts -> digits [B, 1, 28, 28] in [-1, 1], the whole way: the tokeniser's ids, the
    frozen text encoder's token vectors (inside ``model``), DPM-Solver++(2M) from noise with
    the U-Net cross-attending to them and classifier-free guidance ``guidance`` against the
    empty caption; pixels come out directly (the model works in pixel space, so there is no
    decoder). ``precision``: the forward pass's ("fp32", "bf16"; default the training's)."""
    ids = TOKENISER.encode(prompts)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), autocast(precision or tcfg.precision, device):
        x = sample(model, (len(ids), 1, 28, 28), tcfg.noise_schedule(), steps=steps, eta=0.0, kind=tcfg.kind,
                   generator=g, device=device, labels=ids.to(device), guidance=guidance, order=2).x0
    return x.float().clamp(-1, 1)


def prompts_for(labels: torch.Tensor, levels: dict[str, torch.Tensor], seed: int = 0) -> list[str]:
    """A prompt per (digit, levels) in varied words (the test captions' way of writing)."""
    return captions_for(labels, levels, torch.Generator().manual_seed(seed), training=False)


def attribute_report(samples: torch.Tensor, labels: torch.Tensor, asked: dict[str, torch.Tensor]) -> dict:
    """Per attribute, the fraction of samples that asked for it (level 0 or 2) whose measured
    value lies on the asked side of its class's median (``AttributeScale.matches``)."""
    matched = attribute_scale().matches(measure(samples), labels, asked)
    return {a: {"matched": (matched[a].sum() / (asked[a] != 1).sum().clamp(min=1)).item(),
                "asked": int((asked[a] != 1).sum())} for a in ATTRIBUTES}


def evaluation_requests(per_class: int, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What the scored samples ask for: ``per_class`` requests per digit, each with a
    thickness and a slant level drawn among the combinations training captions name
    (``hold_out`` excluded): (labels [10 per_class], levels)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    levels = {a: torch.randint(0, 3, (len(labels),), generator=g) for a in ATTRIBUTES}
    held = hold_out(labels, levels)
    levels["slant"][held] = 1          # a held-out pair asked for here: ask for its thickness alone
    return labels, levels


def held_out_requests(per_class: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``per_class`` requests per digit of its class's held-out (thickness, slant) combination."""
    labels = torch.arange(10).repeat_interleave(per_class)
    return labels, held_out_levels(labels)


def score_samples(judge, samples: torch.Tensor, labels: torch.Tensor, asked: dict[str, torch.Tensor],
                  frechet: bool = True) -> dict:
    """Judge accuracy for the asked digit, the attribute matches and (with ``frechet``) the
    FD / floor of the whole set."""
    out = {"accuracy": (judge.labels(samples) == labels).double().mean().item(),
           "attributes": attribute_report(samples, labels, asked)}
    if frechet:
        out["frechet_ratio"] = judge.score(samples)["frechet_ratio"]
    return out


def guidance_row(judge, net: TextConditionedUNet, tcfg: TrainConfig, base: nn.Module, base_tcfg: TrainConfig,
                 labels: torch.Tensor, levels: dict[str, torch.Tensor], prompts: list[str], w: float, seed: int,
                 steps: int = EVAL_STEPS) -> dict:
    """One guidance weight w of the sweep: the text model's digits for ``prompts`` scored
    (``score_samples``), and chapter 09's label model's digits of the same ``labels`` at the
    same w, sampler and steps (judge accuracy and FD / floor): the yardstick."""
    x = text_to_image(prompts, net, tcfg, w, seed, steps)
    x_label = control.draw(base, base_tcfg, len(labels), seed, labels, guidance=w, steps=steps)
    return {"text": score_samples(judge, x, labels, levels),
            "label": {"accuracy": (judge.labels(x_label) == labels).double().mean().item(),
                      "frechet_ratio": judge.score(x_label)["frechet_ratio"]}}


# ---------------------------------------------------------------------------------------
# What it costs
# ---------------------------------------------------------------------------------------
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def weight_mib(model: nn.Module, dtype: torch.dtype) -> float:
    """The memory of ``model``'s weights stored in ``dtype``, MiB (numbers x bytes each)."""
    return sum(p.numel() for p in model.state_dict().values()) * torch.empty(0, dtype=dtype).element_size() / 2**20


def pipeline_memory(model: TextConditionedUNet, tcfg: TrainConfig, n: int = 64, steps: int = EVAL_STEPS,
                    guidance: float = 3.0) -> dict:
    """Per precision of the forward pass ("fp32", "bf16"): the peak of torch's allocations
    while the pipeline draws ``n`` digits (``evaluation.compute.peak_memory``: activations,
    and the half-precision copies of the weights autocast makes), and the weights' own memory
    in that precision."""
    prompts, device = ["a thick seven leaning right"] * n, next(model.parameters()).device
    out = {}
    for name in ("fp32", "bf16"):
        measured = peak_memory(lambda: text_to_image(prompts, model, tcfg, guidance, 0, steps, name), device)
        out[name] = {"peak_mib": measured["peak_mib"], "weights_mib": weight_mib(model, PRECISIONS[name]),
                     "method": measured["method"]}
    out["fp16"] = {"weights_mib": weight_mib(model, torch.float16)}
    return out


def pipeline_cost(net: TextConditionedUNet, tcfg: TrainConfig, base: nn.Module, base_tcfg: TrainConfig,
                  steps: int = EVAL_STEPS, n: int = 100, seed: int = 0) -> dict:
    """Median wall time per digit (3 runs of ``n`` digits, w = 3, the same sampler and steps) of
    the text pipeline and of chapter 09's label model, and their parameter counts."""
    prompts, labels = prompts_for(*evaluation_requests(n // 10, seed)), control.class_labels(n // 10)
    text = median_seconds(lambda: text_to_image(prompts, net, tcfg, 3.0, seed, steps), repeats=3)
    label = median_seconds(lambda: control.draw(base, base_tcfg, len(labels), seed, labels, guidance=3.0,
                                                steps=steps), repeats=3)
    return {"batch": n, "steps": steps, "text_ms_per_digit": 1000 * text / n,
            "label_ms_per_digit": 1000 * label / len(labels), "text_over_label": text / label,
            "text_parameters": sum(p.numel() for p in net.parameters()),
            "label_parameters": sum(p.numel() for p in base.parameters())}
