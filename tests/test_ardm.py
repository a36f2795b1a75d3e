"""Order-agnostic autoregressive diffusion (chapter 14): the loss weighting against its
closed form, the unbiasedness of the training estimate by exact enumeration, the exact
likelihood of a model with a known answer, and sampling's network calls and fill order."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_course.data import mnist
from diffusion_course.diffusion import ardm
from diffusion_course.models import ardm as models_ardm
from diffusion_course.recipes import variants


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class FixedLogits(torch.nn.Module):
    """Ignores its input and returns the same logits for every image: its likelihood under
    any order is sum_k log Bernoulli(x_k; sigmoid(l_k)), and it counts its calls."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.calls, self.known_counts = logits.double(), 0, []

    def forward(self, values, known):
        self.calls += 1
        self.known_counts.append(known.flatten(1).sum(1).tolist())
        return self.logits.expand(values.shape[0], *self.logits.shape).to(values.dtype)


class LinearARDM(torch.nn.Module):
    """A tiny model whose predictions do depend on the known pixels: logits = W [values; mask] + b."""

    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        g = gen(seed)
        self.w = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
        self.b = torch.randn(d, generator=g, dtype=torch.float64)

    def forward(self, values, known):
        h = torch.cat([values.flatten(1), known.flatten(1).double()], 1).double()
        return (h @ self.w.T + self.b).reshape(values.shape)


def nll_by_hand(logits, x):
    """-log Bernoulli(x; sigmoid(l)) = softplus(-l) if x = 1 else softplus(l), per pixel."""
    return torch.where(x == 1, F.softplus(-logits), F.softplus(logits))


# ---------------------------------------------------------------------------------------
# Binarisation
# ---------------------------------------------------------------------------------------
def test_threshold_binarisation_is_byte_128_and_up():
    bytes_ = torch.tensor([0, 1, 127, 128, 200, 255], dtype=torch.float32)
    x = bytes_ / 127.5 - 1                                # load_mnist's scaling to [-1, 1]
    assert mnist.binarise(x).tolist() == [0, 0, 0, 1, 1, 1]
    assert mnist.binarise(x, threshold=0.9).tolist() == [0, 0, 0, 0, 0, 1]


def test_bernoulli_binarisation_is_seeded_with_the_intensity_as_probability():
    x = torch.full((200_000,), 0.5)                      # intensity (0.5 + 1) / 2 = 0.75
    a = mnist.binarise(x, "bernoulli", generator=gen(1))
    assert torch.equal(a, mnist.binarise(x, "bernoulli", generator=gen(1)))
    assert a.mean().item() == pytest.approx(0.75, abs=0.005)
    with pytest.raises(ValueError, match="allowed: threshold, bernoulli"):
        mnist.binarise(x, "otsu")


# ---------------------------------------------------------------------------------------
# Masks and the loss
# ---------------------------------------------------------------------------------------
def test_known_mask_is_the_first_t_minus_1_of_the_order():
    order = ardm.random_orders(3, 6, gen(2))
    assert all(sorted(row) == list(range(6)) for row in order.tolist())
    t = torch.tensor([1, 3, 6])
    mask = ardm.known_mask(order, t, (2, 3)).reshape(3, 6)
    for i in range(3):
        assert set(mask[i].nonzero().flatten().tolist()) == set(order[i, :t[i] - 1].tolist())


def test_loss_weighting_equals_the_closed_form():
    """D = 4 pixels, pixel 1 known (t = 2): the term is D / (D - t + 1) = 4/3 times the
    negative log-likelihood of the three unknown pixels, computed here by hand."""
    logits = torch.tensor([[[0.3, -1.2], [2.0, 0.0]]], dtype=torch.float64)
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    known = torch.tensor([[[[False, True], [False, False]]]])
    by_hand = 4 / 3 * (math.log1p(math.exp(-0.3)) + math.log1p(math.exp(2.0)) + math.log(2))
    term = ardm.weighted_unknown_nll(FixedLogits(logits), x, known)
    assert term.item() == pytest.approx(by_hand, rel=1e-12)


