"""Chapter 14's additions: the noise law as an argument of the shared loss, loop, cache and
sampler; the chapter's cached models; the colour data, classifier and judge."""
import dataclasses
import math

import pytest
import torch

from diffusion_course.data import cifar
from diffusion_course.evaluation import colour
from diffusion_course.recipes import variants
from diffusion_course.evaluation import judge
from diffusion_course.diffusion import mixture_noise as mn
from diffusion_course.diffusion import objectives
from diffusion_course.diffusion import sampling
from diffusion_course.data import paths
from diffusion_course.training import cache
from diffusion_course.training import loop as training
from diffusion_course.diffusion.mixture_noise import noise_fn
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.course.settings import chapter_settings
from diffusion_course.models.toy2d import MLPDenoiser


def test_noise_fn_draws_the_law_and_refuses_bad_ones():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    gauss = noise_fn("gaussian")((1000,), g1)
    assert torch.equal(gauss, torch.randn(1000, generator=g2))
    x = noise_fn("mixture", 0.5, 0.5)((200_000,), torch.Generator().manual_seed(1))
    assert abs(x.mean()) < 0.02 and abs(x.var() - 1) < 0.02
    assert abs(mn.standardised(mn.sample_cumulants(x))[4] + 1.125) < 0.03   # two bumps: excess kurtosis -2 (1 - phi^2)^2
    with pytest.raises(ValueError, match="allowed"):
        noise_fn("laplace")
    with pytest.raises(ValueError):
        noise_fn("mixture", 1.5, 0.5)
    assert variants.noise_spec("gaussian", 0.3, 0.2) == {"noise": "gaussian"}
    assert variants.noise_spec("mixture", 0.3, 0.2) == {"noise": "mixture", "p": 0.3, "phi": 0.2}


def test_diffusion_loss_with_a_noise_law():
    torch.manual_seed(0)
    model, sched = MLPDenoiser(hidden=16, depth=2, T=10), NoiseSchedule.make("cosine", 10)
    x0 = torch.randn(64, 2)
    plain = objectives.diffusion_loss(model, x0, sched, generator=torch.Generator().manual_seed(3))
    same = objectives.diffusion_loss(model, x0, sched, generator=torch.Generator().manual_seed(3),
                                     noise=noise_fn("gaussian"))
    assert torch.equal(plain, same)                       # the default is Gaussian, number for number
    mix = objectives.diffusion_loss(model, x0, sched, generator=torch.Generator().manual_seed(3),
                                    noise=noise_fn("mixture", 0.5, 0.5))
    ref = mn.noise_diffusion_loss(model, x0, sched, "mixture", 0.5, 0.5,
                                  generator=torch.Generator().manual_seed(3))
    assert torch.allclose(mix, ref)                       # the same loss as the helper module's
    seen = []
    objectives.diffusion_loss(model, x0, sched, noise=lambda shape, g: seen.append(shape) or torch.zeros(shape))
    assert seen == [(64, 2)]


def test_train_and_sample_take_the_noise_law():
    cfg = training.TrainConfig(steps=5, batch_size=8, T=10, schedule="cosine", warmup=1)
    data = torch.randn(32, 2)
    torch.manual_seed(0)
    a = training.train(MLPDenoiser(hidden=8, depth=1, T=10), data, cfg, progress=False)
    torch.manual_seed(0)
    b = training.train(MLPDenoiser(hidden=8, depth=1, T=10), data, cfg, progress=False,
                       noise=noise_fn("gaussian"))
    assert a.losses == b.losses
    torch.manual_seed(0)
    m = MLPDenoiser(hidden=8, depth=1, T=10)
    torch.manual_seed(0)
    c = training.train(m, data, cfg, progress=False, noise=noise_fn("mixture", 0.5, 0.5))
    assert c.losses != a.losses
    calls = []
    law = lambda shape, g: calls.append(shape) or torch.zeros(shape)
    sampling.sample(m.eval(), (4, 2), cfg.noise_schedule(), steps=3, eta=1.0, noise=law)
    assert calls == [(4, 2)] * 3                          # x_T and the z of the 2 steps that add noise
    s1 = sampling.sample(m, (4, 2), cfg.noise_schedule(), generator=torch.Generator().manual_seed(2)).x0
    s2 = sampling.sample(m, (4, 2), cfg.noise_schedule(), generator=torch.Generator().manual_seed(2),
                         noise=noise_fn("gaussian")).x0
    assert torch.equal(s1, s2)


