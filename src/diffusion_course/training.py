"""The training loop every chapter shares: AdamW, warm-up, gradient clipping, EMA of the
weights, a tqdm bar with ETA, loss history, checkpoints that resume bit-identically, and
``load_or_train`` so a later chapter reuses the model an earlier one trained.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .objectives import PARAMETERISATIONS, diffusion_loss
from .paths import CACHE_ENV, cache_dir  # noqa: F401  (re-exported: the cache lives in paths.py)
from .schedules import SCHEDULES, NoiseSchedule
from .settings import PRECISIONS, resolve_precision



class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or was made with other settings."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100            # linear warm-up of the learning rate over this many steps
    lr_decay: str = "cosine"     # "cosine" (to 10% at the end) or "constant" after warm-up
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999     # ema <- d * ema + (1 - d) * weights, with d warmed up
    kind: str = "eps"            # what the network predicts: eps, x0 or v
    min_snr_gamma: float | None = None
    schedule: str = "linear"
    T: int = 1000
    label_dropout: float = 0.0   # probability of replacing the label by "no label"
    seed: int = 0
    precision: str = "fp32"      # "bf16": autocast the forward pass to bfloat16 (weights,
                                 # optimiser and loss stay float32); fast on CPUs with AMX

    def __post_init__(self):
        if self.kind not in PARAMETERISATIONS:
            raise ValueError(f"kind must be one of {PARAMETERISATIONS}, got {self.kind!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.lr_decay not in ("cosine", "constant"):
            raise ValueError(f"lr_decay must be 'cosine' or 'constant', got {self.lr_decay!r}")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.label_dropout < 1:
            raise ValueError("ema_decay and label_dropout must lie in [0, 1)")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.make(self.schedule, self.T)


def train_config_from(cfg, **recipe) -> TrainConfig:
    """The one translation from a chapter's resolved knobs (``settings.Settings``) to a
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


def autocast(precision: str, device: torch.device | str):
    """The forward pass in bfloat16 (``precision="bf16"``) or unchanged ("fp32")."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine decay to 10% of it."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "constant":
        return cfg.lr
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def ema_decay_at(step: int, decay: float) -> float:
    """Warm the EMA up: early on, average over about `step` updates instead of 1/(1-decay)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema_p <- decay * ema_p + (1 - decay) * p for every parameter (buffers are copied)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@dataclass
class TrainState:
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    ema_history: dict[int, dict] = field(default_factory=dict)  # step -> EMA weights then


def new_state(model: torch.nn.Module, cfg: TrainConfig) -> TrainState:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return TrainState(model, copy.deepcopy(model).eval().requires_grad_(False), opt,
                      torch.Generator().manual_seed(cfg.seed))


def save_checkpoint(state: TrainState, cfg: TrainConfig, path: Path, extra: dict | None = None) -> None:
    """Everything needed to resume exactly, written atomically (``save_atomically``)."""
    blob = {
        "format": "diffusion-course-v1", "config": asdict(cfg), "step": state.step,
        "model": state.model.state_dict(), "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(), "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(), "losses": torch.tensor(state.losses),
        "seconds": state.seconds, "model_config": getattr(state.model, "config", {}),
        "ema_history": state.ema_history, "extra": extra or {},
    }
    save_atomically(blob, path)


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it to ``path``: an
    interrupted or failed save leaves nothing half-written there (and no temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path: Path) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or unsafe content
        raise CheckpointError(f"cannot read checkpoint {path}: {e.__class__.__name__}: {e}. "
                              f"Delete it to train again.") from None
    if not isinstance(blob, dict) or blob.get("format") != "diffusion-course-v1":
        raise CheckpointError(f"{path} is not a diffusion-course checkpoint; delete it to train again")
    return blob


