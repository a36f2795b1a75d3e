"""Run chapters headlessly with papermill and collect what they show and measure.

    python -m diffusion_course                    # every chapter, profile auto
    python -m diffusion_course 01 02 --profile ci
    python -m diffusion_course 02 -p N_DRAWS 5000 -p SCHEDULE cosine
    python -m diffusion_course 05 06 -p 05:TRAIN_STEPS 3000 -p 06:MODEL student
    python -m diffusion_course --student-edition  # exercises without solutions, build/student/

A parameter is scoped to one chapter (``05:TRAIN_STEPS``); the plain form is allowed when one
chapter runs. Chapter 05's overrides also reach the chapters that use its model (``MODEL =
"student"``): the runner hands every kernel all scoped overrides in ``$COURSE_OVERRIDES``.

For each chapter it writes
    build/executed/<chapter>.ipynb     the executed notebook
    build/figures/<chapter>/*.png      every figure the notebook displayed
    build/metrics/<chapter>.json       the numbers it recorded, the parameters, the wall time
    build/audio/<chapter>/**.wav       every clip it played in a named grid (chapter 11)
and prints a table of status and wall time per chapter. Each chapter first runs into a
scratch folder that is moved into place only on success; a failed chapter leaves
``build/failed/<chapter>.ipynb`` (for debugging) and none of the files above.
"""
from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..data.paths import build_dir, checkout_root
from ..training.device import pick_device
from .editions import write_student_edition
from .report import METRICS_MIME, named_clips
from .settings import OVERRIDES_ENV, PROFILES, parse_value, resolve_profile

REPO_ROOT = checkout_root() or Path.cwd()   # the chapters run from a checkout
NOTEBOOKS = REPO_ROOT / "notebooks"


class ChapterFailed(RuntimeError):
    pass


@functools.cache   # one class, made on first use (jupyter_client is imported only to run chapters)
def _local_kernel_manager():
    """Kernels that talk to the runner over local (IPC) sockets. Over the default TCP transport
    every kernel warns that its traffic is unencrypted, which tells a student nothing; a kernel
    on the same machine does not need TCP at all, so the warning has no cause to print."""
    from jupyter_client.manager import AsyncKernelManager

    class LocalKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._socket_dir = None
            if os.name == "posix":                    # unix sockets in a private folder
                self._socket_dir = tempfile.mkdtemp(prefix="course-kernel-")
                self.transport, self.ip = "ipc", str(Path(self._socket_dir) / "kernel")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:  # what shutdown calls
            await super()._async_cleanup_resources(restart=restart)
            if self._socket_dir and not restart:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

        cleanup_resources = _async_cleanup_resources

    return LocalKernelManager


def list_chapters(notebooks: Path = NOTEBOOKS) -> list[Path]:
    return sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))


def select_chapters(names: list[str], notebooks: Path = NOTEBOOKS) -> list[Path]:
    """``01``, ``1``, ``01_gaussian_noise_and_kl`` or the file name all select chapter 01."""
    chapters = list_chapters(notebooks)
    if not names:
        return chapters
    picked = []
    for name in names:
        stem = Path(name).stem
        hits = [p for p in chapters if p.stem == stem or p.stem.split("_")[0] == stem.zfill(2)]
        if not hits:
            raise SystemExit(f"error: no chapter {name!r}; available: "
                             + ", ".join(p.stem for p in chapters))
        picked += [h for h in hits if h not in picked]
    return picked


