"""The 1-D U-Net of chapter 11 (shapes, labels, every stem, v_from_x0) on the shared trunk."""
import pytest
import torch

from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.training.cache import cache_key
from diffusion_course.models.unet1d import UNet1d

STRIDED = dict(stem="strided", stem_kernel=16, stem_stride=8, stem_channels=8)


@pytest.mark.parametrize("kwargs, channels, factor", [
    (dict(stem="conv"), 6, 4), (dict(stem="patch", patch=8), 2, 32), (STRIDED, 1, 32)])
def test_every_stem_with_labels_and_v_from_x0(kwargs, channels, factor):
    """Each stem keeps the shape, labels matter (None = the null label 10), and the output is
    the v of the head's x0_hat: x0 = a_t x_t - s_t v gives x0_hat back (module docstring)."""
    torch.manual_seed(0)
    net = UNet1d(in_channels=channels, base=8, num_classes=10, v_from_x0="angle", schedule_T=100, **kwargs)
    assert net.length_factor == factor
    for p in net.parameters():  # zero-initialised layers would hide the label's effect
        torch.nn.init.normal_(p, std=0.05)
    x, t, labels = torch.randn(2, channels, 2 * factor), torch.tensor([1, 70]), torch.tensor([3, 10])
    v = net(x, t, labels)
    assert v.shape == x.shape
    assert not torch.allclose(v, net(x, t, torch.tensor([4, 5])))
    assert torch.allclose(net(x, t), net(x, t, torch.full((2,), 10)))
    ab = NoiseSchedule.make("angle", 100).alpha_bars[t]  # float64: 1 - abar_t is tiny at t = 1
    a, s = ab.sqrt().float()[:, None, None], (1 - ab).sqrt().float()[:, None, None]  # a_t, s_t
    net.config["v_from_x0"] = None  # the head's own output: x0_hat
    x0_hat = net(x, t, labels)
    net.config["v_from_x0"] = "angle"
    assert torch.allclose(a * x - s * v, x0_hat, atol=1e-5)


def test_errors_are_unchanged():
    net = UNet1d(in_channels=2, base=8, **STRIDED)
    with pytest.raises(ValueError, match=r"expected x of shape \[B, 2, L\]"):
        net(torch.randn(1, 3, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match="length 48 must be a multiple of 32"):
        net(torch.randn(1, 2, 48), torch.tensor([1]))
    with pytest.raises(ValueError, match="allowed: conv, patch, strided"):
        UNet1d(stem="fft")
    with pytest.raises(ValueError, match="even difference"):
        UNet1d(stem="strided", stem_kernel=15, stem_stride=8)
    with pytest.raises(ValueError, match="only used with stem='patch'"):
        UNet1d(stem="conv", patch=4)


def test_layout_marker_keeps_old_checkpoints_out():
    """The trunk's blocks are unet.Block (.res / .attn) since layout 2; the marker in the config
    changes the cache key, so a checkpoint of the old layout (.0 / .1) is never looked up."""
    net = UNet1d(in_channels=3, base=8, attention_levels=(2,))
    assert net.config["layout"] == 2
    keys = list(net.state_dict())
    assert "down.0.0.res.conv1.weight" in keys and "up.0.0.attn.qkv.weight" in keys
    assert not any(".0.0.0." in k or ".0.0.1." in k for k in keys)
    old_config = {k: v for k, v in net.config.items() if k != "layout"}
    assert cache_key(net.config) != cache_key(old_config)


def test_positions_tell_the_network_where_it_is():
    """Fed the same frame at every position, the plain U-Net answers the same in the middle of
    the window (convolutions and attention do not know where they are; only the ends differ,
    through the zero padding); with positions it answers differently at each position."""
    def net_for(positions):
        torch.manual_seed(0)
        net = UNet1d(in_channels=3, base=8, num_classes=10, positions=positions).eval()
        torch.nn.init.normal_(net.head[-1].weight, std=0.1)      # the zero-initialised head would hide it
        return net

    x, t = torch.randn(1, 3, 1).expand(1, 3, 128).contiguous(), torch.tensor([300])
    plain, placed = net_for(False), net_for(True)
    assert "positions" not in plain.config and placed.config["positions"] is True
    with torch.no_grad():
        a, b = plain(x, t)[0], placed(x, t)[0]
    assert torch.allclose(a[:, 48], a[:, 80], atol=1e-5)               # blind to where it is
    assert not torch.allclose(b[:, 48], b[:, 80], atol=1e-3)           # knows where it is
    assert cache_key(plain.config) != cache_key(placed.config)
