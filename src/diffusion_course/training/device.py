"""Where and in what precision the course computes: the one place that chooses a device
(cuda, then mps, then cpu; ``$COURSE_DEVICE`` forces one) and resolves ``precision="auto"``."""
from __future__ import annotations

import os
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16")  # of the forward pass; "auto" picks one (resolve_precision)


DEVICE_ENV = "COURSE_DEVICE"


def accelerator_available() -> bool:
    return torch.cuda.is_available() or (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    )


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matrix maths has hardware support: CUDA GPUs from Ampere on (not a
    T4, where torch emulates bfloat16 more slowly than float32), and CPUs with AMX or
    AVX512-BF16 (read from /proc/cpuinfo; elsewhere assume not)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` becomes ``bf16`` where that is fast (see ``bf16_is_fast``), else ``fp32``."""
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"unknown precision {precision!r}; allowed: auto, {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def pick_device(prefer: str | None = None) -> torch.device:
    """The one place where the course chooses a device: cuda, then mps, then cpu.

    ``prefer`` (or ``$COURSE_DEVICE``) forces one, e.g. ``"cpu"`` on a GPU machine.
    """
    want = (prefer or os.environ.get(DEVICE_ENV, "")).strip().lower()
    if want:
        allowed = ("cpu", "cuda", "mps")
        if want.split(":")[0] not in allowed:
            raise ValueError(f"unknown device {want!r}; allowed: {', '.join(allowed)}")
        return torch.device(want)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(precision: str, device: torch.device | str):
    """The forward pass in bfloat16 (``precision="bf16"``) or unchanged ("fp32")."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def machine_info(device) -> dict:
    """What a benchmark ran on: CPU model, cores, torch threads, device, torch version."""
    import os
    import platform
    from pathlib import Path

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                 if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
