"""Class conditioning and classifier-free guidance: the null label, label dropout, the
guidance formula at w = 0 and w = 1, determinism, and that guidance sharpens classes."""
import pytest
import torch

from diffusion_course.diffusion.sampling import guidance_weights, predict, sample, sdedit
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.models.toy2d import MixtureDenoiser
from diffusion_course.training.loop import train, TrainConfig
from diffusion_course.models.unet import UNet


class CondMixture(torch.nn.Module):
    """The exact class-conditional eps-predictor for a mixture of k Gaussians whose label is
    the mode: label j -> E[eps | x_t, mode j], the null label k -> E[eps | x_t] of the whole
    mixture. A perfectly trained conditional model with label dropout is exactly this."""

    def __init__(self, centers, std, schedule):
        super().__init__()
        self.num_classes = len(centers)
        self.uncond = MixtureDenoiser(centers, std, schedule)
        self.per_class = torch.nn.ModuleList(MixtureDenoiser(centers[j:j + 1], std, schedule)
                                             for j in range(len(centers)))

    def forward(self, x, t, labels=None):
        t = torch.as_tensor(t).long().reshape(-1).expand(x.shape[0])
        if labels is None:
            labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long)
        out = self.uncond(x, t)
        for j, m in enumerate(self.per_class):
            sel = labels == j
            if sel.any():
                out[sel] = m(x[sel], t[sel])
        return out


SCHEDULE = NoiseSchedule.make("linear", 1000)
CENTERS = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
STD = 0.8  # the two modes overlap: the exact conditional puts ~11% of draws nearer the other centre


def toy():
    return CondMixture(CENTERS, STD, SCHEDULE)


def coefs(t):
    ab = SCHEDULE.alpha_bars[t]
    return ab.sqrt().float(), (1 - ab).sqrt().float()


def random_unet(num_classes=3, seed=0):
    torch.manual_seed(seed)
    net = UNet(base=8, mults=(1, 2), attention_levels=(1,), num_classes=num_classes)
    with torch.no_grad():  # the zero-initialised layers would make every output 0
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_w0_is_the_unconditional_branch_and_w1_the_conditional_one_exactly(kind):
    model = toy()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    null = torch.full_like(y, 2)
    for t in (5, 300, 900):
        a, s = coefs(t)
        for clip in (False, True):
            w0 = predict(model, x, t, kind, a, s, y, guidance=0.0, clip_x0=clip)
            un = predict(model, x, t, kind, a, s, null, clip_x0=clip)
            w1 = predict(model, x, t, kind, a, s, y, guidance=1.0, clip_x0=clip)
            co = predict(model, x, t, kind, a, s, y, clip_x0=clip)
            assert all(torch.equal(p, q) for p, q in zip(w0, un))
            assert all(torch.equal(p, q) for p, q in zip(w1, co))
            assert not torch.equal(w0[0], w1[0])  # the two branches do differ


def test_guidance_extrapolates_from_the_unconditional_to_the_conditional_output():
    model = random_unet()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 28, 28, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a, s = coefs(400)
    with torch.no_grad():
        cond = model(x, torch.full((6,), 400), y)
        uncond = model(x, torch.full((6,), 400))
        for w in (0.0, 0.5, 1.0, 3.0):
            _, eps = predict(model, x, 400, "eps", a, s, y, guidance=w, clip_x0=False)
            # eps = eps_uncond + w (eps_cond - eps_uncond); the batched call may round differently
            torch.testing.assert_close(eps, uncond + w * (cond - uncond), atol=1e-5, rtol=1e-5)
        assert (cond - uncond).abs().mean() > 1e-3  # the label does change the output


def test_null_label_is_the_same_as_no_label():
    model = random_unet(num_classes=3)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 10, 500, 1000])
    with torch.no_grad():
        assert torch.equal(model(x, t, torch.full((4,), 3)), model(x, t))
        assert not torch.equal(model(x, t, torch.zeros(4, dtype=torch.long)), model(x, t))


