"""The Colab setup cell (cell 1 of every chapter), executed as IPython would run it, with a fake
``google.colab`` module: locally it does nothing; on Colab it installs the course once, keeps
the checkpoint cache on Google Drive only when asked, and says so when there is no GPU."""
import os
import sys
import types

import pytest
import torch

from diffusion_course.course import colab
from diffusion_course.data import paths

TURN_ON = "KEEP_CACHE_ON_DRIVE = False"


def run_setup(monkeypatch, capsys, *, on_colab=True, keep_on_drive=False, gpu=True):
    """Run SETUP_CELL; return (pip calls, Drive mount calls, what it printed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    pip_calls, mounts = [], []
    if on_colab:
        fake = types.ModuleType("google.colab")
        fake.drive = types.SimpleNamespace(mount=lambda where, **kw: mounts.append(where))
        monkeypatch.setitem(sys.modules, "google.colab", fake)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setenv(paths.CACHE_ENV, "unset")    # so that the test's end restores it
    monkeypatch.delenv(paths.CACHE_ENV)
    cell = colab.SETUP_CELL
    if keep_on_drive:
        assert cell.count(TURN_ON) == 1, "one line turns the Drive cache on"
        cell = cell.replace(TURN_ON, "KEEP_CACHE_ON_DRIVE = True")
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: pip_calls.append((name, line)))
    capsys.readouterr()
    exec(TransformerManager().transform_cell(cell), {"get_ipython": lambda: shell})
    return pip_calls, mounts, capsys.readouterr().out


@pytest.mark.parametrize("keep_on_drive", [False, True])
def test_locally_the_cell_does_nothing(monkeypatch, capsys, keep_on_drive):
    pip_calls, mounts, out = run_setup(monkeypatch, capsys, on_colab=False, keep_on_drive=keep_on_drive)
    assert pip_calls == [] and mounts == [] and out == ""
    assert paths.CACHE_ENV not in os.environ


def test_on_colab_with_a_gpu_it_installs_the_course_and_stays_quiet(monkeypatch, capsys):
    pip_calls, mounts, out = run_setup(monkeypatch, capsys, gpu=True)
    assert len(pip_calls) == 1 and pip_calls[0][0] == "pip"
    assert f"git+https://github.com/{colab.REPO_SLUG}@{colab.BRANCH}" in pip_calls[0][1]
    assert mounts == [] and out == ""
    assert paths.CACHE_ENV not in os.environ, "no Drive unless asked: the cache stays in /content"


def test_on_colab_without_a_gpu_it_says_the_profile_and_how_to_get_one(monkeypatch, capsys):
    pip_calls, mounts, out = run_setup(monkeypatch, capsys, gpu=False)
    assert len(pip_calls) == 1 and mounts == []
    assert len(out.splitlines()) == 1, out
    assert "cpu profile" in out and "Runtime > Change runtime type > GPU" in out


def test_drive_on_mounts_drive_and_puts_the_cache_in_it(monkeypatch, capsys):
    pip_calls, mounts, out = run_setup(monkeypatch, capsys, keep_on_drive=True, gpu=True)
    assert len(pip_calls) == 1 and mounts == [colab.DRIVE_MOUNT]
    cache = paths.cache_dir()
    assert str(cache) == colab.DRIVE_CACHE and cache.is_relative_to(f"{colab.DRIVE_MOUNT}/MyDrive")


def test_the_cell_tells_a_student_how_to_get_a_gpu():
    comment = "\n".join(line for line in colab.SETUP_CELL.splitlines() if line.startswith("#"))
    assert "Runtime > Change runtime type > GPU" in comment
