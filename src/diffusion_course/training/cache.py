"""The checkpoint cache that chapters share: a trained artefact is computed once, stored under
``<cache>/<name>-<hash>.pt`` (the hash covers everything that determines it) and loaded by every
later chapter or benchmark that asks for the same thing.

``cached(path, load, compute)`` is the one way anything enters the cache: lock the entry, load
it if it is there, else compute it and save it atomically. ``load_or_train`` is that for the
course's diffusion models (resumable training, EMA weights); judges, autoencoders, GANs and
measurements use ``cached`` directly. ``seeded`` builds a network under its settings' seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable, TypeVar

import torch

from ..data.paths import CACHE_ENV, cache_dir
from .checkpoints import checked, read_file, save_atomically
from .distributed import barrier, from_main, is_main
from .loop import TrainConfig, checkpoint_blob, save_checkpoint, train

T = TypeVar("T")


def cache_key(*parts: dict) -> str:
    """A short hash of everything that determines a trained model."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextmanager
def cache_lock(path: Path):
    """Only one process at a time checks, computes and writes the cache entry ``path``: another
    one that needs it waits here, then finds the finished file and loads it, instead of
    training a second copy (``python -m diffusion_course.course.runner --jobs N``). A
    ``filelock.FileLock`` on a hidden ``.<name>.lock`` beside the entry (portable: Linux, macOS
    and Windows); a cache folder that cannot be written to is simply not locked."""
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path.parent / f".{path.name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for another process that is training {path.name} ...", flush=True)
            lock.acquire()
    except OSError:          # a read-only cache
        yield
        return
    try:
        yield
    finally:
        lock.release()


@contextmanager
def temporary_cache(enabled: bool = True):
    """With ``enabled``, point ``$COURSE_CACHE`` at a new temporary folder for the duration (a
    benchmark's fresh run that trains everything anew), then delete it and restore the setting."""
    if not enabled:
        yield None
        return
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = folder = tempfile.mkdtemp(prefix="course-cache-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous


def seeded(make: Callable[[], T], seed: int) -> T:
    """``make()`` run with torch's global random stream seeded by ``seed``, and that stream left
    as it was afterwards: a network's initial weights (and the dropout of a training run made
    inside ``make``) come from its settings' seed, not from the random state a new process
    happens to start with (torch seeds it anew in every process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def cached(path: Path, load: Callable[[object], T], compute: Callable[[], tuple[T, object]]
           ) -> tuple[T, dict]:
    """(result, {"path", "trained_now", "seconds"}): ``load(contents)`` of the cache file
    ``path`` if it exists, else ``compute()``, which returns the result and what to store
    (written atomically; ``None`` stores nothing, e.g. a training run cut short that will
    resume). "seconds" is the time ``compute`` took (0 when loaded). The entry is locked
    throughout (``cache_lock``); an unreadable file is an error that names it. When several
    processes train together (``distributed``), they all follow rank 0: it holds the lock,
    decides whether the file is there, and alone writes it."""
    with cache_lock(path) if is_main() else nullcontext():
        if from_main(path.exists()):
            return load(read_file(path)), {"path": str(path), "trained_now": False, "seconds": 0.0}
        start = time.perf_counter()
        result, contents = compute()
        if contents is not None and is_main():
            save_atomically(contents, path)
        barrier()                    # nobody reads the entry before rank 0 has written it
        return result, {"path": str(path), "trained_now": True, "seconds": time.perf_counter() - start}


def load_or_train(name: str, make_model: Callable[[], torch.nn.Module], cfg: TrainConfig,
                  data: Callable[[], tuple[torch.Tensor, torch.Tensor | None]], data_spec: dict,
                  device: torch.device | str = "cpu", progress: bool = True,
                  max_seconds: float | None = None,
                  keep_ema_at: tuple[int, ...] = (), noise: Callable | None = None,
                  noise_spec: dict | None = None, checkpoint_every: int = 500,
                  loss_fn: Callable | None = None, loss_spec: dict | None = None
                  ) -> tuple[torch.nn.Module, dict]:
    """Return (EMA model, info) for these settings: loaded from the cache if it was trained
    before, else trained now (an interrupted run resumes) and cached.

    The cache file is ``<cache>/<name>-<hash>.pt``; the hash covers the architecture,
    ``cfg`` and ``data_spec``, so changing any of them trains a new model. ``info`` holds
    the loss history and, for ``keep_ema_at``, the EMA weights at those steps.
    ``noise`` (a law of the training noise, see ``loop.train``) needs ``noise_spec``, a dict
    that names it and enters the hash (models trained with other noise are other entries);
    ``loss_fn`` (another loss, see ``loop.train``) likewise needs ``loss_spec``.
    The network is built under ``cfg.seed`` (``seeded``), so the same settings give the same
    weights in any process; a run killed after a checkpoint (every ``checkpoint_every`` steps,
    in ``<name>-<hash>.partial.pt``) resumes to the weights an uninterrupted run reaches. Only
    a finished run enters the cache; one cut short by ``max_seconds`` resumes next time.
    """
    if (noise is None) != (noise_spec is None):
        raise ValueError("pass noise and noise_spec together: the spec names the noise in the cache key")
    if (loss_fn is None) != (loss_spec is None):
        raise ValueError("pass loss_fn and loss_spec together: the spec names the loss in the cache key")
    model = seeded(make_model, cfg.seed)
    keep_ema_at = tuple(sorted(keep_ema_at))
    key = cache_key(getattr(model, "config", {}), asdict(cfg), data_spec,
                    *([{"keep_ema_at": keep_ema_at}] if keep_ema_at else []),
                    *([{"noise": noise_spec}] if noise_spec is not None else []),
                    *([{"loss": loss_spec}] if loss_spec is not None else []))
    final = cache_dir() / f"{name}-{key}.pt"
    partial = final.with_suffix(".partial.pt")

    def load(blob) -> tuple[torch.nn.Module, dict]:
        blob = checked(blob, final)
        model.load_state_dict(blob["ema"])
        return model, {"complete": True, "steps": blob["step"], "seconds": blob["seconds"],
                       "losses": blob["losses"].tolist(), "ema_history": blob.get("ema_history", {}),
                       **blob["extra"]}

    def compute():
        images, labels = data()
        state = train(model, images, cfg, labels, checkpoint=partial, progress=progress,
                      max_seconds=max_seconds, device=device, keep_ema_at=keep_ema_at, noise=noise,
                      checkpoint_every=checkpoint_every, loss_fn=loss_fn)
        complete = state.step == cfg.steps
        if not complete:
            save_checkpoint(state, cfg, partial, extra={"data": data_spec})
        info = {"complete": complete, "steps": state.step, "seconds": state.seconds,
                "losses": state.losses, "ema_history": state.ema_history, "data": data_spec}
        return (state.ema, info), checkpoint_blob(state, cfg, extra={"data": data_spec}) if complete else None

    (ema, info), entry = cached(final, load, compute)
    if entry["trained_now"] and info["complete"]:
        partial.unlink(missing_ok=True)      # the finished run is in the cache now
    path = final if info["complete"] else partial
    return ema.to(device).eval(), {**info, "path": str(path), "trained_now": entry["trained_now"]}
