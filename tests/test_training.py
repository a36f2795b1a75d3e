"""Training loop: exact resume, EMA formula, the load-or-train cache, bad checkpoints."""
import os
from dataclasses import replace

import pytest
import torch

from diffusion_course.training import checkpoints, loop
from diffusion_course.training.checkpoints import CheckpointError
from diffusion_course.training.loop import ema_update, lr_at, train, TrainConfig
from diffusion_course.training.cache import load_or_train
from diffusion_course.models.unet import UNet

TINY = dict(base=8, mults=(1, 2), blocks_per_level=1, attention_levels=())
CFG = TrainConfig(steps=12, batch_size=8, lr=3e-3, warmup=3, ema_decay=0.9, T=50)


def tiny_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    return x, torch.randint(0, 10, (n,), generator=g)


def weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_resume_is_bit_identical(tmp_path):
    x, _ = tiny_data()
    keep = (3, 8)  # EMA snapshots before and after the interruption survive it too
    torch.manual_seed(0)
    straight = train(UNet(**TINY), x, CFG, progress=False, keep_ema_at=keep)
    ckpt = tmp_path / "run.pt"
    torch.manual_seed(0)
    first = train(UNet(**TINY), x, CFG, checkpoint=ckpt, stop_after=5, progress=False, keep_ema_at=keep)
    assert first.step == 5
    torch.manual_seed(123)  # a different global state must not matter: it is restored
    resumed = train(UNet(**TINY), x, CFG, checkpoint=ckpt, progress=False, keep_ema_at=keep)
    assert resumed.step == CFG.steps and resumed.losses == straight.losses
    assert sorted(resumed.ema_history) == list(keep)
    for step in keep:
        for name, tensor in straight.ema_history[step].items():
            assert torch.equal(tensor, resumed.ema_history[step][name]), (step, name)
    for name, tensor in weights(straight.model).items():
        assert torch.equal(tensor, weights(resumed.model)[name]), name
    for name, tensor in weights(straight.ema).items():
        assert torch.equal(tensor, weights(resumed.ema)[name]), name


def test_max_seconds_caps_the_whole_call_across_checkpoints(tmp_path, monkeypatch):
    """The budget counts from the start of the call, not from the last checkpoint save."""
    clock = iter(range(10_000))  # a fake clock: every reading is one second later
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    x, _ = tiny_data()
    cfg = replace(CFG, steps=40)
    state = train(UNet(**TINY), x, cfg, checkpoint=tmp_path / "run.pt", checkpoint_every=2,
                  max_seconds=10, progress=False)
    assert 0 < state.step < 10, state.step
    resumed = train(UNet(**TINY), x, cfg, checkpoint=tmp_path / "run.pt", progress=False)
    assert resumed.step == cfg.steps  # a cut-short run resumes and finishes


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    model, ema = UNet(**TINY), UNet(**TINY)
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p, atol=1e-7)


