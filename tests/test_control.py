"""Control and personalisation (chapter 16): LoRA, new labels and ControlNet start as the base
model exactly and train only what they say; the skeleton, the crossbar rule and the structure
agreement do what their definitions say; the shipped ControlNet matches its pin and recipe."""
import copy
from dataclasses import asdict

import pytest
import torch

from diffusion_course.data import mnist
from diffusion_course.data.structure import CROSSBAR_MIN, crossbar, dilate, erode, is_crossed_seven, skeleton
from diffusion_course.evaluation.structure import structure_iou
from diffusion_course.models.control import (ControlNet, LoRA, NewLabels, add_lora, merge_lora,
                                              trainable_parameters, with_structure)
from diffusion_course.models.unet import UNet
from diffusion_course.recipes import control, references
from diffusion_course.training import references as reference


@pytest.fixture(scope="module")
def small_unet():
    torch.manual_seed(0)
    net = UNet(base=8, mults=(1, 2), attention_levels=(1,), num_classes=10, patch=2).eval()
    for p in net.parameters():           # a "trained" net: no zero-initialised layer left at zero
        p.data.normal_(0, 0.05)
    return net


def _inputs(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(1, 1000, (n,), generator=g), torch.arange(n) % 10


def test_lora_starts_as_the_base_and_merges_into_w(small_unet):
    x, t, y = _inputs()
    lora = add_lora(small_unet, 2, targets=r".*conv[12]|.*qkv")
    with torch.no_grad():
        assert torch.equal(lora(x, t, y), small_unet(x, t, y))           # B = 0: exactly the base
    adapters = [m for m in lora.modules() if isinstance(m, LoRA)]
    assert adapters and all(not m.layer.weight.requires_grad for m in adapters)
    # r (c_in k^2 + c_out) per adapter, and nothing else trains
    assert trainable_parameters(lora) == sum(
        m.rank * (m.layer.weight[0].numel() + m.layer.weight.shape[0]) for m in adapters)
    for m in adapters:
        m.B.weight.data.normal_(0, 0.1)
    with torch.no_grad():
        out, merged = lora(x, t, y), merge_lora(lora)(x, t, y)
    assert not torch.allclose(out, small_unet(x, t, y), atol=1e-3)
    assert torch.allclose(out, merged, atol=1e-5)                      # W x + B A x = (W + B A) x
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        add_lora(small_unet, 2, targets="nothing")


def test_shipped_lora_targets_stay_under_five_percent():
    base, _ = control.base_model(progress=False)
    lora = add_lora(base, 4)
    assert 0.04 < trainable_parameters(lora) / sum(p.numel() for p in base.parameters()) <= 0.05


def test_new_label_equals_the_label_it_copies_and_leaves_the_table_alone(small_unet):
    x, t, _ = _inputs()
    model = NewLabels(small_unet, small_unet.label_emb.weight[7])
    new = torch.full((4,), model.new_label())
    assert model.new_label() == 11 and model.num_labels == 12
    with torch.no_grad():
        assert torch.equal(model(x, t, new), small_unet(x, t, torch.full((4,), 7)))
    table = small_unet.label_emb.weight.detach().clone()
    small_unet.requires_grad_(False)
    model.vectors.data.add_(1.0)
    model(x, t, new).square().mean().backward()
    assert model.vectors.grad is not None and model.vectors.grad.abs().sum() > 0
    assert torch.equal(small_unet.label_emb.weight, table)
    small_unet.requires_grad_(True)


def test_controlnet_starts_as_the_base_and_its_zero_convs_move_first(small_unet):
    x, t, _ = _inputs()
    structure = skeleton(mnist.binarise(x))
    cn = ControlNet(copy.deepcopy(small_unet))
    small = cn.base
    with torch.no_grad():
        assert torch.equal(cn(x, t, None, structure), small(x, t))
        assert torch.equal(with_structure(cn, structure)(x, t), small(x, t))
    assert all(not p.requires_grad for p in cn.base.parameters())
    cn(x, t, None, structure).square().mean().backward()
    # the zero convs get a gradient at once (their input, the copy's features, is not zero) ...
    assert all(z.weight.grad.abs().sum() > 0 for z in cn.zero)
    # ... while everything before them gets none yet (their output is multiplied by zero)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in cn.copy.parameters())
    with pytest.raises(ValueError, match="must match the images"):
        with_structure(cn, structure[:2])(x, t)


def test_skeleton_of_a_bar_is_its_middle_line_and_erosion_is_dual_to_dilation():
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 10:15, 4:24] = 1                                          # a bar 5 pixels thick
    skel = skeleton(bar)
    assert skel[..., 12, 6:22].eq(1).all() and skel.sum() < 25        # its middle row, about
    assert (skel <= bar).all()
    mask = (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    inner = torch.ones(2, 1, 28, 28)
    inner[..., 0, :] = inner[..., -1, :] = inner[..., :, 0] = inner[..., :, -1] = 0
    assert torch.equal(erode(mask) * inner, (1 - dilate(1 - mask)) * inner)


def test_crossbar_rule_tells_a_crossed_seven_from_a_plain_one():
    seven = -torch.ones(1, 1, 28, 28)
    seven[..., 5:7, 7:21] = 1                                          # the top bar
    for r in range(7, 24):                                             # the diagonal
        c = 20 - (r - 7) * 10 // 17
        seven[..., r, c - 1:c + 2] = 1
    crossed = seven.clone()
    crossed[..., 14:16, 8:22] = 1                                      # a crossbar in the middle
    x = torch.cat([seven, crossed])
    assert crossbar(x)[0] < CROSSBAR_MIN <= crossbar(x)[1]
    assert is_crossed_seven(x, torch.tensor([7, 7])).tolist() == [False, True]
    assert is_crossed_seven(x, torch.tensor([1, 1])).tolist() == [False, False]


def test_structure_agreement_is_one_for_the_same_skeleton_and_zero_for_disjoint():
    x = -torch.ones(2, 1, 28, 28)
    x[0, 0, 4:20, 8:11] = 1
    x[1, 0, 4:20, 20:23] = 1
    s = skeleton(mnist.binarise(x))
    assert torch.allclose(structure_iou(x, s), torch.ones(2))
    assert torch.equal(structure_iou(x.flip(0), s), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        structure_iou(x, s[:1])


def test_known_pixels_is_a_self_adjoint_mask_that_keeps_the_skeleton():
    x = -torch.ones(1, 1, 28, 28)
    x[0, 0, 4:20, 8:11] = 1
    s = skeleton(mnist.binarise(x))
    physics = control.KnownPixels(s)
    u, v = torch.rand(2, 1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.allclose((physics.A(u) * v).sum(), (u * physics.A_adjoint(v)).sum())
    assert torch.equal(physics.A((x + 1) / 2), physics.y)              # the digit itself fits exactly
    assert physics.mask[0, 0, 12, 10] == 0 and physics.mask[0, 0, 0, 27] == 1   # near: unknown; far: known


def test_personalisation_trains_only_what_it_says():
    base, tcfg = control.base_model(progress=False)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    ti, info = control.textual_inversion(base, tcfg, images, steps=2, batch=4)
    assert info["trainable"] == base.label_emb.embedding_dim
    assert not torch.equal(ti.vectors, base.label_emb.weight[10:11])
    db, info = control.dreambooth(base, tcfg, images, steps=2, batch=4, rank=4,
                                  prior=(images, torch.tensor([0, 1, 2])))
    assert info["trainable"] == trainable_parameters(add_lora(base, 4)) + base.label_emb.embedding_dim
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    with pytest.raises(ValueError, match="allowed: controlnet"):
        control.follow_structure("magic", torch.zeros(1, 1, 28, 28), base, tcfg, 0)


def test_shipped_controlnet_matches_its_pin_recipe_and_frozen_base(monkeypatch):
    name = control.CONTROLNET
    path = reference.reference_path(name)
    assert path.exists(), f"{path} is missing: train it with `python -m diffusion_course.recipes.references {name}`"
    assert path.stat().st_size <= 6_000_000 and reference.sha256sum(path) == reference.SHA256[name]
    blob = reference.read_reference(name)
    recipe = control.CONTROLNET_RECIPES["cpu"]
    assert blob["train_config"] == asdict(control.controlnet_config("cpu")) and blob["train_steps"] == recipe["steps"]
    assert blob["data"] == mnist.data_spec(recipe["n_train"]) and name in references.trainers()
    monkeypatch.setenv("COURSE_DATA_ROOT", "/nonexistent")               # loads offline
    cn, info = control.controlnet_model()
    base, _ = control.base_model(progress=False)
    assert info["source"] == "reference" and not any(p.requires_grad for p in cn.parameters())
    assert all(torch.equal(a, b) for a, b in zip(cn.base.state_dict().values(), base.state_dict().values()))
    assert any(z.weight.abs().sum() > 0 for z in cn.zero)              # trained: the zero convs moved


def test_drift_sets_the_subject_class_apart_and_the_prior_holds_its_class():
    before = {c: {"accuracy": 1.0, "frechet_ratio": 2.0} for c in range(10)}
    after = {**before, 7: {"accuracy": 0.5, "frechet_ratio": 20.0}, 3: {"accuracy": 0.97, "frechet_ratio": 3.0}}
    d = control.drift(before, after)
    assert d["worst_accuracy_points"] == pytest.approx(-3) and d["worst_frechet_factor"] == pytest.approx(1.5)
    assert d["mean_frechet_factor"] == pytest.approx(9.5 / 9) and d["subject_class"]["frechet_factor"] == 10
    base, tcfg = control.base_model(progress=False)
    images, labels = control.prior_images(base, tcfg, 6, seed=0)
    assert images.shape == (6, 1, 28, 28) and labels.tolist() == [7, 7, 7, 0, 1, 2]


def test_a_lora_fine_tune_is_the_same_under_the_same_seed():
    base, tcfg = control.base_model(progress=False)
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    runs = [control.dreambooth(base, tcfg, images, steps=1, batch=2, seed=3, rank=1)[0] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))
