"""Reference models that ship with the course: trained longer by the course's own code, stored
as package data (half-precision EMA weights and the recipe that made them), pinned by sha256,
loaded offline with ``torch.load(..., weights_only=True)``.

This module is the store: where the files are, their pins, writing and checking them. The
recipes that train them, and the command that writes a file (``python -m
diffusion_course.recipes.references NAME``), are in ``recipes.references``.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import torch

from .checkpoints import save_atomically
from .device import machine_info
from .loop import TrainConfig

FORMAT = "diffusion-course-reference-v1"
COMMAND = "python -m diffusion_course.recipes.references {name}"   # what trains and writes one
ASSETS = "assets"  # folder inside the package (diffusion_course/assets)
# The shipped files, pinned: a file that does not match is refused.
SHA256 = {
    "mnist-ddpm": "3833644f32367ee7cc2ab8be9fcffba75625495a5b3cf7295cc0dbeeac2e5311",
    "mnist-cond": "2cf0f4b9be9a40400e5967a340506455f81c8874c3da0843c42aa5dedb73a5bc",
    "fsdd-logmag": "ee3f94108594f2dc21d49b668d94c761e6678911f755dc21657c684c739cc786",
    "mnist-pd-8": "8fd3a6c7ccd3c5e1fdd02973779fa0c969d91234cb800bbe72f5f3d556438812",
    "mnist-pd-4": "ee7e760aa38d7ae1d89692d4eb969825bbc920acd73508afacf5b0e228a8dab5",
    "mnist-pd-2": "66a9786b4ce505b8120b1ac4c8c4a621fa333366ed88bd8b9fdf4d5c1de376bf",
    "mnist-pd-1": "c181d905b69fcb2c3528bec699024dbf7492d5d323bcfe7500241cef20632ef1",
    "mnist-cd": "7cc84aafb27a8e53026380bc41f1c4327aac450bbe30770c4bc6d7c1d59ce377",
    "mnist-controlnet": "82e94a35fe511fb05c30b3fb5485fe669e4d1f8264476e5aeef0b3a30da86ba3",
    "mnist-clip": "ee5a779b4d8a6977823ac7c9ecaa994208fe659506c3597b449d559025e825e6",
    "mnist-text": "0d42ad1c4838cf39818064dbfc3fec9667b13280502cd2486ebe7d0f12c5679a",
}


class ReferenceError(RuntimeError):
    """A reference file is missing, altered, or not what its recipe says."""


def reference_path(name: str) -> Path:
    """Where the file of the shipped reference ``name`` lives in the installed package."""
    if name not in SHA256:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(sorted(SHA256))}")
    return asset_path(name)


def asset_path(name: str) -> Path:
    """Where a reference file called ``name`` goes in the package (pinned or not yet)."""
    return Path(str(resources.files("diffusion_course") / ASSETS / f"{name}.pt"))


def plain_config(model: torch.nn.Module) -> dict:
    """A model's ``config`` as stored in a reference file (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()}


def sha256sum(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_reference(name: str, ema: torch.nn.Module, tcfg: TrainConfig, info: dict, settings: dict,
                     command: str, path: Path | None = None) -> Path:
    """Write the EMA weights (float16) with the recipe, data and training record of ``info``
    (a ``load_or_train`` result) to the package's assets; returns the path."""
    losses = torch.tensor(info["losses"], dtype=torch.float32)
    every = max(1, len(losses) // 500)  # the loss curve, averaged over at most 500 points
    blob = {
        "format": FORMAT, "name": name, "command": command,
        "model_config": plain_config(ema),
        "train_config": asdict(tcfg), "settings": settings, "data": info["data"],
        "train_steps": info["steps"], "train_seconds": float(info["seconds"]),
        "loss_every": every, "loss_curve": losses[: len(losses) // every * every].view(-1, every).mean(1),
        "machine": {k: str(v) for k, v in machine_info("cpu").items()}, "trained_on": time.strftime("%Y-%m-%d"),
        "weights": {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
                    for k, v in ema.state_dict().items()},
    }
    path = Path(path) if path is not None else asset_path(name)
    save_atomically(blob, path)
    return path


def read_reference(name: str, path: Path | None = None) -> dict:
    """The stored blob of reference ``name``, after checking its sha256 against ``SHA256``."""
    path = Path(path) if path is not None else reference_path(name)
    if not path.exists():
        raise ReferenceError(f"the reference model file {path} is missing from the installed "
                             f"package; reinstall the course, or use MODEL = 'student'")
    want, got = SHA256.get(name), sha256sum(path)
    if want is None or got != want:
        raise ReferenceError(f"{path} has sha256 {got}, but the course pins {want}: the file was "
                             f"altered or replaced. Reinstall the course, or retrain it with "
                             f"`{COMMAND.format(name=name)}`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT or blob.get("name") != name:
        raise ReferenceError(f"{path} is not the reference file of {name}")
    return blob


def load_reference(name: str, model: torch.nn.Module, tcfg: TrainConfig, data: dict,
                   path: Path | None = None) -> tuple[torch.nn.Module, dict]:
    """``model`` (built from the recipe) with the reference weights, in float32, and an info
    dict (training steps, seconds, loss curve, command). Refuses a file whose architecture,
    training recipe or data differ from the ones given."""
    blob = read_reference(name, path)
    for what, stored, expected in (("architecture", blob["model_config"], plain_config(model)),
                                   ("training recipe", blob["train_config"], asdict(tcfg)),
                                   ("training data", blob["data"], data)):
        if stored != expected:
            diff = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
            raise ReferenceError(f"the reference {name} was made with another {what} than the "
                                 f"course's recipe (stored, recipe): {diff}; retrain it with "
                                 f"`{COMMAND.format(name=name)}`")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in blob["weights"].items()})
    info = {k: blob[k] for k in ("train_steps", "train_seconds", "machine", "trained_on",
                                 "loss_every", "data", "settings")}
    # The command that trains it today; the file records the one it was made with (the same
    # recipe, under the module's earlier name), kept as ``recorded_command``.
    info.update(command=COMMAND.format(name=name), recorded_command=blob["command"])
    info.update(path=str(path or reference_path(name)), trained_now=False, complete=True,
                steps=blob["train_steps"], seconds=blob["train_seconds"],
                loss_curve=blob["loss_curve"].tolist())
    return model.eval(), info