def test_guided_sampling_is_bit_identical_under_a_seed():
    model = random_unet()
    y = torch.tensor([0, 1, 2, 1])
    runs = [sample(model, (4, 1, 28, 28), SCHEDULE, steps=8, eta=1.0, labels=y, guidance=2.0,
                   generator=torch.Generator().manual_seed(seed)).x0 for seed in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_guidance_needs_labels_and_a_conditional_model():
    x = torch.randn(3, 2)
    a, s = coefs(10)
    with pytest.raises(ValueError, match="guidance needs labels"):
        predict(toy(), x, 10, "eps", a, s, None, guidance=2.0)
    with pytest.raises(ValueError, match="class-conditional model"):
        predict(MixtureDenoiser(CENTERS, STD, SCHEDULE), x, 10, "eps", a, s, torch.zeros(3, dtype=torch.long), 2.0)
    with pytest.raises(ValueError, match=r"integers in 0..2"):
        predict(toy(), x, 10, "eps", a, s, torch.tensor([0, 1, 3]), guidance=2.0)
    assert guidance_weights("0, 0.5,2") == [0.0, 0.5, 2.0]
    for bad in ("", "a,b", "1,-2"):
        with pytest.raises(ValueError, match="comma-separated numbers >= 0"):
            guidance_weights(bad)


class LabelSpy(torch.nn.Module):
    """Records every label batch the training loop passes to the model."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x, t, labels=None):
        self.seen.append((x.detach().clone(), labels.clone()))
        return self.w * x


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_label_dropout_replaces_labels_at_the_configured_rate(p):
    n_cls, steps, batch = 5, 200, 64
    labels = torch.arange(500) % n_cls
    images = torch.zeros(500, 1, 2, 2)
    spy = LabelSpy(n_cls)
    train(spy, images, TrainConfig(steps=steps, batch_size=batch, warmup=1, label_dropout=p, T=100),
          labels, progress=False)
    seen = torch.cat([y for _, y in spy.seen])
    dropped = seen == n_cls
    rate, sd = dropped.double().mean().item(), (p * (1 - p) / seen.numel()) ** 0.5
    assert abs(rate - p) < 4 * sd, (rate, p)
    # a kept label is the label of the image it came with: replay the loop's generator (seed 0,
    # same draw order: batch indices, dropout, the loss's t and eps) to recover the indices
    g = torch.Generator().manual_seed(0)
    kept_ok = 0
    for _, y in spy.seen:
        idx = torch.randint(0, len(images), (batch,), generator=g)
        torch.rand(batch, generator=g)                      # the dropout draw
        torch.randint(1, 101, (batch,), generator=g)        # the loss's t
        torch.randn((batch, 1, 2, 2), generator=g)          # the loss's eps
        keep = y != n_cls
        kept_ok += int(torch.equal(y[keep], labels[idx][keep]))
    assert kept_ok == steps
    # without dropout no label is ever replaced
    spy0 = LabelSpy(n_cls)
    train(spy0, images, TrainConfig(steps=20, batch_size=batch, warmup=1, T=100), labels, progress=False)
    assert all((y < n_cls).all() for _, y in spy0.seen)


def nearest_centre(x):
    return torch.cdist(x.double(), CENTERS.double()).argmin(1)


def test_guidance_increases_class_agreement_on_a_two_mode_mixture():
    """Exact denoisers, overlapping modes: the unconditional model ignores the label (about
    50 % agreement), the conditional one (w = 1) reproduces the class's Gaussian (about 89 %
    of draws nearer its own centre: Phi(1 / 0.8)), and w > 1 pushes draws away from the other
    class: agreement rises further."""
    n = 2000
    y = torch.arange(n) % 2
    agreement, means = {}, {}
    for w in (0.0, 1.0, 3.0):
        x = sample(toy(), (n, 2), SCHEDULE, steps=100, eta=0.0, clip_x0=False, labels=y, guidance=w,
                   generator=torch.Generator().manual_seed(0)).x0
        agreement[w] = (nearest_centre(x) == y).double().mean().item()
        means[w] = x[y == 1].mean(0)
    assert abs(agreement[0.0] - 0.5) < 0.05, agreement
    phi = 0.5 * (1 + torch.erf(torch.tensor(1 / STD / 2**0.5))).item()  # P(N(c_j, std) nearer c_j)
    assert abs(agreement[1.0] - phi) < 0.03, (agreement, phi)
    assert agreement[3.0] > agreement[1.0] + 0.04, agreement
    # w = 1 samples the class's own Gaussian: its mean is the centre (MC error ~ 0.8 / sqrt(1000))
    assert (means[1.0] - CENTERS[1]).abs().max() < 0.1, means[1.0]
    assert means[3.0][0] > means[1.0][0] + 0.1  # guidance pushes class 1 away from class 0


def test_sdedit_with_a_label_moves_towards_the_class():
    """SDEdit from the other class's centre with a label: at small t0 the point stays, at large
    t0 it ends near the requested class."""
    n = 500
    x0 = CENTERS[0].expand(n, 2).clone()
    y = torch.ones(n, dtype=torch.long)
    out = {t0: sdedit(toy(), x0, t0, SCHEDULE, steps=50, clip_x0=False, labels=y, guidance=1.0,
                      generator=torch.Generator().manual_seed(3)).x0 for t0 in (10, 950)}
    assert (out[10] - x0).norm(dim=1).mean() < 0.2
    assert (nearest_centre(out[950]) == 1).double().mean() > 0.8


def test_cond_train_config_is_the_chapter05_recipe_with_label_dropout():
    from dataclasses import asdict

    from diffusion_course.recipes.mnist_ddpm import LABEL_DROPOUT, train_config
    from diffusion_course.course.settings import chapter_settings

    cfg = chapter_settings("05", "cpu")
    base, cond = asdict(train_config(cfg)), asdict(train_config(cfg, conditional=True))
    assert cond.pop("label_dropout") == LABEL_DROPOUT and 0 < LABEL_DROPOUT < 1
    assert base.pop("label_dropout") == 0.0
    assert cond == base


def test_conditional_mnist_model_trains_and_is_cached(real_data_root, tmp_path, monkeypatch):
    from diffusion_course.recipes.mnist_ddpm import load_mnist_model

    monkeypatch.setenv("COURSE_DATA_ROOT", str(real_data_root))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    small = dict(n_train=256, train_steps=3, batch_size=8, base_width=8)
    model, info = load_mnist_model("ci", "student", conditional=True, progress=False, **small)
    assert info["trained_now"] and info["complete"] and model.num_classes == 10
    assert info["source"] == "student" and info["train_config"].label_dropout > 0
    assert [p.name.split("-")[:2] for p in tmp_path.glob("*.pt")] == [["mnist", "cond"]]
    again, info2 = load_mnist_model("ci", "student", conditional=True, progress=False, **small)
    assert not info2["trained_now"]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x, torch.tensor([3, 3]), torch.tensor([1, 2])),
                           model(x, torch.tensor([3, 3]), torch.tensor([1, 2])))
