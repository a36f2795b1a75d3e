"""Few-step samplers from the reference MNIST model: progressive distillation and consistency
distillation (``diffusion.distillation``), each trained by the course's training loop with the
reference model (chapter 05's, ``recipes.mnist_ddpm``) as teacher, and the one place their
students come from.

    python -m diffusion_course.recipes.references mnist-pd-1   # trains the chain 32 -> 1 steps; writes the 1-step student
    python -m diffusion_course.recipes.references mnist-pd-8   # (then -4, -2: the chain is cached) the 8-, 4-, 2-step students
    python -m diffusion_course.recipes.references mnist-cd     # the consistency model

``distilled_model(name, model="reference")`` loads a shipped student offline;
``model="student"`` trains it now for a profile (cached), the ``ci`` profile in seconds.
Progressive distillation runs as a chain of rounds, 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1 steps,
each round's student starting from, and taught by, the previous round's EMA weights.
"""
from __future__ import annotations

import copy

import torch

from ..data.mnist import data_spec, training_images
from ..diffusion.distillation import consistency_loss, consistency_sample, progressive_loss, sampling_times
from ..diffusion.sampling import logsnr_timesteps, sample
from ..diffusion.schedules import NoiseSchedule
from ..training.cache import load_or_train
from ..training.device import autocast, pick_device
from ..training.loop import TrainConfig
from ..training.references import load_reference
from .mnist_ddpm import load_mnist_model
from .sampler_sweep import SAMPLERS, generate

TEACHER_STEPS = 64           # the reference model's DDIM steps that round one halves
PROGRESSIVE_STUDENTS = (32, 16, 8, 4, 2, 1)
CONSISTENCY_GRID = 18        # steps of the consistency-distillation grid (even in log-SNR)
TARGET_DECAY = 0.95          # the consistency target network's EMA decay (Song et al. 2023)

# Optimiser steps of each progressive round (by the student's steps) and of consistency
# distillation, per profile; batch 128. On the CPU, 600 steps bring the 32-, 16- and 8-step
# students level with their teachers; the 4-, 2- and 1-step students' losses are still falling
# after 600 (the ``gpu`` recipe trains every round longer).
RECIPES = {
    "ci": {"round_steps": dict.fromkeys((32, 16, 8, 4, 2, 1), 4), "consistency_steps": 6, "n_train": 2_000},
    "cpu": {"round_steps": dict.fromkeys((32, 16, 8, 4, 2, 1), 600),
            "consistency_steps": 3_000, "n_train": 60_000},
    "gpu": {"round_steps": dict.fromkeys((32, 16, 8, 4, 2, 1), 4000), "consistency_steps": 20_000,
            "n_train": 60_000},
}
SHIPPED = {"mnist-pd-8": ("progressive", 8), "mnist-pd-4": ("progressive", 4), "mnist-pd-2": ("progressive", 2),
           "mnist-pd-1": ("progressive", 1), "mnist-cd": ("consistency", None)}
REFERENCE_RECIPES = {name: {"profile": "cpu"} for name in SHIPPED}


def distill_config(steps: int) -> TrainConfig:
    """The training settings of one distillation run: the reference model's recipe (linear
    schedule, T = 1000, v-prediction, bf16) with a smaller learning rate, a short warm-up and a
    faster EMA, since the student starts from a trained network."""
    return TrainConfig(steps=steps, batch_size=128, lr=2e-4, warmup=20, lr_decay="cosine",
                       ema_decay=0.995, kind="v", schedule="linear", T=1000, precision="bf16", seed=0)


def consistency_grid(T: int = 1000, steps: int = CONSISTENCY_GRID) -> list[int]:
    """The ascending grid 0 = t_0 < ... < t_N = T of consistency distillation: even in log-SNR,
    where the ODE's steps are equally hard (``sampling.logsnr_timesteps``)."""
    return [0] + logsnr_timesteps(NoiseSchedule.make("linear", T), steps)[::-1]