def load_state(path: Path, state: TrainState, cfg: TrainConfig) -> None:
    """Restore ``state`` from ``path``; refuse a checkpoint made with other settings."""
    blob = read_checkpoint(path)
    if blob["config"] != asdict(cfg):
        diff = {k: (blob["config"].get(k), v) for k, v in asdict(cfg).items() if blob["config"].get(k) != v}
        raise CheckpointError(f"{path} was trained with other settings (saved, wanted): {diff}")
    mine = getattr(state.model, "config", {})
    if blob["model_config"] != mine:
        raise CheckpointError(f"{path} holds another architecture: {blob['model_config']} != {mine}")
    state.model.load_state_dict(blob["model"])
    state.ema.load_state_dict(blob["ema"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.generator.set_state(blob["generator"])
    torch.set_rng_state(blob["torch_rng"])
    state.step, state.losses, state.seconds = blob["step"], blob["losses"].tolist(), blob["seconds"]
    state.ema_history = blob.get("ema_history", {})


def train(model: torch.nn.Module, images: torch.Tensor, cfg: TrainConfig,
          labels: torch.Tensor | None = None, checkpoint: Path | None = None,
          checkpoint_every: int = 500, stop_after: int | None = None,
          max_seconds: float | None = None, progress: bool = True,
          device: torch.device | str = "cpu", keep_ema_at: tuple[int, ...] = (),
          noise: Callable | None = None) -> TrainState:
    """Train ``model`` on ``images`` (in [-1, 1]) with the diffusion loss of ``cfg``.

    With ``checkpoint``, resumes from it if it exists and saves to it every
    ``checkpoint_every`` steps and at the end. ``stop_after`` ends early after that many
    steps in total (to demonstrate resuming); ``max_seconds`` caps this call's wall time.
    ``keep_ema_at`` lists steps after which a copy of the EMA weights is kept in
    ``state.ema_history`` (to show how the model improves during training).
    ``noise(shape, generator)``: the law of the training noise (default Gaussian; see
    ``objectives.diffusion_loss``).
    """
    model.to(device).train()
    state = new_state(model, cfg)
    if checkpoint is not None and Path(checkpoint).exists():
        load_state(Path(checkpoint), state, cfg)
    schedule = cfg.noise_schedule()
    images = images.to(device)
    # Labels matter only to a class-conditional model (one with a num_classes).
    conditional = getattr(model, "num_classes", None) is not None
    labels = labels.to(device) if conditional and labels is not None else None
    n, g = images.shape[0], state.generator
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=state.step, desc="training", disable=not progress,
               dynamic_ncols=True)
    start = call_start = time.perf_counter()  # start: for state.seconds; call_start: for the budget
    while state.step < end:
        if max_seconds is not None and time.perf_counter() - call_start > max_seconds:
            break
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g).to(device)
        x0 = images[idx]
        y = None
        if labels is not None:
            y = labels[idx].clone()
            drop = torch.rand(cfg.batch_size, generator=g).to(device) < cfg.label_dropout
            y[drop] = model.num_classes
        for group in state.optimizer.param_groups:
            group["lr"] = lr_at(state.step, cfg)
        with autocast(cfg.precision, device):
            loss = diffusion_loss(model, x0, schedule, cfg.kind, cfg.min_snr_gamma, y, g, noise)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        ema_update(state.ema, model, ema_decay_at(state.step, cfg.ema_decay))
        state.step += 1
        state.losses.append(loss.item())
        if state.step in keep_ema_at:
            state.ema_history[state.step] = {k: v.detach().cpu().clone()
                                             for k, v in state.ema.state_dict().items()}
        bar.update(1)
        if state.step % 25 == 0:
            bar.set_postfix(loss=f"{sum(state.losses[-25:]) / 25:.4f}")
        if checkpoint is not None and state.step % checkpoint_every == 0:
            state.seconds += time.perf_counter() - start
            start = time.perf_counter()
            save_checkpoint(state, cfg, checkpoint)
    bar.close()
    state.seconds += time.perf_counter() - start
    if checkpoint is not None:
        save_checkpoint(state, cfg, checkpoint)
    model.eval()
    return state


