"""The few-step samplers of the reference model (``recipes.few_step``): the shipped distilled
students match their pins and recipes and load offline; every method spends the calls it says."""
from dataclasses import asdict

import pytest
import torch

from diffusion_course.data import mnist
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.recipes import few_step, references
from diffusion_course.training import references as reference


@pytest.mark.parametrize("name", sorted(few_step.SHIPPED))
def test_shipped_student_matches_its_pin_and_recipe(name):
    path = reference.reference_path(name)
    assert path.exists(), f"{path} is missing: train it with `python -m diffusion_course.recipes.references {name}`"
    assert path.stat().st_size <= 2_000_000 and reference.sha256sum(path) == reference.SHA256[name]
    blob = reference.read_reference(name)                    # torch.load(weights_only=True) inside
    method, steps = few_step.SHIPPED[name]
    recipe = few_step.RECIPES["cpu"]
    want_steps = recipe["consistency_steps"] if method == "consistency" else recipe["round_steps"][steps]
    assert blob["train_config"] == asdict(few_step.distill_config(want_steps)) and blob["train_steps"] == want_steps
    assert blob["data"] == mnist.data_spec(recipe["n_train"]) and blob["command"] == reference.COMMAND.format(name=name)
    assert all(v.dtype == torch.float16 for v in blob["weights"].values() if v.is_floating_point())
    assert name in references.trainers()


def test_distilled_models_load_offline_and_bad_names_say_what_is_allowed(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_DATA_ROOT", "/nonexistent")     # no data needed to load them
    net, info = few_step.distilled_model("mnist-pd-1")
    assert info["source"] == "reference" and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="allowed: mnist-cd"):
        few_step.distilled_model("mnist-pd-3")
    with pytest.raises(ValueError, match="'reference' or 'student'"):
        few_step.distilled_model("mnist-cd", model="mine")


def test_every_method_spends_the_calls_it_says():
    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x, t):
            self.calls += 1
            return torch.zeros_like(x)

    from diffusion_course.training.loop import TrainConfig
    tcfg = TrainConfig(kind="v", precision="fp32")
    teacher = Counting()
    students = {"pd": {4: Counting()}, "cd": Counting()}
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for method, calls in (("ddim", 4), ("dpm2m", 4), ("dpm2m-karras", 4), ("heun", 5), ("dpm2m-sde", 4)):
        teacher.calls = 0
        few_step.generate_at(method, calls, x_T, teacher, tcfg, students, torch.Generator().manual_seed(1))
        assert teacher.calls == calls, (method, teacher.calls)
    few_step.generate_at("pd", 4, x_T, teacher, tcfg, students)
    few_step.generate_at("cd", 4, x_T, teacher, tcfg, students, torch.Generator().manual_seed(1))
    assert students["pd"][4].calls == 4 and students["cd"].calls == 4
    assert not few_step.supports("heun", 4) and not few_step.supports("pd", 2, students)
    with pytest.raises(ValueError, match="cannot spend 4 network calls"):
        few_step.generate_at("heun", 4, x_T, teacher, tcfg, students)


def test_consistency_grid_rises_evenly_in_log_snr():
    grid = few_step.consistency_grid()
    assert grid[0] == 0 and grid[-1] == 1000 and grid == sorted(set(grid))
    lam = 0.5 * (NoiseSchedule.make("linear", 1000).alpha_bars[torch.tensor(grid[1:])].log()
                 - (1 - NoiseSchedule.make("linear", 1000).alpha_bars[torch.tensor(grid[1:])]).log())
    assert (lam.diff() < 0).all()
