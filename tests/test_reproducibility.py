"""Seeds that mean what they say: the same settings train the same weights in two separate
processes, and a run killed after a checkpoint resumes to the weights of an uninterrupted run.

Each run is a new Python process (torch seeds its global random stream anew in every process,
so this is what an instructor regenerating the figures does), training chapter 05's `ci` model
for a few steps into its own empty cache."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import DIE_AFTER_CHECKPOINT

STEPS = 24
RUN = f"""
import os, signal, sys
from diffusion_course.course.settings import chapter_settings
from diffusion_course.data.mnist import data_spec, training_images
from diffusion_course.recipes.mnist_ddpm import make_unet, train_config
from diffusion_course.training import cache, loop

cfg = chapter_settings("05", "ci", train_steps={STEPS}, precision=sys.argv[1])
kill_at = int(sys.argv[2])
{DIE_AFTER_CHECKPOINT}
cache.load_or_train("mnist-ddpm", lambda: make_unet(cfg), train_config(cfg),
                       lambda: training_images(cfg.n_train), data_spec(cfg.n_train),
                       progress=False, checkpoint_every=8)
"""


def run(cache, precision="fp32", kill_at=-1, data_root=None):
    env = {"COURSE_CACHE": str(cache), "COURSE_DEVICE": "cpu", "COURSE_DATA_ROOT": str(data_root),
           "PATH": "/usr/bin:/bin", **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}
    return subprocess.run([sys.executable, "-c", RUN, precision, str(kill_at)], env=env,
                          capture_output=True, text=True, timeout=300)


def trained_weights(cache):
    (path,) = cache.glob("mnist-ddpm-*.pt")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert blob["step"] == STEPS
    return blob


def assert_identical(a, b):
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert torch.equal(a["losses"], b["losses"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_processes_and_a_killed_run_give_bit_identical_weights(precision, tmp_path, real_data_root):
    """Two processes, fp32 and bf16: bit-identical. In fp32 also a run killed after its step-16
    checkpoint and resumed: bit-identical to the uninterrupted one."""
    first, second, killed = (tmp_path / name for name in ("first", "second", "killed"))
    for cache in (first, second):
        done = run(cache, precision, data_root=real_data_root)
        assert done.returncode == 0, done.stderr[-2000:]
    assert_identical(trained_weights(first), trained_weights(second))
    if precision != "fp32":
        return                           # resuming restores the same state in any precision: checked once

    died = run(killed, precision, kill_at=16, data_root=real_data_root)
    assert died.returncode == -9, (died.returncode, died.stderr[-2000:])
    left = [p.name for p in killed.glob("mnist-ddpm-*.pt")]
    assert len(left) == 1 and left[0].endswith(".partial.pt"), left     # only the checkpoint
    resumed = run(killed, precision, data_root=real_data_root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_identical(trained_weights(first), trained_weights(killed))
