"""What a generator costs, measured rather than guessed (chapter 13).

- ``count_flops``: floating-point operations of one call, counted by torch's own
  ``FlopCounterMode`` (a multiply-add is 2 FLOPs); ``conv2d_flops`` is the hand formula it is
  checked against.
- ``peak_memory``: the peak memory of running a function, with the method named: CUDA's
  ``max_memory_allocated`` on a GPU; on a CPU the peak of torch's own allocations during the
  call, from torch.profiler's memory events (the process's resident size cannot show it:
  freed memory is reused without growing it). ``resident_peak_mib``: the process's peak.
- ``median_seconds``: wall time of a function, median of repeats, GPU work synchronised.
- ``pareto_front``: the configurations no other one beats on both cost and quality.
- ``report_card``: what a reproducible quality number must state, as one dict.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

from ..training.device import machine_info


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` as torch counts them (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def conv2d_flops(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, batch: int = 1,
                 groups: int = 1) -> int:
    """2 x (multiply-adds) of a 2-D convolution: every output value is a dot product of
    ``c_in/groups * kernel^2`` terms (the bias add is not counted, as torch does not)."""
    return 2 * batch * c_out * h_out * w_out * (c_in // groups) * kernel * kernel


def _cpu_allocation_peak(fn: Callable):
    """(fn's result, the peak bytes of torch's CPU allocations while it ran): torch.profiler
    records every allocation and free (``profile_memory=True``); their running sum, in time
    order, is the memory torch held for the call at each moment."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto (the profiler's backend) logs every start and stop, and on a CPU-only machine a
    # failed GPU count, straight to stderr, i.e. into notebook outputs; level 6 silences it.
    # Read when the profiler first starts, so it must be set before then.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return result, peak


def peak_memory(fn: Callable, device) -> dict:
    """Run ``fn()`` once and return its result with the peak memory it used, and how measured.

    On a GPU: CUDA's ``max_memory_allocated`` above what was allocated before the call. On a
    CPU: the peak of torch's own allocations during the call, from torch.profiler. (The
    process's resident set size cannot show a call's peak: memory that earlier calls freed is
    reused without the resident size growing, so a second call of the same size reads 0.)
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return {"result": result, "peak_mib": peak / 2**20,
                "method": "torch.cuda.max_memory_allocated above the allocation before the call"}
    result, peak = _cpu_allocation_peak(fn)
    return {"result": result, "peak_mib": peak / 2**20,
            "method": "peak of torch's CPU allocations during the call (torch.profiler, "
                      "profile_memory=True: running sum of allocations and frees in time order)"}


def resident_peak_mib() -> float | None:
    """This process's resident set size at its peak so far (Linux: ru_maxrss in KiB), or None."""
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def median_seconds(fn: Callable, repeats: int = 3, device=None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (GPU work finished before each clock)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device is not None and \
        torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pareto_front(costs, qualities) -> list[int]:
    """Indices of the points not dominated by another: none is at most as costly and at most
    as bad (lower quality numbers are better, like a Frechet distance) and strictly better in
    one. Returned in order of cost."""
    points = list(zip(costs, qualities))
    front = [i for i, (c, q) in enumerate(points)
             if not any(c2 <= c and q2 <= q and (c2 < c or q2 < q) for c2, q2 in points)]
    return sorted(front, key=lambda i: points[i])


def library_versions() -> dict:
    import numpy

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__}
    for name in ("torchvision", "deepinv"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


REPORT_FIELDS = ("seed", "schedule", "T", "sampler", "steps", "n_samples", "reference_set",
                 "judge", "hardware", "precision", "versions")


def report_card(*, seed, schedule: str, T: int, sampler: str, steps: int, n_samples: int,
                reference_set: str, judge: dict, precision: str, device) -> dict:
    """Everything a reader needs to reproduce (or distrust) a quality number. Each field is
    required: a study that cannot fill one in has not controlled it."""
    card = {"seed": seed, "schedule": schedule, "T": T, "sampler": sampler, "steps": steps,
            "n_samples": n_samples, "reference_set": reference_set, "judge": judge,
            "hardware": {**machine_info(device), "platform": platform.platform()},
            "precision": precision, "versions": library_versions()}
    missing = [k for k in REPORT_FIELDS if card[k] in (None, "")]
    if missing:
        raise ValueError(f"a report card needs every field; missing: {', '.join(missing)}")
    return card
