"""The course's GAN loop and the MNIST DCGAN: shapes, determinism, the wall-time budget."""
import pytest
import torch

from diffusion_course.models.gan import DCGANDiscriminator, DCGANGenerator
from diffusion_course.training.gan import train_gan


def test_dcgan_shapes_and_range():
    torch.manual_seed(0)
    G, D = DCGANGenerator(latent_dim=16, width=8), DCGANDiscriminator(width=8)
    x = G.eval().sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert D(x).shape == (5,)


def _run(seed, **kw):
    torch.manual_seed(seed)
    data = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return train_gan(DCGANGenerator(16, 8), DCGANDiscriminator(8), data, batch_size=8, seed=seed, **kw)


def test_training_is_deterministic_under_a_seed_and_moves_the_generator():
    a, b = _run(3, steps=6, snapshot_every=3, n_snapshot=4), _run(3, steps=6)
    assert a.d_losses == b.d_losses and a.g_losses == b.g_losses and a.steps == 6
    assert sorted(a.snapshots) == [3, 6] and not torch.equal(a.snapshots[3], a.snapshots[6])
    for p, q in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.equal(p, q)
    assert _run(4, steps=6).d_losses != a.d_losses


def test_a_wall_time_budget_stops_the_run_and_says_how_far_it_got():
    run = _run(0, steps=1000, max_seconds=0.0, snapshot_every=500, n_snapshot=4)
    assert run.steps == 1 and len(run.d_losses) == 1 and list(run.snapshots) == [1]
    with pytest.raises(ValueError, match="positive"):
        _run(0, steps=0)


def test_a_gan_trained_for_a_budget_is_cached_with_its_step_count(tmp_path, monkeypatch):
    from diffusion_course.training.gan import load_or_train_gan
    from diffusion_course.training.checkpoints import CheckpointError

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    data = lambda: torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1  # noqa: E731
    recipe = {"batch_size": 8, "lr": 2e-4}
    G1, first = load_or_train_gan("toy-gan", lambda: DCGANGenerator(16, 8), lambda: DCGANDiscriminator(8), data, 0.3, recipe,
                                  progress=False)
    assert first["trained_now"] and first["steps"] >= 1 and first["seconds"] >= 0.3
    G2, again = load_or_train_gan("toy-gan", lambda: DCGANGenerator(16, 8), lambda: DCGANDiscriminator(8), data, 0.3, recipe,
                                  progress=False)
    assert not again["trained_now"] and again["steps"] == first["steps"]
    assert all(torch.equal(p, q) for p, q in zip(G1.state_dict().values(), G2.state_dict().values()))
    (path,) = tmp_path.glob("toy-gan-*.pt")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete it"):
        load_or_train_gan("toy-gan", lambda: DCGANGenerator(16, 8), lambda: DCGANDiscriminator(8), data, 0.3, recipe)