def check_parameters(notebook: Path, overrides: dict) -> None:
    """Refuse overrides the notebook's parameters cell does not declare."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    unknown = [k for k in overrides if k not in declared]
    if unknown:
        raise ChapterFailed(
            f"{notebook.stem}: unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(declared)}"
        )


def scope_parameters(pairs: list[tuple[str, str]], chapters: list[Path]) -> dict[str, dict]:
    """``-p`` pairs as {chapter: {NAME: value}}. ``05:TRAIN_STEPS`` names its chapter; a plain
    ``TRAIN_STEPS`` is allowed only when one chapter runs (otherwise it would silently change
    every chapter that happens to have a knob of that name)."""
    selected = {nb.stem.split("_")[0]: nb for nb in chapters}
    scoped: dict[str, dict] = {}
    for name, value in pairs:
        chapter, _, knob = name.rpartition(":")
        if knob == "PROFILE":
            raise ValueError("set the profile with --profile, not -p PROFILE")
        if not chapter:
            if len(chapters) != 1:
                raise ValueError(f"-p {name} is ambiguous with {len(chapters)} chapters: scope it to "
                                 f"one, e.g. -p {next(iter(selected))}:{name} {value}")
            chapter = next(iter(selected))
        chapter = chapter.zfill(2)
        if chapter not in selected:
            raise ValueError(f"-p {name}: chapter {chapter} is not among the chapters run "
                             f"({', '.join(selected)})")
        scoped.setdefault(chapter, {})[knob] = parse_value(value)
    for chapter, overrides in scoped.items():
        check_parameters(selected[chapter], overrides)
    return scoped


def collect_outputs(executed: Path, figures_dir: Path, audio_dir: Path
                    ) -> tuple[dict, list[str], list[str]]:
    """Pull PNG figures, recorded metrics and named clips (into ``audio_dir``, made only when
    there are any) out of an executed notebook: (metrics, figure names, clip names)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    metrics, names, clips = {}, [], []
    figures_dir.mkdir(parents=True, exist_ok=True)
    for index, cell in enumerate(nb.cells):
        for k, out in enumerate(cell.get("outputs", [])):
            data = out.get("data", {})
            if METRICS_MIME in data:
                metrics.update(data[METRICS_MIME])
            if "text/html" in data:
                html = data["text/html"]
                for file, wav in named_clips("".join(html) if isinstance(html, list) else html).items():
                    if file in clips:
                        raise ChapterFailed(f"{executed.stem}: two clips are named {file}")
                    clips.append(file)
                    (audio_dir / file).parent.mkdir(parents=True, exist_ok=True)
                    (audio_dir / file).write_bytes(wav)
            if "image/png" in data:
                meta = out.get("metadata", {}).get("image/png", {})
                name = meta.get("filename") or f"cell{index:03d}_{k}.png"
                if name in names:
                    raise ChapterFailed(f"{executed.stem}: two figures are named {name}")
                (figures_dir / name).write_bytes(base64.b64decode(data["image/png"]))
                names.append(name)
    return metrics, names, sorted(clips)


def run_chapter(notebook: Path, build: Path, profile: str, overrides: dict,
                log_output: bool = False) -> dict:
    """Execute one chapter; on success move its outputs under ``build``, else raise."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_parameters(notebook, overrides)
    chapter = notebook.stem
    params = {"PROFILE": profile, **overrides}
    final = build_paths(build, chapter)
    failed_copy = build / "failed" / f"{chapter}.ipynb"
    build.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{chapter}.", dir=build))
    executed = scratch / f"{chapter}.ipynb"
    start = time.perf_counter()
    try:
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=params, cwd=str(notebook.parent),
                kernel_name="python3", progress_bar=False, log_output=log_output,
                kernel_manager_class=_local_kernel_manager(),
            )
        except PapermillExecutionError as e:
            # Old outputs of this chapter would now be stale: remove them, keep the failure.
            remove_paths(*final.values())
            failed_copy.parent.mkdir(parents=True, exist_ok=True)
            if executed.exists():
                shutil.move(str(executed), failed_copy)
            raise ChapterFailed(
                f"{chapter} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                f"{e.ename}: {e.evalue}\n  executed notebook kept at {failed_copy}"
            ) from None
        return publish_chapter(executed, build, profile, params, time.perf_counter() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_paths(build: Path, chapter: str) -> dict[str, Path]:
    """Where a chapter's executed notebook, figures and metrics go under ``build``."""
    return {"executed": build / "executed" / f"{chapter}.ipynb",
            "figures": build / "figures" / chapter,
            "metrics": build / "metrics" / f"{chapter}.json",
            "audio": build / "audio" / chapter}


