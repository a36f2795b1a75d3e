"""A pytest plugin that keeps what nbval executed, in the runner's build layout.

    pytest -p diffusion_course.course.nbval_record --record-executed build/test --nbval-lax notebooks

nbval runs every code cell of a chapter in a kernel and compares, but keeps nothing. With
``--record-executed DIR`` each chapter whose cells all passed is written as the runner would
write it (``DIR/executed/<chapter>.ipynb``, ``DIR/figures/<chapter>/``,
``DIR/metrics/<chapter>.json``), so the course website can be built from CI's own run of the
notebooks instead of a second execution (``make test`` does this; ``tests/test_site.py``
builds and browses the site from it). A chapter with a failed or skipped cell leaves no files.
The plugin also runs the site's tests last, after the notebooks they render.

After a chapter's last cell, one more test runs in the same kernel: every coding exercise's
check must fail on the student edition's stub (``editions.check_stubs_fail``).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

RUN_LAST = "test_site.py"          # the tests that need the recorded notebooks


def pytest_addoption(parser):
    parser.addoption("--record-executed", metavar="DIR", type=Path, default=None,
                     help="write every notebook nbval ran without failure into DIR, as the runner does")


class ExerciseStubs(pytest.Item):
    """Runs ``editions.check_stubs_fail`` in the kernel of a chapter that nbval just ran."""

    def runtest(self):
        if self.path in self.config._nbval_failed:
            pytest.skip("a cell of this chapter failed")
        kernel = self.parent.kernel
        code = ("from diffusion_course.course.editions import check_stubs_fail as _check\n"
                f"print('\\n'.join(_check({str(self.path)!r})))")
        msg_id = kernel.execute_cell_input(code, allow_stdin=False)
        while True:
            reply = kernel.get_message(stream="shell", timeout=self.config.option.nbval_cell_timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        kernel.await_idle(msg_id, timeout=60)
        content = reply["content"]
        if content["status"] != "ok":
            raise AssertionError(f"{content.get('ename')}: {content.get('evalue')}")

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: exercise checks fail on their stubs"


def pytest_collection_modifyitems(session, config, items):
    """The stub test after each chapter's last cell; the site's tests last of all."""
    config._nbval_failed = set()
    last_cell = {}
    for i, item in enumerate(items):
        if hasattr(item, "cell") and hasattr(item.parent, "nb"):
            last_cell[item.parent] = i
    for parent, i in sorted(last_cell.items(), key=lambda kv: -kv[1]):
        items.insert(i + 1, ExerciseStubs.from_parent(parent, name="exercise checks fail on their stubs"))
    items.sort(key=lambda item: item.path.name == RUN_LAST)   # stable: the rest keep their order


class _Recorder:
    def __init__(self, build: Path, profile: str):
        self.build, self.profile = build, profile
        self.chapters: dict[Path, dict] = {}    # notebook path -> its nb, cell count, results

    def cell_done(self, item, report) -> None:
        parent = item.parent
        entry = self.chapters.setdefault(parent.path, {
            "nb": parent.nb, "cells": sum(c.cell_type == "code" for c in parent.nb.cells),
            "passed": 0, "failed": False, "seconds": 0.0})
        entry["seconds"] += report.duration
        if report.passed and item.test_outputs is not None:
            item.cell.outputs = list(item.test_outputs)
            item.cell.execution_count = entry["passed"] + 1
            entry["passed"] += 1
        elif not entry["failed"]:
            entry["failed"] = True                 # an older recording of it would be stale now
            from .runner import build_paths, remove_paths
            remove_paths(*build_paths(self.build, parent.path.stem).values())
        if entry["passed"] == entry["cells"] and not entry["failed"]:
            self.write(parent.path, entry)

    def write(self, notebook: Path, entry: dict) -> None:
        import nbformat

        from .runner import publish_chapter

        self.build.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{notebook.stem}.", dir=self.build))
        try:
            executed = scratch / notebook.name
            nbformat.write(entry["nb"], executed)
            publish_chapter(executed, self.build, self.profile, {"PROFILE": self.profile},
                            entry["seconds"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def pytest_configure(config):
    folder = config.getoption("record_executed")
    if folder is not None:
        from .settings import resolve_profile

        config._nbval_recorder = _Recorder(folder.resolve(), resolve_profile("auto"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    recorder = getattr(item.config, "_nbval_recorder", None)
    report = outcome.get_result()
    if not hasattr(item, "test_outputs") or not hasattr(item, "cell"):
        return                                     # not an nbval cell
    if report.failed:
        item.config._nbval_failed.add(item.path)
    if recorder is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        recorder.cell_done(item, report)
