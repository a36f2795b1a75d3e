"""Several processes training one model (``torchrun``, DistributedDataParallel with the gloo
backend on the CPU): 2 ranks with batch B take the steps 1 process takes with batch 2 x B
(in float64, so that the order of the gradient sums does not show),
only rank 0 writes the checkpoint and the cache, and a run killed after a checkpoint resumes
under the same world size. Each run is a new process group launched by torchrun."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import DIE_AFTER_CHECKPOINT

STEPS, BATCH = 6, 4
SCRIPT = f"""
import os, signal, sys
import torch
from diffusion_course.models.unet import UNet
from diffusion_course.training import cache, distributed, loop
from diffusion_course.training.loop import TrainConfig

# float64: the sum of two half-batch gradients then equals the full batch's to ~1e-16; in float32 its last
# bits differ, and AdamW's update g / sqrt(v) turns that into visible differences wherever g is near zero
torch.set_default_dtype(torch.float64)
device = distributed.start()
rank, world = distributed.rank_and_world()
batch, kill_at = int(sys.argv[1]), int(sys.argv[2])
{DIE_AFTER_CHECKPOINT}
g = torch.Generator().manual_seed(7)
images = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
cfg = TrainConfig(steps={STEPS}, batch_size=batch, lr=3e-3, warmup=2, ema_decay=0.9, T=50, kind="v")
tiny = lambda: UNet(base=8, mults=(1, 2), blocks_per_level=1, attention_levels=(1,))
ema, info = cache.load_or_train("tiny", tiny, cfg, lambda: (images, None), {{"data": "random"}},
                                device=device, progress=False, checkpoint_every=2)
if distributed.is_main():
    torch.save({{"model": ema.state_dict(), "losses": info["losses"], "world": world}}, sys.argv[3])
"""


def launch(tmp_path, cache, out, batch, ranks, kill_at=-1):
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "COURSE_CACHE": str(cache), "COURSE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
           if ranks > 1 else [sys.executable])
    return subprocess.run([*cmd, str(script), str(batch), str(kill_at), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)


def relative_error(a: dict, b: dict) -> float:
    """|a - b| / |b| over all the weights at once (a tensor that stays near 0, such as a bias whose
    gradient vanishes, has no meaningful relative error of its own)."""
    flat = [torch.cat([m[k].double().flatten() for k in b if b[k].is_floating_point()]) for m in (a, b)]
    return ((flat[0] - flat[1]).norm() / flat[1].norm()).item()


def test_two_ranks_match_one_process_with_the_double_batch_and_resume(tmp_path):
    one = launch(tmp_path, tmp_path / "one", tmp_path / "one.pt", 2 * BATCH, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    killed = launch(tmp_path, tmp_path / "two", tmp_path / "two.pt", BATCH, 2, kill_at=4)
    assert killed.returncode != 0 and not (tmp_path / "two.pt").exists(), killed.stderr[-3000:]
    assert [p.name.endswith(".partial.pt") for p in (tmp_path / "two").glob("tiny-*.pt")] == [True]
    resumed = launch(tmp_path, tmp_path / "two", tmp_path / "two.pt", BATCH, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    single, ddp = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    assert ddp["world"] == 2 and single["world"] == 1
    assert relative_error(ddp["model"], single["model"]) < 1e-5
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-5)
    entries = sorted(p.name for p in (tmp_path / "two").glob("tiny-*.pt"))
    assert len(entries) == 1 and not entries[0].endswith(".partial.pt"), entries   # one file, by rank 0
