import pytest
import torch

from diffusion_course.unet import UNet, count_parameters, timestep_embedding


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
