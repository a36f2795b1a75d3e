import hashlib

import pytest
import torch

from diffusion_course.models.unet import count_parameters, timestep_embedding, UNet, UNetTrunk
from diffusion_course.models.unet1d import UNet1d


@pytest.mark.parametrize("config", [
    dict(base=8, mults=(1, 2, 2), attention_levels=(2,)),
    dict(base=8, mults=(1, 2), blocks_per_level=2, attention_levels=()),
    dict(base=8, mults=(1, 2), patch=2, attention_levels=(1,)),
    dict(base=8, mults=(1, 2, 2), num_classes=10),
])
def test_output_shape_and_zero_init(config):
    model = UNet(**config)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([1, 500, 1000])
    labels = torch.tensor([0, 9, 10]) if config.get("num_classes") else None
    out = model(x, t, labels)
    assert out.shape == x.shape
    assert torch.all(out == 0), "the zero-initialised head makes the untrained net predict 0"
    assert count_parameters(model) > 0


def test_labels_change_the_output_once_trained_weights_are_nonzero():
    torch.manual_seed(0)
    model = UNet(base=8, mults=(1, 2), num_classes=10)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 10])
    assert not torch.allclose(model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([2, 2])))


def test_bad_image_size_is_explained():
    with pytest.raises(ValueError, match="divisible by patch"):
        UNet(base=8, mults=(1, 2, 2), patch=2)(torch.randn(1, 1, 28, 28), torch.tensor([1]))


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    assert (emb.abs() <= 1).all()


def test_state_dict_layout_is_pinned():
    """Shipped reference checkpoints and every cached model load by these names and shapes,
    and the cache key hashes this config: a change here must be deliberate (a new layout, the
    references re-exported), never a side effect of a refactor."""
    model = UNet(base=32, mults=(1, 2, 2), patch=2, num_classes=10, attention_levels=(1, 2))
    assert list(model.config.items()) == [
        ("in_channels", 1), ("base", 32), ("mults", (1, 2, 2)), ("patch", 2), ("blocks_per_level", 1),
        ("attention_levels", (1, 2)), ("dropout", 0.0), ("num_classes", 10)]
    lines = [f"{k}:{list(v.shape)}" for k, v in model.state_dict().items()]  # in state_dict order
    assert len(lines) == 185
    assert lines[:3] == ["time_mlp.0.weight:[128, 32]", "time_mlp.0.bias:[128]", "time_mlp.2.weight:[128, 128]"]
    assert "down.1.0.attn.qkv.weight:[192, 64, 1, 1]" in lines and lines[-1] == "head.2.bias:[4]"
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert digest == "f91aab0253e6f5269dcba8cc7e195d17dd9f5b5293b1523228c52595fa431226", "\n".join(lines)


def test_2d_and_1d_unets_share_one_trunk_builder():
    """UNet and UNet1d get embedding, trunk and its forward from UNetTrunk: for the same widths
    the 1-D trunk has the same modules and names, each convolution one kernel dimension less."""
    for name in ("_build_embedding", "_build_trunk", "embed", "_trunk"):
        assert getattr(UNet, name) is getattr(UNet1d, name) is getattr(UNetTrunk, name), name
    kw = dict(base=8, mults=(1, 2, 2), blocks_per_level=2, attention_levels=(1, 2), num_classes=10)
    two, one = UNet(**kw).state_dict(), UNet1d(in_channels=3, **kw).state_dict()
    trunk = ("time_mlp.", "label_emb.", "down.", "downsample.", "mid1.", "mid_attn.", "mid2.", "up.", "upsample.")
    shared2 = {k: v.shape for k, v in two.items() if k.startswith(trunk)}
    shared1 = {k: v.shape for k, v in one.items() if k.startswith(trunk)}
    assert list(shared2) == list(shared1) and len(shared2) > 100
    for k, s2 in shared2.items():  # [out, in, 3, 3] in 2-D is [out, in, 3] in 1-D
        s1 = shared1[k]
        assert s2[:2] == s1[:2] and tuple(s2[2:]) == tuple(s1[2:]) * 2, (k, s2, s1)
    # the trunk's forward is the same code on either: stem output in, head input out
    net2, net1, emb = UNet(**kw), UNet1d(in_channels=3, **kw), torch.randn(2, 4 * 8)
    assert net2._trunk(torch.randn(2, 8, 28, 28), emb).shape == (2, 8, 28, 28)
    assert net1._trunk(torch.randn(2, 8, 40), emb).shape == (2, 8, 40)
