"""Reference models shipped with the course: pinned, matching their recipe, loadable offline,
and refused when altered."""
from dataclasses import asdict

import pytest
import torch

from diffusion_course.data import mnist
from diffusion_course.recipes import mnist_ddpm
from diffusion_course.recipes import references
from diffusion_course.training import references as reference
from diffusion_course.recipes.mnist_ddpm import (load_mnist_model, make_unet, REFERENCE_RECIPES,
                                                 reference_settings)
from diffusion_course.training.references import (load_reference, read_reference, reference_path,
                                                  ReferenceError)
from diffusion_course.course.settings import chapter_settings


@pytest.mark.parametrize("name", sorted(REFERENCE_RECIPES))
def test_shipped_file_matches_its_pin_and_recipe(name):
    path = reference_path(name)
    assert path.exists(), f"{path} is missing: train it with `python -m diffusion_course.recipes.references {name}`"
    assert path.stat().st_size <= 6_000_000
    assert reference.sha256sum(path) == reference.SHA256[name]
    blob = read_reference(name)                       # torch.load(weights_only=True) inside
    recipe = REFERENCE_RECIPES[name]
    cfg = reference_settings(name)
    assert blob["train_config"] == asdict(mnist_ddpm.train_config(cfg, recipe["conditional"]))
    assert blob["settings"]["train_steps"] == recipe["overrides"]["train_steps"] == blob["train_steps"]
    assert blob["data"] == mnist.data_spec(cfg.n_train)
    # the command that trained it, recorded in the file under the module's earlier name (the file stays byte-identical)
    assert blob["command"] == f"python -m diffusion_course.reference {name}"
    assert all(v.dtype == torch.float16 for v in blob["weights"].values() if v.is_floating_point())