def _student_of(teacher: torch.nn.Module):
    """A trainable copy of the teacher: every student starts from its teacher's weights."""
    return lambda: copy.deepcopy(teacher).float().train().requires_grad_(True)


def progressive_chain(profile: str, down_to: int = 1, progress: bool = True) -> dict[int, tuple]:
    """{steps: (EMA student, info)} for every round from 32 steps down to ``down_to``, trained
    now if not cached (each round is a cache entry whose key holds its whole teacher chain)."""
    recipe = RECIPES[profile]
    teacher, _ = load_mnist_model("cpu", "reference", progress=progress)
    spec: dict = {"teacher": "reference mnist-ddpm", "teacher_steps": TEACHER_STEPS}
    out = {}
    for steps in PROGRESSIVE_STUDENTS:
        if steps < down_to:
            break
        cfg = distill_config(recipe["round_steps"][steps])
        schedule = cfg.noise_schedule()
        spec = {"method": "progressive", "student_steps": steps, "teacher": spec}
        student, info = load_or_train(
            f"distil-pd-{steps}", _student_of(teacher), cfg,
            lambda: training_images(recipe["n_train"]), data_spec(recipe["n_train"]),
            device=pick_device(), progress=progress,
            loss_fn=progressive_loss(teacher.eval().requires_grad_(False), steps, schedule, cfg.kind),
            loss_spec=spec)
        out[steps] = (student, {**info, "train_config": cfg, "loss_spec": spec, "source": "student",
                                "settings": {"profile": profile, "round_steps": cfg.steps, "n_train": recipe["n_train"]}})
        teacher = student
    return out


def consistency_student(profile: str, progress: bool = True,
                        max_seconds: float | None = None) -> tuple[torch.nn.Module, dict]:
    """(EMA consistency model, info), distilled from the reference model, trained if not cached
    (``max_seconds`` stops early; the next call resumes)."""
    recipe = RECIPES[profile]
    teacher, _ = load_mnist_model("cpu", "reference", progress=progress)
    cfg = distill_config(recipe["consistency_steps"])
    grid = consistency_grid(cfg.T)
    spec = {"method": "consistency", "teacher": "reference mnist-ddpm", "grid": grid,
            "teacher_step": "DDIM", "target": f"EMA of the student, decay {TARGET_DECAY}"}
    student, info = load_or_train(
        "distil-cd", _student_of(teacher), cfg,
        lambda: training_images(recipe["n_train"]), data_spec(recipe["n_train"]),
        device=pick_device(), progress=progress, max_seconds=max_seconds,
        loss_fn=consistency_loss(teacher.eval().requires_grad_(False), grid, cfg.noise_schedule(), cfg.kind,
                                 TARGET_DECAY),
        loss_spec=spec)
    return student, {**info, "train_config": cfg, "loss_spec": spec, "source": "student",
                     "settings": {"profile": profile, "consistency_steps": cfg.steps, "n_train": recipe["n_train"]}}