def test_fixed_logit_model_loss_is_its_nll_for_every_t_on_average():
    """For a model that ignores its input each unknown pixel is unknown with probability
    (D - t + 1) / D, so the weight D / (D - t + 1) makes E[term | t] the full NLL for every t."""
    logits = torch.randn(1, 3, 3, generator=gen(3), dtype=torch.float64)
    x = (torch.rand(1, 1, 3, 3, generator=gen(4)) < 0.5).double()
    full = nll_by_hand(logits, x[0]).sum().item()
    model = FixedLogits(logits)
    for t in (1, 4, 9):
        _, per = ardm.ardm_loss(model, x.expand(20_000, -1, -1, -1), gen(t), t=torch.full((20_000,), t))
        assert per.mean().item() == pytest.approx(full, rel=0.02)


def test_training_estimate_is_exactly_unbiased_by_enumeration():
    """For any model: averaging the loss term over all D! orders and all t equals averaging
    the exact -log p(x | sigma) over all orders (D = 4, so 24 orders x 4 steps)."""
    d, model = 4, LinearARDM(4, seed=5)
    x = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]], dtype=torch.float64)
    orders = torch.tensor(list(itertools.permutations(range(d))))
    terms, exact = [], []
    for order in orders:
        exact.append(ardm.exact_nll(model, x, order).item())
        for t in range(1, d + 1):
            known = ardm.known_mask(order[None], torch.tensor([t]), (1, 2, 2))
            terms.append(ardm.weighted_unknown_nll(model, x, known).item())
    assert sum(terms) / len(terms) == pytest.approx(sum(exact) / len(exact), rel=1e-12)
    assert max(exact) - min(exact) > 0.1        # the model's likelihood does depend on the order


def test_exact_nll_of_a_fixed_logit_model_by_d_calls():
    """28 x 28: D = 784 sequential calls, the closed-form sum, the same for every order, and
    bits per dimension = nats / (784 ln 2)."""
    logits = torch.randn(1, 28, 28, generator=gen(6), dtype=torch.float64)
    x = (torch.rand(2, 1, 28, 28, generator=gen(7)) < 0.3).double()
    closed = nll_by_hand(logits, x).flatten(1).sum(1)
    model = FixedLogits(logits)
    raster = ardm.exact_nll(model, x, torch.arange(784))
    assert model.calls == 784
    assert model.known_counts[:3] == [[0, 0], [1, 1], [2, 2]] and model.known_counts[-1] == [783, 783]
    shuffled = ardm.exact_nll(model, x, generator=gen(8))
    assert torch.allclose(raster, closed, rtol=1e-12) and torch.allclose(shuffled, closed, rtol=1e-12)
    assert ardm.bits_per_dim(raster, 784) == pytest.approx((closed / (784 * math.log(2))).tolist())