def publish_chapter(executed: Path, build: Path, profile: str, params: dict, wall: float) -> dict:
    """Move a complete executed notebook (in a scratch folder inside ``build``) into place,
    with the figures and metrics collected from it; replaces the chapter's old files."""
    chapter, scratch = executed.stem, executed.parent
    final = build_paths(build, chapter)
    metrics, figures, clips = collect_outputs(executed, scratch / "figures", scratch / "audio")
    summary = {"chapter": chapter, "profile": profile, "parameters": params,
               "wall_time_s": round(wall, 2), "figures": figures, "audio": clips, "metrics": metrics}
    (scratch / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    # Everything exists: swap it into place.
    remove_paths(*final.values(), build / "failed" / f"{chapter}.ipynb")
    for path in final.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch / "figures", final["figures"])
    os.replace(scratch / "metrics.json", final["metrics"])
    if clips:
        os.replace(scratch / "audio", final["audio"])
    os.replace(executed, final["executed"])  # last: its presence marks a complete run
    return summary


def remove_paths(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_course",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapters to run (default: all), e.g. 01 02")
    parser.add_argument("--profile", default=os.environ.get("PROFILE", "auto"),
                        help=f"auto (default), {', '.join(PROFILES)}")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a notebook parameter")
    parser.add_argument("--build", type=Path, default=build_dir(), help="output folder")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                        help="the folder of the chapters (default: the checkout's notebooks/)")
    parser.add_argument("--keep-going", action="store_true", help="run later chapters after a failure")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="chapters run at once, one kernel each (default 1): one GPU per job on a "
                             "multi-GPU machine, the CPU cores split between jobs otherwise; a model two "
                             "chapters need is trained once (the other waits for it)")
    parser.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    parser.add_argument("--list", action="store_true", help="list the chapters and exit")
    parser.add_argument("--student-edition", action="store_true",
                        help="write the chapters' student editions (solutions replaced by stubs) "
                             "into BUILD/student/ without running them")
    args = parser.parse_args(argv)

    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.list:
        for p in list_chapters(args.notebooks):
            print(p.stem)
        return 0
    try:
        profile = resolve_profile(args.profile)
    except ValueError as e:
        parser.error(str(e))
    chapters = select_chapters(args.chapters, args.notebooks)
    if args.student_edition:
        for nb in chapters:
            print(write_student_edition(nb, args.build / "student"))
        return 0
    try:
        scoped = scope_parameters(args.parameter, chapters)
    except (ValueError, ChapterFailed) as e:
        parser.error(str(e))
    # Every kernel sees every chapter's overrides: chapter 06 with MODEL "student" then loads
    # the model chapter 05 trained with them (settings.chapter_settings reads this).
    previous = os.environ.get(OVERRIDES_ENV)
    os.environ[OVERRIDES_ENV] = json.dumps(scoped)
    try:
        return _run_all(chapters, args, profile, scoped)
    finally:
        if previous is None:
            os.environ.pop(OVERRIDES_ENV, None)
        else:
            os.environ[OVERRIDES_ENV] = previous