def train_reference(name: str, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """(EMA student, info) of a shipped recipe: what ``recipes.references NAME`` writes."""
    method, steps = SHIPPED[name]
    profile = REFERENCE_RECIPES[name]["profile"]
    if method == "consistency":
        return consistency_student(profile, progress)
    return progressive_chain(profile, steps, progress)[steps]


def distilled_model(name: str, model: str = "reference", profile: str = "cpu",
                    progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """(student in eval mode, info): ``mnist-pd-N`` (an N-step progressive student, N in
    32..1) or ``mnist-cd`` (the consistency model). ``model="reference"``: the shipped file
    (for the shipped names); ``"student"``: trained now for ``profile`` (cached)."""
    if model not in ("reference", "student"):
        raise ValueError(f"model must be 'reference' or 'student', got {model!r}")
    allowed = sorted(SHIPPED) if model == "reference" else ["mnist-cd"] + [f"mnist-pd-{n}" for n in PROGRESSIVE_STUDENTS]
    if name not in allowed:
        raise ValueError(f"unknown distilled model {name!r} for model={model!r}; allowed: {', '.join(allowed)}")
    if model == "student":
        if name == "mnist-cd":
            net, info = consistency_student(profile, progress)
        else:
            steps = int(name.rsplit("-", 1)[1])
            net, info = progressive_chain(profile, steps, progress)[steps]
        return net.eval().requires_grad_(False), info
    teacher, _ = load_mnist_model("cpu", "reference", progress=progress)
    recipe = RECIPES[REFERENCE_RECIPES[name]["profile"]]
    method, steps = SHIPPED[name]
    cfg = distill_config(recipe["consistency_steps"] if method == "consistency" else recipe["round_steps"][steps])
    net, info = load_reference(name, copy.deepcopy(teacher).float(), cfg, data_spec(recipe["n_train"]))
    return net.to(pick_device()).eval().requires_grad_(False), {**info, "train_config": cfg, "source": "reference"}


# ---------------------------------------------------------------------------------------
# Sampling at a budget of network calls
# ---------------------------------------------------------------------------------------
# The multistep consistency sampler's steps per budget: after x0 = f(x_T, T), re-noise to these
# steps (chosen among a few candidates on 500 digits of seed 0 with the shipped consistency model).
CONSISTENCY_TIMES = {1: [1000], 2: [1000, 300], 4: [1000, 500, 250, 100], 8: [1000, 700, 450, 250, 150, 80, 40, 15]}
TEACHER_METHODS = ("ddim", "dpm2m", "dpm2m-uniform", "dpm2m-karras", "heun", "ddpm", "dpm2m-sde")
METHODS = {**{m: SAMPLERS[m] for m in TEACHER_METHODS},
           "pd": "progressive distillation's student for that many steps (DDIM on its own grid)",
           "cd": "the consistency model, multistep consistency sampler (CONSISTENCY_TIMES)"}


def supports(method: str, calls: int, students: dict | None = None) -> bool:
    """Whether ``method`` can spend exactly ``calls`` network calls (Heun: an odd number; a
    distilled student: the budgets it was trained or tuned for)."""
    students = students or {}
    if method == "heun":
        return calls % 2 == 1
    if method == "pd":
        return calls in students.get("pd", {})
    if method == "cd":
        return "cd" in students and calls in CONSISTENCY_TIMES
    return method in METHODS


def generate_at(method: str, calls: int, x_T: torch.Tensor, teacher, tcfg, students: dict | None = None,
                generator: torch.Generator | None = None, device="cpu", batch: int = 250) -> torch.Tensor:
    """Digits from ``x_T`` by ``method`` with ``calls`` network calls per digit: the teacher's
    samplers (``sampler_sweep.generate``; Heun's n steps cost 2n - 1 calls), or a distilled
    student from ``students`` = {"pd": {steps: model}, "cd": model}."""
    if not supports(method, calls, students):
        raise ValueError(f"{method!r} cannot spend {calls} network calls; allowed: {', '.join(METHODS)} "
                         f"(heun: odd calls; pd: {sorted((students or {}).get('pd', {}))}; cd: {sorted(CONSISTENCY_TIMES)})")
    schedule, out = tcfg.noise_schedule(), []
    for chunk in x_T.split(batch):
        with autocast(tcfg.precision, device):
            if method == "pd":
                x = sample(students["pd"][calls], chunk.shape, schedule, eta=0.0, kind=tcfg.kind, x_T=chunk,
                           times=sampling_times(schedule.T, calls), device=device).x0
            elif method == "cd":
                x = consistency_sample(students["cd"], tuple(chunk.shape), schedule, CONSISTENCY_TIMES[calls],
                                       tcfg.kind, generator=generator, x_T=chunk, device=device)
            else:
                steps = (calls + 1) // 2 if method == "heun" else calls
                x = generate(teacher, tcfg, chunk, steps, method, generator=generator, device=device)
        out.append(x.float().cpu())
    return torch.cat(out)
