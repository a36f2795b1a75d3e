import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def data_root_with(*markers: str, what: str) -> Path:
    """$COURSE_DATA_ROOT (else ../shared/data) if it holds every one of ``markers`` (a marker
    may name alternatives, "a|b"), or skip the test."""
    root = Path(os.environ.get("COURSE_DATA_ROOT", SHARED_DATA))
    if not all(any((root / m).exists() for m in marker.split("|")) for marker in markers):
        pytest.skip(f"{what} not available (set COURSE_DATA_ROOT)")
    return root


MNIST_FILES = [f"MNIST/raw/{name}|MNIST/raw/{name}.gz" for name in
               ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte")]


# Script lines for a training process that dies (SIGKILL) right after writing the checkpoint of
# step ``kill_at``: the tests of resuming paste it after ``import os, signal`` and
# ``from diffusion_course.training import loop`` and set ``kill_at`` (-1: never).
DIE_AFTER_CHECKPOINT = """
save = loop.save_checkpoint

def save_then_maybe_die(state, *args, **kwargs):
    save(state, *args, **kwargs)
    if state.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

loop.save_checkpoint = save_then_maybe_die
"""


@pytest.fixture
def real_data_root() -> Path:
    """A folder holding both real MNIST splits (gzipped or extracted), or skip."""
    return data_root_with(*MNIST_FILES, what="real MNIST (both splits)")


@pytest.fixture
def fsdd_root() -> Path:
    """A folder holding the Free Spoken Digit Dataset recordings, or skip."""
    return data_root_with("fsdd/recordings/0_george_0.wav", what="FSDD recordings")


@pytest.fixture(scope="session")
def ci_judge_cache(tmp_path_factory):
    """A cache folder holding the `ci` judge, and the judge: tests that run commands in an empty
    cache copy it in (``seed_cache``) instead of each training their own (about 8 s each). The
    judge is the chapters' own, from the cache they use (``data.paths.cache_dir``): trained
    there once if it is not there yet, and then loaded by every chapter nbval runs."""
    import shutil

    from diffusion_course.data.paths import cache_dir
    from diffusion_course.evaluation import judge as judge_module

    root = data_root_with(*MNIST_FILES, what="real MNIST (both splits)")
    shared, cache = cache_dir(), tmp_path_factory.mktemp("ci-judge-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_DATA_ROOT", str(root))
        mp.setenv("COURSE_CACHE", str(shared))
        mp.setenv("COURSE_DEVICE", "cpu")
        mp.setattr(judge_module, "_JUDGES", {})
        judge = judge_module.load_judge("ci", progress=False)
    path = Path(judge.info["path"])
    assert path.parent == shared and path.exists(), judge.info
    shutil.copy(path, cache / path.name)
    return cache, judge


def seed_cache(cache: Path, ci_judge_cache) -> Path:
    """Copy the session's trained `ci` judge into ``cache`` (created if needed)."""
    import shutil

    cache.mkdir(parents=True, exist_ok=True)
    for f in ci_judge_cache[0].glob("mnist-classifier-*.pt"):
        shutil.copy(f, cache / f.name)
    return cache
