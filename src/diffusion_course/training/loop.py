"""The training loop every diffusion model of the course shares: AdamW, warm-up, gradient
clipping, EMA of the weights, a tqdm bar with ETA, loss history, and checkpoints that resume
bit-identically (``cache.load_or_train`` caches the result for later chapters).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..diffusion.objectives import PARAMETERISATIONS, diffusion_loss, draw_noise
from ..diffusion.sampling import null_condition
from ..diffusion.schedules import SCHEDULES, NoiseSchedule
from .checkpoints import FORMAT, CheckpointError, read_checkpoint, save_atomically
from .device import PRECISIONS, autocast
from .distributed import barrier, from_main, is_main, mean, rank_and_world, shard, wrap


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


def checkpoint_blob(state: TrainState, cfg: TrainConfig, extra: dict | None = None) -> dict:
    """Everything needed to resume exactly, as the dict a checkpoint file holds."""
    return {
        "format": FORMAT, "config": asdict(cfg), "step": state.step,
        "model": state.model.state_dict(), "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(), "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(), "losses": torch.tensor(state.losses),
        "seconds": state.seconds, "model_config": getattr(state.model, "config", {}),
        "ema_history": state.ema_history, "extra": extra or {},
    }


def save_checkpoint(state: TrainState, cfg: TrainConfig, path: Path, extra: dict | None = None) -> None:
    """``checkpoint_blob`` written atomically (``checkpoints.save_atomically``), by rank 0 only
    when several processes train together (``distributed``)."""
    if is_main():
        save_atomically(checkpoint_blob(state, cfg, extra), path)


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


def draw_batch(images: torch.Tensor, labels: torch.Tensor | None, cfg: TrainConfig, g: torch.Generator,
               null_label: int | None, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``size`` examples drawn with replacement (indices from ``g``, a CPU generator) and, with
    labels, each label replaced by ``null_label`` with probability ``cfg.label_dropout`` (for
    captions [N, L], the whole row: the empty caption)."""
    idx = torch.randint(0, images.shape[0], (size,), generator=g).to(images.device)
    if labels is None:
        return images[idx], None
    y = labels[idx].clone()
    drop = torch.rand(size, generator=g).to(images.device) < cfg.label_dropout
    y[drop] = null_label
    return images[idx], y


def optimise(net: torch.nn.Module, model: torch.nn.Module, state: TrainState, cfg: TrainConfig, schedule,
             x0: torch.Tensor, y: torch.Tensor | None, t: torch.Tensor, eps: torch.Tensor, device,
             loss_fn: Callable | None = None) -> None:
    """One step: the learning rate of this step, the diffusion loss of this rank's slice through
    ``net`` (``model`` itself, or wrapped in DDP, which averages the gradients over the ranks),
    AdamW, the EMA update, and the loss averaged over the ranks into ``state.losses``.
    ``loss_fn(net, x0, y, t, eps)`` replaces the diffusion loss (distillation's losses)."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(state.step, cfg)
    with autocast(cfg.precision, device):
        if loss_fn is None:
            loss = diffusion_loss(net, x0, schedule, cfg.kind, cfg.min_snr_gamma, y, t=t, eps=eps)
        else:
            loss = loss_fn(net, x0, y, t, eps)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    state.optimizer.step()
    ema_update(state.ema, model, ema_decay_at(state.step, cfg.ema_decay))
    state.step += 1
    state.losses.append(mean(loss).item())


def train(model: torch.nn.Module, images: torch.Tensor, cfg: TrainConfig,
          labels: torch.Tensor | None = None, checkpoint: Path | None = None,
          checkpoint_every: int = 500, stop_after: int | None = None,
          max_seconds: float | None = None, progress: bool = True,
          device: torch.device | str = "cpu", keep_ema_at: tuple[int, ...] = (),
          noise: Callable | None = None, loss_fn: Callable | None = None) -> TrainState:
    """Train ``model`` on ``images`` (in [-1, 1]) with the diffusion loss of ``cfg``.

    With ``checkpoint``, resumes from it if it exists and saves to it every
    ``checkpoint_every`` steps and at the end. ``stop_after`` ends early after that many
    steps in total (to demonstrate resuming); ``max_seconds`` caps this call's wall time.
    ``keep_ema_at`` lists steps after which a copy of the EMA weights is kept in
    ``state.ema_history`` (to show how the model improves during training).
    ``noise(shape, generator)``: the law of the training noise (default Gaussian; see
    ``diffusion.objectives.diffusion_loss``). ``loss_fn(net, x0, y, t, eps)``: another loss
    on the same draws (``diffusion.distillation``'s; default the diffusion loss of ``cfg``).
    """
    model.to(device).train()
    net, world = wrap(model, torch.device(device)), rank_and_world()[1]   # DDP under torchrun
    state = new_state(model, cfg)
    if checkpoint is not None and Path(checkpoint).exists():
        load_state(Path(checkpoint), state, cfg)
    schedule = cfg.noise_schedule()
    images = images.to(device)
    # Labels matter only to a conditional model: a class-conditional one (its num_classes is
    # the null label) or a text one (labels are token ids; its null_condition pads a caption).
    null_label = null_condition(model)
    labels = labels.to(device) if null_label is not None and labels is not None else None
    g = state.generator
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=state.step, desc="training", disable=not progress or not is_main(),
               dynamic_ncols=True)
    start = call_start = time.perf_counter()  # start: for state.seconds; call_start: for the budget
    while state.step < end:
        # rank 0's clock decides for every rank, or one rank would stop while another waits for it
        if max_seconds is not None and from_main(time.perf_counter() - call_start > max_seconds):
            break
        # the global batch of world x B examples, with its steps and noise; this rank's slice of it
        x0, y = draw_batch(images, labels, cfg, g, null_label, cfg.batch_size * world)
        t, eps = draw_noise(x0, schedule, g, noise)
        optimise(net, model, state, cfg, schedule, *shard(x0, y, t, eps), device=device, loss_fn=loss_fn)
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
    barrier()                        # the others wait until rank 0 has written the checkpoint
    model.eval()
    return state
