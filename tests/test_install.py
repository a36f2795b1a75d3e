"""The course installed, not cloned: where files go (``paths.py``), a built wheel running a
chapter from a temporary folder without writing into site-packages, and the notebooks' Colab
setup cell, which must install the course package and leave torch alone.

The fresh virtual environment borrows the checkout environment's packages through a .pth
line (torch alone is gigabytes; copying it proves nothing), but not its editable install of
the course: the course package comes from the wheel, which the tests check."""
import json
import os
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from diffusion_course.course import colab
from diffusion_course.data import paths


# -- paths.py --------------------------------------------------------------------------
def test_checkout_mode_uses_the_checkouts_folders(monkeypatch):
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    assert paths.checkout_root() == REPO
    assert paths.data_dir() == REPO / "data" and paths.cache_dir() == REPO / "checkpoints"
    assert paths.build_dir() == REPO / "build" and paths.describe()["mode"] == "checkout"


def test_installed_mode_uses_the_working_directory(monkeypatch, tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages" / "diffusion_course"
    monkeypatch.setattr(paths, "PACKAGE_DIR", site)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    assert paths.checkout_root() is None and paths.describe()["mode"] == "installed"
    assert paths.data_dir() == tmp_path / "data" and paths.cache_dir() == tmp_path / "checkpoints"
    assert paths.build_dir() == tmp_path / "build"
    monkeypatch.setenv(paths.DATA_ENV, "/srv/shared")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "models"))
    assert paths.data_dir() == Path("/srv/shared") and paths.cache_dir() == tmp_path / "models"


def test_one_place_decides():
    """The cache and the runner use paths.py's folders, not second copies; nothing else guesses
    where the repository is."""
    from diffusion_course.course import runner
    from diffusion_course.training import cache
    assert cache.cache_dir is paths.cache_dir and runner.build_dir is paths.build_dir
    for path in (REPO / "src" / "diffusion_course").rglob("*.py"):
        if path.name != "paths.py":
            assert "parents[2]" not in path.read_text(), f"{path.name} guesses the repository root itself"


# -- a wheel in a fresh environment ---------------------------------------------------------
def fresh_venv(folder: Path, borrowed: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a new venv that sees ``borrowed`` through a .pth line."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "borrowed.pth").write_text(f"{borrowed}\n")
    return python, site


@pytest.fixture(scope="module")
def environments(tmp_path_factory):
    """A wheel of the course, and two fresh venvs borrowing this environment's packages except
    the course itself (symlinks, the editable install left out): "bare" (as Colab before the
    setup cell) and "installed" (the wheel installed into it)."""
    tmp = tmp_path_factory.mktemp("installed")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    borrowed = tmp / "borrowed"
    borrowed.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("diffusion_course", "__editable__", "_diffusion_course")) \
                and entry.suffix != ".pth":
            (borrowed / entry.name).symlink_to(entry)
    bare = fresh_venv(tmp / "bare", borrowed)
    python, site = fresh_venv(tmp / "venv", borrowed)
    wheel = next(wheels.glob("diffusion_course-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return {"wheels": wheels, "bare": bare, "installed": (python, site)}


def file_set(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_wheel_runs_a_chapter_from_a_temporary_folder(environments, tmp_path, real_data_root):
    python, site = environments["installed"]
    where = subprocess.run([str(python), "-c", "import diffusion_course, json; from diffusion_course.data import paths; "
                            "print(json.dumps([diffusion_course.__file__, paths.describe()]))"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    module_file, described = json.loads(where)
    assert Path(module_file).is_relative_to(site), "the course must come from the wheel, not the checkout"
    assert described["mode"] == "installed" and described["checkpoints"] == str(tmp_path / "checkpoints")
    before = file_set(site)
    env = {k: v for k, v in os.environ.items() if k not in (paths.CACHE_ENV, "PYTHONPATH")}
    env.update({paths.DATA_ENV: str(real_data_root), "COURSE_PROFILE": "ci", "MPLBACKEND": "agg",
                "COURSE_DEVICE": "cpu"})
    notebook = REPO / "notebooks" / "02_forward_process.ipynb"     # a chapter that runs in seconds
    run = subprocess.run([str(python), "-m", "papermill", "--kernel", "python3", str(notebook), "out.ipynb",
                          "-p", "PROFILE", "ci"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    train = ("from diffusion_course.course.settings import chapter_settings\n"
             "from diffusion_course.recipes.autoencoder import load_denoising_autoencoder\n"
             "load_denoising_autoencoder(chapter_settings('04', 'ci', train_steps=5, n_train=100), progress=False)")
    trained = subprocess.run([str(python), "-c", train], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list((tmp_path / "checkpoints").glob("denoising-autoencoder-*.pt")), "the cache goes under ./checkpoints"
    assert file_set(site) == before, "nothing may be written inside site-packages"


def test_colab_setup_cell_installs_the_course_and_not_torch(environments, monkeypatch):
    """Every notebook's setup cell, run with a fake google.colab module: it calls pip once, for
    the course package only. pip, pointed at the local wheel instead of GitHub, in an
    environment that has the course's dependencies but not the course (Colab before the cell),
    would install the course and nothing else: torch stays as it is."""
    from IPython.core.inputtransformer2 import TransformerManager

    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cell = nbformat.read(path, as_version=4).cells[1].source
        calls.clear()
        exec(TransformerManager().transform_cell(cell), {"get_ipython": lambda: shell})
        assert len(calls) == 1 and calls[0][0] == "pip", path.name
    args = calls[0][1].split()
    assert args[0] == "install" and "torch" not in calls[0][1] and not {"-U", "--upgrade"} & set(args)
    assert f'"diffusion-course @ git+https://github.com/{colab.REPO_SLUG}@{colab.BRANCH}"' in calls[0][1]
    python, _ = environments["bare"]
    dry = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--no-index",
                          "--find-links", str(environments["wheels"]), "--report", "-", "diffusion-course"],
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    would = {item["metadata"]["name"].lower() for item in json.loads(dry.stdout)["install"]}
    assert would == {"diffusion-course"}, f"pip would also install {sorted(would - {'diffusion-course'})}"
