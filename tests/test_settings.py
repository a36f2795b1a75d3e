import pytest
import torch

from diffusion_course.course import settings
from diffusion_course.course.settings import chapter_settings, resolve_profile
from diffusion_course.training.device import pick_device


def test_explicit_profiles_used_as_given(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    assert resolve_profile("cpu") == "cpu" and resolve_profile("GPU") == "gpu"


def test_auto_defers_to_env_then_device(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "ci")
    assert resolve_profile("auto") == "ci"
    monkeypatch.delenv("COURSE_PROFILE")
    monkeypatch.setattr(settings, "accelerator_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto") == "cpu" and capsys.readouterr().out == ""
    monkeypatch.setattr(settings, "accelerator_available", lambda: True)     # an Apple GPU (MPS)
    assert resolve_profile("auto") == "cpu" and "MPS" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)            # CUDA
    assert resolve_profile("auto") == "gpu"


def test_bf16_is_auto_only_where_the_hardware_does_it(monkeypatch):
    """A T4 (compute capability 7.5) only emulates bfloat16, slower than float32: auto keeps
    float32 there; an A100 (8.0) gets bf16."""
    from diffusion_course.training import device as dev

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, expected in (((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert dev.resolve_precision("auto", "cuda") == expected, capability


def test_unknown_profile_lists_allowed(monkeypatch):
    with pytest.raises(ValueError, match="allowed: auto, ci, cpu, gpu"):
        resolve_profile("fast")
    monkeypatch.setenv("COURSE_PROFILE", "turbo")
    with pytest.raises(ValueError, match="allowed: ci, cpu, gpu"):
        resolve_profile("auto")


def test_chapter_settings_defaults_and_overrides():
    cfg = chapter_settings("02", "ci")
    assert cfg.profile == "ci" and cfg.n_draws == settings.CHAPTERS["02"]["n_draws"].ci
    cfg = chapter_settings("02_forward_process", "cpu", n_draws=500, schedule=None, T=100)
    assert cfg.n_draws == 500 and cfg.T == 100 and cfg.schedule == "linear"
    assert cfg["T"] == 100 and cfg.as_dict()["profile"] == "cpu"
    assert chapter_settings(2, "gpu").n_draws == settings.CHAPTERS["02"]["n_draws"].gpu


def test_unknown_knob_lists_allowed():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'steps'.*allowed: seed, n_draws"):
        chapter_settings("02", "ci", steps=3)


@pytest.mark.parametrize("knob,value,expect", [
    ("schedule", "sigmoid", "one of 'linear', 'scaled_linear', 'cosine'"),
    ("T", 1, r"int >= 2"),
    ("T", 2.5, r"int >= 2"),
    ("T", True, r"int >= 2"),
    ("digit_index", 10_000, r"int in \[0, 9999\]"),
])
def test_bad_values_list_allowed(knob, value, expect):
    with pytest.raises(ValueError, match=expect):
        chapter_settings("02", "ci", **{knob: value})


def test_unknown_chapter_and_settings_are_read_only():
    with pytest.raises(ValueError, match="unknown chapter"):
        chapter_settings("99", "ci")
    cfg = chapter_settings("01", "ci")
    with pytest.raises(TypeError):
        cfg._values["seed"] = 3
    with pytest.raises(AttributeError, match="has no setting"):
        cfg.nope


def test_every_knob_default_is_valid_in_every_profile():
    for chapter, knobs in settings.CHAPTERS.items():
        for profile in settings.PROFILES:
            chapter_settings(chapter, profile)


def test_pick_device(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="allowed: cpu, cuda, mps"):
        pick_device("tpu")


def test_runner_overrides_reach_every_caller_of_a_chapter(monkeypatch):
    import json

    monkeypatch.setenv(settings.OVERRIDES_ENV, json.dumps({"05": {"TRAIN_STEPS": 3000}, "02": {"T": 50}}))
    assert chapter_settings("05", "cpu").train_steps == 3000          # e.g. chapter 06's student model
    assert chapter_settings("05", "cpu", train_steps=None).train_steps == 3000
    assert chapter_settings("05", "cpu", train_steps=7).train_steps == 7  # the notebook's own value wins
    assert chapter_settings("05", "cpu", runner_overrides=False).train_steps == settings.CHAPTERS["05"]["train_steps"].cpu
    assert chapter_settings("02", "ci").T == 50 and chapter_settings("01", "ci").seed == 0
    monkeypatch.setenv(settings.OVERRIDES_ENV, json.dumps({"05": {"TRAIN_STEPZ": 3}}))
    with pytest.raises(ValueError, match="sets unknown setting 'TRAIN_STEPZ' for chapter 05"):
        chapter_settings("05", "cpu")
    monkeypatch.setenv(settings.OVERRIDES_ENV, "[1, 2]")
    with pytest.raises(ValueError, match="must be JSON like"):
        chapter_settings("05", "cpu")


def test_reference_recipe_ignores_runner_overrides(monkeypatch):
    import json

    from diffusion_course.recipes.mnist_ddpm import REFERENCE_RECIPES, reference_settings

    monkeypatch.setenv(settings.OVERRIDES_ENV, json.dumps({"05": {"TRAIN_STEPS": 3}}))
    cfg = reference_settings("mnist-ddpm")
    assert cfg.train_steps == REFERENCE_RECIPES["mnist-ddpm"]["overrides"]["train_steps"]


def test_one_translation_from_knobs_to_a_train_config():
    from diffusion_course.course.settings import train_config_from

    cfg = chapter_settings("05", "cpu", min_snr_gamma=0.0, precision="fp32", train_steps=500)
    tcfg = train_config_from(cfg, schedule="cosine", T=200)
    assert (tcfg.steps, tcfg.batch_size, tcfg.lr, tcfg.ema_decay, tcfg.kind) == (500, cfg.batch_size, cfg.lr,
                                                                                cfg.ema_decay, cfg.kind)
    assert tcfg.min_snr_gamma is None and tcfg.precision == "fp32" and tcfg.warmup == 50
    assert (tcfg.schedule, tcfg.T, tcfg.lr_decay, tcfg.grad_clip) == ("cosine", 200, "cosine", 1.0)
    # a chapter without a kind knob gets it from the recipe; "auto" precision is resolved
    latent = train_config_from(chapter_settings("10", "ci"), kind="x0")
    assert latent.kind == "x0" and latent.precision in ("fp32", "bf16")