# ---------------------------------------------------------------------------------------
# The checkpoint cache shared by chapters
# ---------------------------------------------------------------------------------------
def cache_key(*parts: dict) -> str:
    """A short hash of everything that determines a trained model."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextmanager
def cache_lock(path: Path):
    """Only one process at a time checks, trains and writes the cache entry ``path``: another
    one that needs it waits here, then finds the finished file and loads it, instead of
    training a second copy (``python -m diffusion_course.runner --jobs N``). An exclusive
    ``flock`` on a hidden ``.<name>.lock`` beside the entry; where there is none (Windows, a
    read-only cache) the entry is simply not locked."""
    try:
        import fcntl
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.parent / f".{path.name}.lock", "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that is training {path.name} ...", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def seeded(make: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``make()`` with torch's global random stream seeded by ``seed``, and that stream left as
    it was afterwards: a network's initial weights come from its settings' seed, not from the
    random state a new process happens to start with (torch seeds it anew in every process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def load_or_train_weights(path: Path, model: torch.nn.Module,
                          train_model: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, dict]:
    """``model`` with the weights cached at ``path``, or else ``train_model()``'s result, whose
    weights are then cached there (saved to a temporary file and renamed, so an interrupted
    save leaves nothing half-written). For small models without a training state to resume,
    such as the evaluation classifiers."""
    with cache_lock(path):
        if path.exists():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval(), {"path": str(path), "trained_now": False}
        start = time.perf_counter()
        model = train_model()
        save_atomically(model.state_dict(), path)
        return model, {"path": str(path), "trained_now": True, "seconds": time.perf_counter() - start}


def load_or_train(name: str, make_model: Callable[[], torch.nn.Module], cfg: TrainConfig,
                  data: Callable[[], tuple[torch.Tensor, torch.Tensor | None]], data_spec: dict,
                  device: torch.device | str = "cpu", progress: bool = True,
                  max_seconds: float | None = None,
                  keep_ema_at: tuple[int, ...] = (), noise: Callable | None = None,
                  noise_spec: dict | None = None, checkpoint_every: int = 500
                  ) -> tuple[torch.nn.Module, dict]:
    """Return (EMA model, info) for these settings: loaded from the cache if it was trained
    before, else trained now (an interrupted run resumes) and cached.

    The cache file is ``<cache>/<name>-<hash>.pt``; the hash covers the architecture,
    ``cfg`` and ``data_spec``, so changing any of them trains a new model. ``info`` holds
    the loss history and, for ``keep_ema_at``, the EMA weights at those steps.
    ``noise`` (a law of the training noise, see ``train``) needs ``noise_spec``, a dict that
    names it and enters the hash (models trained with other noise are other cache entries).
    The network is built under ``cfg.seed`` (``seeded``), so the same settings give the same
    weights in any process; a run killed after a checkpoint (every ``checkpoint_every`` steps)
    resumes to the weights an uninterrupted run reaches.
    """
    if (noise is None) != (noise_spec is None):
        raise ValueError("pass noise and noise_spec together: the spec names the noise in the cache key")
    model = seeded(make_model, cfg.seed)
    keep_ema_at = tuple(sorted(keep_ema_at))
    key = cache_key(getattr(model, "config", {}), asdict(cfg), data_spec,
                    *([{"keep_ema_at": keep_ema_at}] if keep_ema_at else []),
                    *([{"noise": noise_spec}] if noise_spec is not None else []))
    final = cache_dir() / f"{name}-{key}.pt"
    partial = final.with_suffix(".partial.pt")
    with cache_lock(final):
        if final.exists():
            blob = read_checkpoint(final)
            model.load_state_dict(blob["ema"])
            info = {"path": str(final), "trained_now": False, "complete": True, "steps": blob["step"],
                    "seconds": blob["seconds"], "losses": blob["losses"].tolist(),
                    "ema_history": blob.get("ema_history", {}), **blob["extra"]}
            return model.to(device).eval(), info
        images, labels = data()
        state = train(model, images, cfg, labels, checkpoint=partial, progress=progress,
                      max_seconds=max_seconds, device=device, keep_ema_at=keep_ema_at, noise=noise,
                      checkpoint_every=checkpoint_every)
        save_checkpoint(state, cfg, partial, extra={"data": data_spec})
        complete = state.step == cfg.steps
        if complete:  # only a finished run enters the cache; a cut-short one resumes next time
            os.replace(partial, final)
        info = {"path": str(final if complete else partial), "trained_now": True,
                "complete": complete, "steps": state.step, "seconds": state.seconds,
                "losses": state.losses, "ema_history": state.ema_history, "data": data_spec}
        return state.ema.to(device).eval(), info