def test_load_or_train_keys_the_noise(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    cfg = training.TrainConfig(steps=3, batch_size=4, T=10, schedule="cosine", warmup=1)
    data = lambda: (torch.randn(16, 2), None)
    make = lambda: MLPDenoiser(hidden=8, depth=1, T=10)
    cache.load_or_train("toy", make, cfg, data, {"d": 1}, progress=False)
    cache.load_or_train("toy", make, cfg, data, {"d": 1}, progress=False, noise=noise_fn("mixture"),
                           noise_spec=variants.noise_spec("mixture", 0.5, 0.5))
    assert len(list(tmp_path.glob("toy-*.pt"))) == 2      # another noise law is another cache entry
    _, info = cache.load_or_train("toy", make, cfg, data, {"d": 1}, progress=False,
                                     noise=noise_fn("mixture"),
                                     noise_spec=variants.noise_spec("mixture", 0.5, 0.5))
    assert not info["trained_now"]
    with pytest.raises(ValueError, match="together"):
        cache.load_or_train("toy", make, cfg, data, {"d": 1}, noise=noise_fn("mixture"))


def test_chapter_models_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(variants.SIZES, "ci", dataclasses.replace(variants.SIZES["ci"], toy_T=10, colour_n_train=16,
                                                                   colour_batch_size=4))
    cfg = chapter_settings("14", "ci", toy_train_steps=5)
    pts = torch.randn(64, 2)
    m1, i1 = variants.train_toy_model(cfg, "mixture", pts, progress=False)
    m2, i2 = variants.train_toy_model(cfg, "mixture", pts, progress=False)
    assert i1["trained_now"] and not i2["trained_now"] and i1["losses"] == i2["losses"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, i3 = variants.train_toy_model(cfg, "gaussian", pts, progress=False)
    assert i3["trained_now"]
    cfg = chapter_settings("14", "ci", colour_train_steps=2)
    model, info = variants.train_colour_model(cfg, progress=False)
    assert info["trained_now"] and not variants.train_colour_model(cfg, progress=False)[1]["trained_now"]
    x, seconds = variants.sample_colour(model, info["train_config"], 3, 2, torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and torch.isfinite(x).all() and seconds > 0


def test_mnist_models_differ_only_in_the_noise():
    cfg = chapter_settings("14", "cpu")
    tcfg = variants.mnist_train_config(cfg)
    assert tcfg.steps == cfg.mnist_train_steps and tcfg.batch_size == variants.sizes(cfg).mnist_batch_size
    assert tcfg.kind == "v" and tcfg == variants.mnist_train_config(chapter_settings("14", "cpu", mix_phi=0.9))
    net = variants.make_mnist_unet(16)
    assert net(torch.zeros(2, 1, 28, 28), torch.tensor([1, 500])).shape == (2, 1, 28, 28)


def test_colour_data_and_judge(tmp_path, monkeypatch):
    x, y = cifar.colour_data("synthetic", "train", 12)
    assert x.shape == (12, 3, 32, 32) and x.min() >= -1 and x.max() <= 1 and y.max() < 4
    assert torch.equal(cifar.colour_data("synthetic", "train", 5)[0], x[:5])
    assert not torch.equal(cifar.colour_data("synthetic", "test", 5)[0], x[:5])
    with pytest.raises(ValueError, match="allowed"):
        cifar.colour_data("imagenet")
    with pytest.raises(ValueError):
        cifar.colour_data("synthetic", "train", 10**6)
    net = variants.make_colour_unet(8)
    assert net(torch.zeros(2, 3, 32, 32), torch.tensor([3, 900])).shape == (2, 3, 32, 32)
    clf = colour.colour_classifier(4)
    f, pred, conf = judge.classify(clf.eval(), x)
    assert f.shape == (12, 64) and pred.shape == (12,) and ((conf > 0) & (conf <= 1)).all()
    trained = colour.train_colour_classifier(x, y, 4, steps=3, batch_size=4, lr=1e-3, progress=False)
    assert not trained.training


def test_colour_judge_floor_and_report(monkeypatch):
    """A judge on a small synthetic set: real held-out images score near the floor, noise far above."""
    monkeypatch.setitem(cifar.SYNTHETIC_SPLITS, "train", {"n": 600, "seed": 1})
    monkeypatch.setitem(cifar.SYNTHETIC_SPLITS, "test", {"n": 300, "seed": 2})
    xtr, ytr = cifar.colour_data("synthetic", "train")
    clf = colour.train_colour_classifier(xtr, ytr, 4, steps=60, batch_size=32, lr=3e-3, progress=False)
    judge = colour.ColourJudge(clf, "synthetic", {"trained_now": True})
    real = judge.evaluate(cifar.synthetic_colour_set(100, seed=9)[0])
    noise = judge.evaluate(torch.rand(100, 3, 32, 32) * 2 - 1)
    assert real["floor_n"] == 100 and real["frechet_floor"] > 0
    assert real["frechet_ratio"] < 3 and noise["frechet_ratio"] > 5 * real["frechet_ratio"]
    assert judge.floor(100) is judge.floor(100)           # computed once per N
    assert math.isclose(sum(real["class_histogram"]), 1.0)
    assert judge.accuracy(0.0) == judge.test_accuracy and 0 <= judge.accuracy(0.2, seed=1) <= 1


def test_the_colour_judges_noise_augmentation():
    """Noise of an sd drawn per image in [0, noise], after the same flips and shifts."""
    x = torch.zeros(64, 3, 32, 32)
    clean = colour._augment(x, torch.Generator().manual_seed(0))
    noisy = colour._augment(x, torch.Generator().manual_seed(0), noise=0.3)
    assert torch.equal(clean, x)
    sds = noisy.flatten(1).std(1)
    assert 0 < sds.min() and sds.max() < 0.33 and sds.max() - sds.min() > 0.1   # one sd per image, up to 0.3


def test_the_gpu_profile_colour_path_runs_on_a_fake_cifar_archive(tmp_path, monkeypatch):
    """The gpu profile's colour section end to end (CIFAR-10 loaded with its checksum, the
    colour judge, the 3-channel U-Net trained and sampled) on a small fake archive: the path
    no machine here can run on the real data."""
    import test_cifar

    monkeypatch.setattr(test_cifar, "PER_BATCH", 20)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", test_cifar.write_archive(tmp_path / cifar.ARCHIVE,
                                                                       test_cifar.fake_batches()))
    for name, value in (("COURSE_DATA_ROOT", tmp_path), ("COURSE_CACHE", tmp_path / "cache"), ("COURSE_DEVICE", "cpu")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setitem(colour.JUDGE_RECIPES, "cifar10", {"steps": 4, "batch_size": 8, "lr": 3e-3})
    monkeypatch.setattr(colour, "_JUDGES", {})
    monkeypatch.setitem(variants.SIZES, "gpu", dataclasses.replace(variants.SIZES["gpu"], colour_width=8,
                                                                    colour_n_train=40, colour_batch_size=4))
    cfg = chapter_settings("14", "gpu", colour_train_steps=2)
    assert cfg.colour_data == "cifar10"
    model, info = variants.train_colour_model(cfg, progress=False)
    assert info["trained_now"] and info["steps"] == 2
    x, seconds = variants.sample_colour(model, variants.colour_train_config(cfg), 6, 2, torch.Generator().manual_seed(0))
    assert x.shape == (6, 3, 32, 32) and torch.isfinite(x).all() and seconds > 0
    report = colour.load_colour_judge("cifar10", progress=False).evaluate(x)
    assert report["n_samples"] == 6 and math.isfinite(report["frechet"]) and report["frechet_floor"] > 0