def _run_all(chapters: list[Path], args, profile: str, scoped: dict) -> int:
    os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")  # the kernel of this environment
    os.environ.setdefault("MPLBACKEND", "agg")

    print(f"running {len(chapters)} chapter(s) with profile {profile!r} into {args.build}"
          + (f", {args.jobs} at a time" if args.jobs > 1 else ""))
    jobs = [(nb, args.build, profile, scoped.get(nb.stem.split("_")[0], {}), args.log_output) for nb in chapters]
    rows, failures = [], []
    if args.jobs == 1:
        for job in jobs:
            print(f"  {job[0].stem} ...", flush=True)
            row, error = _run_job(*job)
            rows.append(row)
            if error:
                failures.append(error)
                print(f"error: {error}", file=sys.stderr)
                if not args.keep_going:
                    break
    else:
        rows, failures = _run_parallel(jobs, args.jobs, args.keep_going)
    width = max(len(r["chapter"]) for r in rows)
    print(f"\n{'chapter':<{width}}  {'status':<7}{'wall s':>9}  {'device':<16}")
    for r in rows:
        print(f"{r['chapter']:<{width}}  {r['status']:<7}{r['wall_time_s']:>9.1f}  {r['device']:<16}  {r['extra']}")
    (args.build / "summary.json").write_text(json.dumps(
        [{k: r[k] for k in ("chapter", "status", "wall_time_s", "device")} for r in rows], indent=2) + "\n")
    if failures:
        print("\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0


def _job_device() -> str:
    """Where this process's kernels run: they inherit its environment (``$COURSE_DEVICE``, and
    the GPU or CPU threads ``_start_worker`` gave this job), so they choose as it does."""
    import torch

    device = pick_device()
    if device.type == "cuda":
        return f"{device.type}:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    if device.type != "cpu":
        return device.type
    threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    return f"cpu, {threads} thread{'s' * (threads != 1)}"


def _run_job(nb: Path, build: Path, profile: str, overrides: dict, log_output: bool) -> tuple[dict, str | None]:
    """One chapter: (its summary row, the error message or None)."""
    start = time.perf_counter()
    try:
        summary = run_chapter(nb, build, profile, overrides, log_output)
        return {"chapter": nb.stem, "status": "ok", "wall_time_s": summary["wall_time_s"],
                "device": _job_device(), "extra": f"{len(summary['figures'])} figures"}, None
    except ChapterFailed as e:
        return {"chapter": nb.stem, "status": "FAILED", "wall_time_s": round(time.perf_counter() - start, 2),
                "device": _job_device(), "extra": ""}, str(e)


def _start_worker(slots, gpus: int, threads: int) -> None:
    """Give this worker process its share of the machine, inherited by every kernel it starts:
    one GPU of its own where there are GPUs, else ``threads`` CPU threads (two kernels that each
    use every core run many times slower than one after the other)."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def _run_parallel(jobs: list[tuple], n: int, keep_going: bool) -> tuple[list[dict], list[str]]:
    """Run ``jobs`` (``_run_job`` arguments) ``n`` at a time in worker processes. Chapters that
    need the same cached model do not both train it: the cache entry is locked
    (``training.cache.cache_lock``), so the second waits for the first and loads its result."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    threads = max(1, (os.cpu_count() or 1) // n)
    context = multiprocessing.get_context("spawn")
    slots = context.Manager().Queue()
    for i in range(n):
        slots.put(i)
    rows, failures = {}, []
    with ProcessPoolExecutor(n, mp_context=context, initializer=_start_worker,
                             initargs=(slots, gpus, threads)) as pool:
        pending = {pool.submit(_run_job, *job): job[0].stem for job in jobs}
        for name in pending.values():
            print(f"  {name} ... (queued)", flush=True)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name = pending.pop(future)
                if future.cancelled():                   # after a failure without --keep-going
                    continue
                row, error = future.result()
                rows[name] = row
                print(f"  {name}: {row['status']} in {row['wall_time_s']:.1f} s ({row['device']})", flush=True)
                if error:
                    failures.append(error)
                    print(f"error: {error}", file=sys.stderr)
                    if not keep_going:
                        for f in pending:
                            f.cancel()
    order = [job[0].stem for job in jobs]
    return [rows[name] for name in order if name in rows], failures


if __name__ == "__main__":
    sys.exit(main())
