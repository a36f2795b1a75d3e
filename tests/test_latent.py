import math

import pytest
import torch

from diffusion_course.recipes import latent
from diffusion_course.models.autoencoder import Autoencoder
from diffusion_course.models.autoencoder import LatentAutoencoder, LatentCodec
from diffusion_course.recipes.latent import (autoencoder_loss, fit_scaling, LatentDiffusion,
                                             load_or_train_codec, load_or_train_latent_ddpm,
                                             make_latent_unet, reconstruction_report,
                                             train_latent_autoencoder)
from diffusion_course.diffusion.gaussians import kl_to_standard_normal
from diffusion_course.diffusion.sampling import sample
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.course.settings import chapter_settings

from synthetic import tiny_digits


def tiny_codec(variational=True, seed=0) -> LatentCodec:
    torch.manual_seed(seed)
    ae = LatentAutoencoder(channels=(8, 16), latent_channels=2, variational=variational)
    return LatentCodec(ae, shift=0.3, scale=2.5)


# ---------------------------------------------------------------------------------------
# KL and the VAE
# ---------------------------------------------------------------------------------------
def test_kl_closed_form_matches_monte_carlo():
    mu = torch.tensor([0.0, 1.5, -0.7, 0.2], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.8, -3.0], dtype=torch.float64)
    closed = kl_to_standard_normal(mu, logvar)
    assert closed[0] == 0  # N(0, 1) against itself
    # KL = E_q[log q(z) - log p(z)], z ~ q = N(mu, sigma^2)
    g = torch.Generator().manual_seed(0)
    n = 400_000
    sigma = (0.5 * logvar).exp()
    z = mu + sigma * torch.randn(n, 4, generator=g, dtype=torch.float64)
    log_q = -0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
    log_p = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    diff = log_q - log_p
    mc, se = diff.mean(0), diff.std(0) / math.sqrt(n)
    assert torch.all((mc - closed).abs() < 5 * se + 1e-9), (mc, closed, se)


def test_plain_and_variational_encoders():
    x = tiny_digits(3)
    plain = LatentAutoencoder(channels=(8, 16), latent_channels=2, variational=False)
    # the plain one is chapter 04's architecture: its weights load unchanged
    plain.load_state_dict(Autoencoder(channels=(8, 16), latent_channels=2).state_dict())
    mu, logvar = plain.posterior(x)
    assert logvar is None and torch.equal(mu, plain.encode(x)) and mu.shape == (3, 2, 7, 7)
    vae = LatentAutoencoder(channels=(8, 16), latent_channels=2, variational=True)
    mu, logvar = vae.posterior(x)
    assert mu.shape == logvar.shape == (3, 2, 7, 7)
    assert torch.equal(vae.encode(x), mu)  # encode is the mean: deterministic
    assert vae.config["variational"] and not plain.config["variational"]


