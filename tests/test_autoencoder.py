from pathlib import Path

import pytest
import torch

from diffusion_course.models.autoencoder import Autoencoder
from diffusion_course.recipes.autoencoder import add_noise, train_autoencoder

from synthetic import tiny_digits


@pytest.mark.parametrize("latent_channels", [1, 4])
def test_shapes_and_config(latent_channels):
    model = Autoencoder(channels=(8, 16), latent_channels=latent_channels)
    x = torch.randn(3, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (3, latent_channels, 7, 7) == (3, *model.latent_shape())
    assert model.decode(z).shape == x.shape == model(x).shape
    assert model.config == {"in_channels": 1, "channels": (8, 16), "latent_channels": latent_channels}
    assert model.latent_shape(32, 30) == (latent_channels, 8, 8)
    assert Autoencoder(**model.config).encode(torch.zeros(1, 1, 32, 32)).shape == (1, latent_channels, 8, 8)


def test_add_noise_per_image_std():
    x = torch.zeros(2, 1, 28, 28)
    y = add_noise(x, torch.tensor([0.0, 2.0]), torch.Generator().manual_seed(0))
    assert y[0].abs().max() == 0 and 1.6 < y[1].std() < 2.4
    a = add_noise(x, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, add_noise(x, 0.5, torch.Generator().manual_seed(1)))


def test_loss_falls_on_tiny_data():
    torch.manual_seed(0)
    model = Autoencoder(channels=(8, 16))
    losses = train_autoencoder(model, tiny_digits(), steps=40, batch_size=16, lr=3e-3,
                               noise_std=(0.0, 0.5), generator=torch.Generator().manual_seed(0))
    assert len(losses) == 40 and not model.training
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_deterministic_under_seed():
    def run():
        torch.manual_seed(3)
        model = Autoencoder(channels=(8, 16), latent_channels=2)
        losses = train_autoencoder(model, tiny_digits(16), steps=5, batch_size=4, noise_std=0.3,
                                   generator=torch.Generator().manual_seed(7))
        return losses, model.encode(tiny_digits(2, seed=1))
    (l1, z1), (l2, z2) = run(), run()
    assert l1 == l2 and torch.equal(z1, z2)


def test_bad_arguments():
    model = Autoencoder(channels=(8, 16))
    with pytest.raises(ValueError, match="noise_std"):
        train_autoencoder(model, tiny_digits(4), steps=1, noise_std=(0.5, 0.1))
    with pytest.raises(ValueError, match="positive"):
        train_autoencoder(model, tiny_digits(4), steps=0)


def test_chapter04_autoencoder_is_trained_once_then_loaded(tmp_path, monkeypatch, real_data_root):
    """``load_denoising_autoencoder`` is chapter 04's recipe, owned by the package: the first call
    trains and caches, the second loads the same weights; a corrupt cache file is an error."""
    from diffusion_course.recipes.autoencoder import load_denoising_autoencoder
    from diffusion_course.course.settings import chapter_settings
    from diffusion_course.training.checkpoints import CheckpointError

    monkeypatch.setenv("COURSE_DATA_ROOT", str(real_data_root))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    cfg = chapter_settings("04", "ci", n_train=100, train_steps=3, batch_size=4, width=8)
    first, info = load_denoising_autoencoder(cfg, progress=False)
    assert info["trained_now"] and len(info["losses"]) == 3 and info["seconds"] > 0
    again, info2 = load_denoising_autoencoder(cfg, progress=False)
    assert not info2["trained_now"] and info2["losses"] == pytest.approx(info["losses"])
    x = tiny_digits(2)
    with torch.no_grad():
        assert torch.equal(first(x), again(x)) and not again.training
    # the recipe is chapter 04's: seeded initialisation, then train_autoencoder with its generator
    torch.manual_seed(cfg.seed)
    by_hand = Autoencoder(channels=(8, 16), latent_channels=cfg.latent_channels)
    from diffusion_course.data.mnist import training_images
    train_autoencoder(by_hand, training_images(100)[0], 3, 4, cfg.lr, noise_std=(0.0, cfg.max_noise_std),
                      generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        assert torch.allclose(by_hand(x), first(x), atol=1e-6)
    Path(info["path"]).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete it"):
        load_denoising_autoencoder(cfg, progress=False)