@pytest.mark.parametrize("conditional", [False, True])
def test_load_mnist_model_gives_the_reference_offline(monkeypatch, conditional):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_DATA_ROOT", "/nonexistent")     # no data needed to load it
    model, info = load_mnist_model("ci", "reference", conditional=conditional)
    name = "mnist-cond" if conditional else "mnist-ddpm"
    expected = make_unet(reference_settings(name), 10 if conditional else None)
    assert model.config == expected.config and not model.training
    assert info["source"] == "reference" and info["steps"] == REFERENCE_RECIPES[name]["overrides"]["train_steps"]
    assert info["train_config"].label_dropout == (mnist_ddpm.LABEL_DROPOUT if conditional else 0.0)
    # the profile does not change the reference: it is one file
    again, _ = load_mnist_model("cpu", "reference", conditional=conditional)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 900])
    with torch.no_grad():
        out = model(x, t, torch.tensor([3, 10])) if conditional else model(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_bad_requests_say_what_is_allowed():
    with pytest.raises(ValueError, match="allowed: reference, student"):
        load_mnist_model("ci", "mine")
    with pytest.raises(ValueError, match="apply to model='student' only"):
        load_mnist_model("ci", "reference", train_steps=10)
    with pytest.raises(ValueError, match="unknown reference model"):
        reference_path("cifar")


def _tiny_reference(tmp_path, monkeypatch, tamper=None):
    """Export a 2-step model as reference 'mnist-ddpm' to tmp_path and pin it."""
    cfg = chapter_settings("05", "ci", base_width=8, train_steps=2)
    tcfg = mnist_ddpm.train_config(cfg)
    model = make_unet(cfg)
    info = {"losses": [0.5, 0.4], "steps": 2, "seconds": 1.0, "data": mnist.data_spec(cfg.n_train)}
    path = reference.export_reference("mnist-ddpm", model, tcfg, info, {"train_steps": 2}, "cmd",
                                      tmp_path / "ref.pt")
    monkeypatch.setitem(reference.SHA256, "mnist-ddpm", reference.sha256sum(path))
    if tamper:
        tamper(path)
    return cfg, tcfg, model, path


def test_export_then_load_round_trips(tmp_path, monkeypatch):
    cfg, tcfg, model, path = _tiny_reference(tmp_path, monkeypatch)
    loaded, info = load_reference("mnist-ddpm", make_unet(cfg), tcfg, mnist.data_spec(cfg.n_train), path)
    for (k, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p.half().float(), q) if p.is_floating_point() else torch.equal(p, q), k
    assert info["steps"] == 2 and len(info["loss_curve"]) == 2
    assert info["recorded_command"] == "cmd" and info["command"] == reference.COMMAND.format(name="mnist-ddpm")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_an_altered_or_foreign_file_is_refused(tmp_path, monkeypatch):
    def flip(path):
        data = bytearray(path.read_bytes())
        data[-100] ^= 1
        path.write_bytes(bytes(data))

    cfg, tcfg, _, path = _tiny_reference(tmp_path, monkeypatch, tamper=flip)
    with pytest.raises(ReferenceError, match="altered or replaced"):
        load_reference("mnist-ddpm", make_unet(cfg), tcfg, mnist.data_spec(cfg.n_train), path)
    cfg, tcfg, _, path = _tiny_reference(tmp_path, monkeypatch)
    wider = chapter_settings("05", "ci", base_width=16, train_steps=2)
    with pytest.raises(ReferenceError, match="another architecture"):
        load_reference("mnist-ddpm", make_unet(wider), tcfg, mnist.data_spec(cfg.n_train), path)
    with pytest.raises(ReferenceError, match="another training recipe"):
        load_reference("mnist-ddpm", make_unet(cfg), mnist_ddpm.train_config(wider, conditional=True),
                       mnist.data_spec(cfg.n_train), path)
    with pytest.raises(ReferenceError, match="missing"):
        read_reference("mnist-ddpm", tmp_path / "nothing.pt")


# ---------------------------------------------------------------------------------------
# Chapter 11's spoken-digit reference
# ---------------------------------------------------------------------------------------
def test_shipped_audio_reference_matches_its_pin_and_recipe():
    from diffusion_course.recipes import spoken_digits as ad

    name = "fsdd-logmag"
    path = reference_path(name)
    assert path.exists(), f"{path} is missing: train it with `python -m diffusion_course.recipes.references {name}`"
    assert path.stat().st_size <= 6_000_000 and reference.sha256sum(path) == reference.SHA256[name]
    blob = read_reference(name)
    recipe, cfg = ad.REFERENCE_RECIPES[name], ad.reference_settings(name)
    assert blob["train_config"] == asdict(ad.train_config(cfg)) and blob["data"] == ad.data_spec("logmag")
    assert blob["settings"]["train_steps"] == recipe["overrides"]["train_steps"] == blob["train_steps"]
    assert blob["model_config"].get("positions", False) is recipe["positions"]
    # the command that trained it, recorded in the file under the module's earlier name (the file stays byte-identical)
    assert blob["command"] == f"python -m diffusion_course.reference {name}"
    assert "fsdd-logmag" in references.trainers() and "mnist-ddpm" in references.trainers()


def test_load_audio_model_gives_the_reference_offline(monkeypatch):
    from diffusion_course.recipes.spoken_digits import (load_audio_model, make_model,
                                                        REFERENCE_RECIPES, reference_settings)

    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_DATA_ROOT", "/nonexistent")     # no data needed to load it
    model, info = load_audio_model("ci", "reference")
    recipe = REFERENCE_RECIPES["fsdd-logmag"]
    assert model.config == make_model(reference_settings(), positions=recipe["positions"]).config
    assert info["source"] == "reference" and info["guidance"] == recipe["guidance"] and not model.training
    again, _ = load_audio_model("cpu", "reference")            # one file, whatever the profile
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    x = torch.randn(2, 129, 128)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 900]), torch.tensor([3, 10]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="allowed: reference, student"):
        load_audio_model("ci", "mine")
    with pytest.raises(ValueError, match="apply to model='student' only"):
        load_audio_model("ci", "reference", train_steps=10)