def test_loss_is_mse_plus_weighted_kl():
    torch.manual_seed(0)
    x = tiny_digits(4)
    vae = LatentAutoencoder(channels=(8, 16), latent_channels=2, variational=True)
    loss, mse, kl = autoencoder_loss(vae, x, 0.5, torch.Generator().manual_seed(1))
    mu, logvar = vae.posterior(x)
    assert kl == pytest.approx(kl_to_standard_normal(mu, logvar).mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(mse + 0.5 * kl, rel=1e-6)
    # the same draw of eps reproduces the same MSE
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
    assert mse == pytest.approx(torch.nn.functional.mse_loss(vae.decode(z), x).item(), rel=1e-5)
    plain = LatentAutoencoder(channels=(8, 16), latent_channels=2, variational=False)
    loss, mse, kl = autoencoder_loss(plain, x, 0.5)
    assert kl == 0 and loss.item() == pytest.approx(mse)
    with pytest.raises(ValueError, match="kl_weight"):
        train_latent_autoencoder(plain, x, steps=1, kl_weight=-1)


@pytest.mark.parametrize("variational", [False, True])
def test_training_reduces_reconstruction_error(variational):
    torch.manual_seed(0)
    x = tiny_digits(64)
    ae = LatentAutoencoder(channels=(8, 16), latent_channels=2, variational=variational)
    before = reconstruction_report(LatentCodec(ae), x)["mse"]
    hist = train_latent_autoencoder(ae, x, steps=60, batch_size=16, lr=3e-3, kl_weight=1e-3)
    after = reconstruction_report(LatentCodec(ae), x)
    assert len(hist["mse"]) == 60 and not ae.training
    assert after["mse"] < 0.3 * before, (before, after)
    assert after["psnr_db"] > 10 * math.log10(4 / before)


# ---------------------------------------------------------------------------------------
# Scaling and the codec
# ---------------------------------------------------------------------------------------
def test_scaling_gives_unit_variance_on_its_data():
    g = torch.Generator().manual_seed(0)
    z = 3.0 + 0.2 * torch.randn(500, 4, 7, 7, generator=g) + torch.tensor([0.0, 1, -1, 2]).view(1, 4, 1, 1)
    shift, scale = fit_scaling(z)
    codec = LatentCodec(LatentAutoencoder(channels=(8, 16), latent_channels=4), shift, scale)
    zs = codec.to_scaled(z).double()
    assert abs(zs.mean().item()) < 1e-5 and zs.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # unscaling undoes scaling (up to float32 rounding), and vice versa
    torch.testing.assert_close(codec.from_scaled(codec.to_scaled(z)), z, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(codec.to_scaled(codec.from_scaled(zs.float())), zs.float(), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="constant"):
        fit_scaling(torch.ones(10))
    with pytest.raises(ValueError, match="scale"):
        LatentCodec(codec.autoencoder, 0.0, 0.0)


def test_codec_encode_decode_contracts():
    codec = tiny_codec()
    x = tiny_digits(6)
    z = codec.encode(x)
    assert z.shape == (6, *codec.latent_shape) == (6, 2, 7, 7)
    torch.testing.assert_close(z, codec.to_scaled(codec.autoencoder.encode(x)))
    # decoding is a pure function of the latents, image by image (no batch coupling), in [-1, 1]
    a, b = codec.decode(z), codec.decode(z)
    assert torch.equal(a, b) and a.abs().max() <= 1
    torch.testing.assert_close(torch.cat([codec.decode(z[i:i + 1]) for i in range(6)]), a,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, codec.autoencoder.decode(z / 2.5 + 0.3).clamp(-1, 1))
    torch.testing.assert_close(codec.encode(x, batch_size=2), z)


# ---------------------------------------------------------------------------------------
# Sampling in latent space
# ---------------------------------------------------------------------------------------
def tiny_ldm() -> LatentDiffusion:
    cfg = chapter_settings("10", "ci", latent_channels=2, base_width=8)
    torch.manual_seed(0)
    unet = make_latent_unet(cfg)
    for p in unet.parameters():  # a non-trivial network (zero-initialised heads output 0)
        torch.nn.init.normal_(p, std=0.05)
    return LatentDiffusion(unet, tiny_codec(), NoiseSchedule.make("linear", 1000), kind="v")


def test_latent_sampler_is_deterministic_and_is_the_shared_sampler():
    ldm = tiny_ldm()
    run = lambda seed, eta: ldm.sample(3, steps=5, eta=eta, generator=torch.Generator().manual_seed(seed))
    (x1, z1), (x2, z2) = run(0, 1.0), run(0, 1.0)
    assert torch.equal(x1, x2) and torch.equal(z1, z2)
    assert not torch.equal(run(1, 1.0)[1], z1)
    assert x1.shape == (3, 1, 28, 28) and z1.shape == (3, 2, 7, 7)
    # it is sampling.sample on the latent grid (no clipping), then one decoder pass
    ref = sample(ldm.unet, (3, 2, 7, 7), ldm.schedule, steps=5, eta=1.0, kind="v", clip_x0=False,
                 generator=torch.Generator().manual_seed(0)).x0
    assert torch.equal(ref, z1) and torch.equal(ldm.codec.decode(ref), x1)
    # DDIM (eta = 0) from a given x_T: the generator no longer matters
    x_T = torch.randn(3, 2, 7, 7, generator=torch.Generator().manual_seed(5))
    a = ldm.sample(3, steps=5, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(0))[0]
    b = ldm.sample(3, steps=5, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(9))[0]
    assert torch.equal(a, b)


def test_cached_codec_and_latent_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    images = tiny_digits(64)
    monkeypatch.setattr(latent, "training_images", lambda n: (images[:n], torch.zeros(n, dtype=torch.long)))
    cfg = chapter_settings("10", "ci", n_train=100, ae_width=8, ae_steps=20, base_width=8,
                           train_steps=3, batch_size=8, precision="fp32")
    codec, info = load_or_train_codec(cfg, progress=False)
    assert info["trained_now"] and len(info["mse"]) == 20
    # the scale was fitted on the training latents: they have mean 0 and variance 1
    zs = codec.encode(images).double()
    assert abs(zs.mean().item()) < 1e-4 and zs.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    again, info2 = load_or_train_codec(cfg, progress=False)
    assert not info2["trained_now"] and (again.shift, again.scale) == (codec.shift, codec.scale)
    assert torch.equal(again.reconstruct(images[:4]), codec.reconstruct(images[:4]))
    unet, linfo = load_or_train_latent_ddpm(cfg, codec, info["key"], progress=False)
    assert linfo["trained_now"] and linfo["steps"] == 3
    assert "latents_of" in linfo["data"]
    unet2, linfo2 = load_or_train_latent_ddpm(cfg, codec, info["key"], progress=False)
    assert not linfo2["trained_now"]
    for p, q in zip(unet.parameters(), unet2.parameters()):
        assert torch.equal(p, q)
    # another autoencoder means other latents: the latent model's cache key changes
    _, linfo3 = load_or_train_latent_ddpm(cfg, codec, "another-codec", progress=False)
    assert linfo3["trained_now"]