def test_lr_schedule_warms_up_then_decays():
    cfg = replace(CFG, steps=100, warmup=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(50, replace(cfg, lr_decay="constant")) == 1.0


def test_loss_falls_on_a_tiny_dataset():
    # Two fixed images: the network can learn the noise well above chance quickly.
    x = torch.zeros(2, 1, 28, 28)
    x[0, :, 8:20, 12:16] = 1.0
    x[1, :, 12:16, 6:22] = 1.0
    x = x * 2 - 1
    cfg = replace(CFG, steps=80, batch_size=16, lr=3e-3, warmup=10)
    torch.manual_seed(0)
    state = train(UNet(**TINY), x, cfg, progress=False)
    first, last = sum(state.losses[:20]) / 20, sum(state.losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)


def test_cache_trains_once_and_again_when_a_setting_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    calls = []

    def data():
        calls.append(1)
        return tiny_data()

    spec = {"set": "random", "n": 32}
    make = lambda: UNet(**TINY)
    m1, info1 = load_or_train("toy", make, CFG, data, spec, progress=False)
    m2, info2 = load_or_train("toy", make, CFG, data, spec, progress=False)
    assert info1["trained_now"] and not info2["trained_now"] and len(calls) == 1
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    _, info3 = load_or_train("toy", make, replace(CFG, lr=1e-3), data, spec, progress=False)
    _, info4 = load_or_train("toy", make, CFG, data, {**spec, "n": 31}, progress=False)
    _, info5 = load_or_train("toy", lambda: UNet(**{**TINY, "base": 16}), CFG, data, spec, progress=False)
    assert info3["trained_now"] and info4["trained_now"] and info5["trained_now"]
    assert len({info1["path"], info3["path"], info4["path"], info5["path"]}) == 4


def test_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path):
    x, _ = tiny_data()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*Delete it"):
        train(UNet(**TINY), x, CFG, checkpoint=bad, progress=False)
    ckpt = tmp_path / "run.pt"
    train(UNet(**TINY), x, CFG, checkpoint=ckpt, stop_after=2, progress=False)
    with pytest.raises(CheckpointError, match=r"other settings.*'lr'"):
        train(UNet(**TINY), x, replace(CFG, lr=1e-2), checkpoint=ckpt, progress=False)
    with pytest.raises(CheckpointError, match="another architecture"):
        train(UNet(**{**TINY, "base": 16}), x, CFG, checkpoint=ckpt, progress=False)
    torch.save({"format": "something else"}, bad)
    with pytest.raises(CheckpointError, match="not a diffusion-course checkpoint"):
        checkpoints.read_checkpoint(bad)


def test_save_atomically_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "sub" / "weights.pt"
    checkpoints.save_atomically({"w": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    with pytest.raises(Exception):                    # a lambda cannot be pickled: the save fails
        checkpoints.save_atomically({"w": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))  # old file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["weights.pt"]      # no temporary left


def test_bad_config_values():
    with pytest.raises(ValueError, match="kind must be one of"):
        TrainConfig(kind="score")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="sigmoid")


def test_bf16_autocast_keeps_float32_weights_and_tracks_fp32():
    # bf16 only changes the precision of the forward pass: the first loss agrees with fp32
    # to bf16 accuracy, and weights and EMA stay float32.
    x, _ = tiny_data()
    torch.manual_seed(0)
    fp32 = train(UNet(**TINY), x, CFG, progress=False)
    torch.manual_seed(0)
    bf16 = train(UNet(**TINY), x, replace(CFG, precision="bf16"), progress=False)
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.05)
    assert all(torch.isfinite(torch.tensor(bf16.losses)))
    assert all(p.dtype == torch.float32 for p in [*bf16.model.parameters(), *bf16.ema.parameters()])


def _train_slowly(path: str, marker_dir: str) -> bool:
    """In a separate process: load or train a tiny model at ``path``; training takes a second
    and leaves a marker file, so the test can count how often it happened."""
    import time as _time
    from pathlib import Path as _Path

    import torch as _torch

    from diffusion_course.training.cache import cached

    def compute():
        _time.sleep(1.0)
        (_Path(marker_dir) / f"trained-{os.getpid()}").touch()
        model = _torch.nn.Linear(2, 2)
        return model, model.state_dict()
    _, info = cached(_Path(path), lambda weights: weights, compute)
    return info["trained_now"]


def test_a_cache_entry_is_trained_once_by_concurrent_processes(tmp_path):
    """Two processes ask for the same missing entry at once: one trains it, the other waits
    for the lock and loads the result (cache.cache_lock)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    entry, markers = tmp_path / "cache" / "tiny.pt", tmp_path / "markers"
    markers.mkdir()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        trained_now = list(pool.map(_train_slowly, [str(entry)] * 2, [str(markers)] * 2))
    assert sorted(trained_now) == [False, True]
    assert len(list(markers.iterdir())) == 1 and entry.exists()