def test_exact_nll_in_batches_gives_the_sequential_numbers():
    """For a fixed order the D contexts are part of the data: masked copies in batches of any
    size give the D sequential calls' likelihood, per image, for one order or one per image."""
    model = LinearARDM(9, seed=3)
    x = (torch.rand(3, 1, 3, 3, generator=gen(11)) < 0.5).double()
    orders = torch.stack([torch.randperm(9, generator=gen(12 + i)) for i in range(3)])
    for order in (orders, torch.arange(9)):
        sequential = ardm.exact_nll(model, x, order)
        for batch in (1, 4, 9, 100):
            assert torch.allclose(ardm.exact_nll(model, x, order, batch=batch), sequential, rtol=1e-12)
    assert not torch.allclose(ardm.exact_nll(model, x, orders), ardm.exact_nll(model, x, orders.flip(1)))
    with pytest.raises(ValueError, match="batch"):
        ardm.exact_nll(model, x, orders, batch=0)


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("group,calls", [(1, 784), (4, 196), (16, 49), (100, 8), (784, 1)])
def test_sampling_calls_and_every_pixel_filled_once(group, calls):
    model = FixedLogits(torch.zeros(1, 28, 28))
    out = ardm.sample(model, 3, group=group, generator=gen(9))
    assert out.calls == calls == model.calls == math.ceil(784 / group)
    assert out.images.shape == (3, 1, 28, 28) and set(out.images.unique().tolist()) <= {0.0, 1.0}
    filled = out.filled_at.flatten(1)
    assert (filled >= 0).all()
    for row in filled:                          # call i fills exactly `group` pixels (the last one the rest)
        counts = torch.bincount(row, minlength=calls).tolist()
        assert counts == [group] * (784 // group) + ([784 % group] if 784 % group else [])
    # the network saw the known set grow by `group` pixels per call
    assert [c[0] for c in model.known_counts] == [min(784, i * group) for i in range(calls)]


def test_sampling_follows_the_given_order_and_is_deterministic():
    model = FixedLogits(torch.zeros(1, 2, 3))
    order = torch.tensor([5, 0, 3, 1, 4, 2])
    out = ardm.sample(model, 2, (1, 2, 3), group=2, order=order, generator=gen(1))
    assert out.filled_at.flatten(1)[0].tolist() == [0, 1, 2, 1, 2, 0]
    again = ardm.sample(model, 2, (1, 2, 3), group=2, order=order, generator=gen(1))
    assert torch.equal(out.images, again.images)
    a, b = (ardm.sample(model, 50, (1, 2, 3), generator=gen(s)).images for s in (2, 2))
    assert torch.equal(a, b)


@pytest.mark.parametrize("group", [1, 6])
def test_samples_have_the_models_probabilities(group):
    """A fixed-logit model's pixels are independent, so even grouped sampling is exact:
    pixel k is 1 with probability sigmoid(l_k)."""
    logits = torch.tensor([[[-2.0, 0.0, 1.0], [3.0, -0.5, 20.0]]])
    out = ardm.sample(FixedLogits(logits), 20_000, (1, 2, 3), group=group, generator=gen(3))
    assert torch.allclose(out.images.mean(0), torch.sigmoid(logits), atol=0.015)


def test_bad_group():
    with pytest.raises(ValueError, match=r"group .* must be an int in 1..784"):
        ardm.sample(FixedLogits(torch.zeros(1, 28, 28)), 1, group=0)


# ---------------------------------------------------------------------------------------
# The network and a few training steps
# ---------------------------------------------------------------------------------------
def test_ardm_net_starts_at_one_bit_per_pixel_and_never_sees_unknown_pixels():
    torch.manual_seed(0)
    net = models_ardm.ARDMNet(base=8, mults=(1, 2), attention_levels=(), size=8)
    x = (torch.rand(4, 1, 8, 8, generator=gen(1)) < 0.4).float()
    loss, _ = ardm.ardm_loss(net, x, gen(2))
    assert ardm.bits_per_dim(loss.item(), 64) == pytest.approx(1.0, abs=1e-6)   # all logits 0 at first
    torch.nn.init.normal_(net.head[-1].weight, std=0.1)
    known = torch.rand(4, 1, 8, 8, generator=gen(3)) < 0.5
    garbage = torch.where(known, x, torch.rand(4, 1, 8, 8, generator=gen(4)).round())
    with torch.no_grad():
        assert torch.allclose(net(x, known), net(garbage, known))
        assert net(x, known).shape == (4, 1, 8, 8)
        assert not torch.allclose(net(x, known), net(x, torch.zeros_like(known)))


def test_training_lowers_the_loss_below_one_bit():
    """Two stripes patterns with a little pixel noise: a tiny ARDM learns them in 40 steps."""
    g = gen(0)
    stripes = torch.zeros(2, 1, 8, 8)
    stripes[0, :, ::2], stripes[1, :, :, ::2] = 1, 1
    data = stripes[torch.randint(0, 2, (256,), generator=g)]
    data = torch.where(torch.rand(data.shape, generator=g) < 0.03, 1 - data, data)
    torch.manual_seed(0)
    net = models_ardm.ARDMNet(base=8, mults=(1, 2), attention_levels=(), size=8)
    run = variants.train_ardm(net, data, steps=40, batch_size=32, lr=3e-3, progress=False)
    assert len(run.losses) == 40 and run.losses[0] == pytest.approx(1.0, abs=1e-6)
    assert sum(run.losses[-10:]) / 10 < 0.6
