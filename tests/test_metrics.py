import numpy as np
import pytest
import torch

from diffusion_course.evaluation.frechet import frechet_distance, frechet_from_features, sqrtm_psd


def test_frechet_of_a_set_with_itself_is_zero():
    f = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_from_features(f, f) == pytest.approx(0.0, abs=1e-8)


def test_frechet_matches_closed_form_on_gaussians():
    # Commuting covariances: FD = |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)
    mu1, mu2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    expected = 5.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected)
    # Non-commuting case against scipy's general matrix square root.
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    c1, c2 = A @ A.T + 0.1 * torch.eye(5, dtype=torch.float64), B @ B.T + 0.1 * torch.eye(5, dtype=torch.float64)
    ref = np.trace(c1.numpy() + c2.numpy() - 2 * scipy_linalg.sqrtm(c1.numpy() @ c2.numpy()).real)
    assert frechet_distance(mu1[:0].new_zeros(5), c1, mu1.new_zeros(5), c2) == pytest.approx(ref, rel=1e-6)


def test_frechet_converges_to_truth_with_samples():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20_000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(20_000, 4, generator=g, dtype=torch.float64) * 2 + 1
    # Truth: |mu|^2 = 4, traces: 4 + 16 - 2 * 8 = 4.
    assert frechet_from_features(x, y) == pytest.approx(8.0, rel=0.03)


def test_sqrtm_psd_squares_back():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 3, generator=g, dtype=torch.float64)
    m = a @ a.T  # rank 3: singular, where careless square roots go complex
    r = sqrtm_psd(m)
    assert torch.allclose(r @ r, m, atol=1e-8) and torch.allclose(r, r.T)


# --- chapter 06: the careless route, pixel Wasserstein, sample-size bias, report card ------
from diffusion_course.models.classifier import ImageClassifier as ImageClassifier
from diffusion_course.evaluation.judge import (accuracy, classify, evaluate_samples, frechet_floor,
                                               judge_real)
from diffusion_course.evaluation.frechet import (frechet_naive_from_features, gaussian_stats,
                                                 pixel_wasserstein)


def _relu_features(n, d, seed):
    """Non-negative, correlated features like the classifier's ReLU layer."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.relu(torch.randn(n, d, generator=g, dtype=torch.float64) @ mix)


def test_naive_route_goes_complex_and_negative_where_the_course_route_holds():
    pytest.importorskip("scipy.linalg")
    f = _relu_features(40, 64, seed=4)  # N < d: rank-39 covariance, singular
    naive32, dropped32 = frechet_naive_from_features(f, f)
    naive64, dropped64 = frechet_naive_from_features(f, f, dtype=np.float64)
    assert dropped32 > 1e-4 and dropped64 > 0, "sqrtm of a singular C1 C2 has an imaginary part"
    mu, cov = gaussian_stats(f)
    scale = torch.trace(cov).item()
    assert naive32 < -1e-5 * scale, f"FD of a set with itself should come out negative in float32, got {naive32}"
    assert naive64 < 0
    # The course's route: the matrix under the outer root is symmetric PSD (eigenvalues >= 0
    # up to round-off), its eigh square root is real, and before the final clip at 0 the
    # trace expression for FD(f, f) is zero to ~1e-8 relative (sqrt of round-off
    # eigenvalues), four orders of magnitude closer than the float32 naive route.
    s = sqrtm_psd(cov)
    inner = s @ cov @ s
    assert torch.allclose(inner, inner.T, atol=1e-9 * inner.abs().max())
    assert torch.linalg.eigvalsh(inner).min() > -1e-9 * inner.abs().max()
    raw = torch.trace(cov) * 2 - 2 * torch.trace(sqrtm_psd(inner))
    assert not raw.is_complex() and abs(raw.item()) < 1e-7 * scale
    assert abs(raw.item()) < abs(naive32) / 100
    assert frechet_from_features(f, f) == pytest.approx(0.0, abs=1e-8)
    # Two different singular sets: the naive float32 value disagrees in the 4th digit or so,
    # the course's value matches float64 to ~1e-9.
    g = _relu_features(40, 64, seed=5)
    course = frechet_from_features(f, g)
    assert course > 0
    assert frechet_naive_from_features(f, g, dtype=np.float64)[0] == pytest.approx(course, rel=1e-7)


def test_naive_route_agrees_when_well_conditioned():
    pytest.importorskip("scipy.linalg")
    f, g = _relu_features(2000, 8, seed=6), _relu_features(2000, 8, seed=7) + 0.5
    value, dropped = frechet_naive_from_features(f, g, dtype=np.float64)
    assert dropped == 0.0
    assert value == pytest.approx(frechet_from_features(f, g), rel=1e-8)


def test_pixel_wasserstein_closed_forms():
    g = torch.Generator().manual_seed(8)
    a = torch.randn(50, 1, 28, 28, generator=g)
    # A shift by c moves every quantile by c: W1 = |c|.
    for c in (0.3, -1.25):
        assert pixel_wasserstein(a, a + c) == pytest.approx(abs(c), rel=1e-6)
    # U(0, 1) vs U(0, 2): quantiles u and 2u, W1 = integral_0^1 |u - 2u| du = 1/2.
    u = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    assert pixel_wasserstein(u, 2 * u) == pytest.approx(0.5, rel=1e-9)
    # Unequal sizes go through scipy; same answer up to the grid.
    assert pixel_wasserstein(u, 2 * u[::4]) == pytest.approx(0.5, rel=1e-3)
    # Blind to where the pixels are: shuffling every image leaves it at exactly 0.
    shuffled = a.flatten(1)[:, torch.randperm(784, generator=g)].view_as(a)
    assert pixel_wasserstein(a, shuffled) == 0.0
    assert pixel_wasserstein(a, a.flip(0)) == 0.0


def test_frechet_bias_shrinks_like_one_over_n():
    """Two independent samples of the SAME Gaussian: the true FD is 0, the estimate is not.
    FD >= |mu_1 - mu_2|^2, whose mean is 2 tr(C) / N, and the whole bias is O(1/N)."""
    d, reps = 8, 30
    g = torch.Generator().manual_seed(9)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    cov_trace = torch.trace(mix.T @ mix).item()
    mean_fd = {}
    for n in (50, 200, 800):
        values = [frechet_from_features(torch.randn(n, d, generator=g, dtype=torch.float64) @ mix,
                                        torch.randn(n, d, generator=g, dtype=torch.float64) @ mix)
                  for _ in range(reps)]
        mean_fd[n] = sum(values) / reps
        assert min(values) > 0
        assert mean_fd[n] > 0.7 * 2 * cov_trace / n  # at least the mean-difference part
    assert mean_fd[50] > mean_fd[200] > mean_fd[800]
    # N * E[FD] roughly constant: the bias shrinks like 1/N.
    scaled = [n * v for n, v in mean_fd.items()]
    assert max(scaled) / min(scaled) < 1.6, mean_fd


def test_accuracy_and_report_card_on_an_untrained_classifier():
    torch.manual_seed(10)
    model = ImageClassifier().eval()
    g = torch.Generator().manual_seed(10)
    x = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
    _, pred, conf = classify(model, x)
    assert pred.shape == (64,) and ((conf > 0) & (conf <= 1)).all()
    assert accuracy(model, x, pred) == 1.0
    assert accuracy(model, x, (pred + 1) % 10) == 0.0
    judged = judge_real(model, x, pred)
    assert judged["held_out_accuracy"] == 1.0
    assert judged["held_out_confident_fraction"] == (conf > 0.9).double().mean().item()
    assert judge_real(model, x, pred, confident=0.0)["held_out_confident_fraction"] == 1.0
    other = torch.rand(100, 1, 28, 28, generator=g) * 2 - 1
    report = evaluate_samples(model, x, x, floor_pool=other, floor_draws=3)
    assert report["floor_draws"] == 3 and report["floor_n"] == len(x)
    assert report["frechet_ratio"] == report["frechet"] / report["frechet_floor"]
    # a floor computed once gives the same report card, and must be for the same N
    floor = frechet_floor(model, other, classify(model, x)[0], len(x), draws=3)
    assert evaluate_samples(model, x, x, floor=floor) == report
    with pytest.raises(ValueError, match="for N = 64, not for these 32"):
        evaluate_samples(model, x[:32], x[:32], floor=floor)
    with pytest.raises(ValueError, match="not both"):
        evaluate_samples(model, x, x, floor_pool=other, floor=floor)
    for key in ("frechet", "frechet_floor", "frechet_floor_sd", "frechet_ratio", "confident_fraction",
                "class_histogram", "min_class_fraction", "pixel_wasserstein"):
        assert key in report
    assert report["frechet"] == pytest.approx(0.0, abs=1e-6)
    assert report["pixel_wasserstein"] == 0.0
    assert sum(report["class_histogram"]) == pytest.approx(1.0, abs=1e-3)


def test_floor_draws_random_subsets_not_the_first_n():
    """Training images stored in two writer groups (like MNIST): the first n are all one group,
    so FD(pool[:n], held-out) measures the groups' difference; random draws do not."""
    torch.manual_seed(12)
    model = ImageClassifier().eval()
    g = torch.Generator().manual_seed(12)
    def writers(n, shift):
        return (torch.rand(n, 1, 28, 28, generator=g) - 0.5 + shift).clamp(-1, 1)
    n = 150
    pool = torch.cat([writers(600, -0.4), writers(600, 0.4)])  # group A first, then group B
    held_out = torch.cat([writers(n // 2, -0.4), writers(n - n // 2, 0.4)])
    f_held = classify(model, held_out)[0]
    floor = frechet_floor(model, pool, f_held, n, draws=4, seed=3)
    first_n = frechet_from_features(classify(model, pool[:n])[0], f_held)
    assert floor["frechet_floor"] < 0.5 * first_n, (floor, first_n)
    # The mean over the seeded draws, each scored as a plain FD: the same numbers by hand.
    g3 = torch.Generator().manual_seed(3)
    by_hand = [frechet_from_features(classify(model, pool[torch.randperm(len(pool), generator=g3)[:n]])[0],
                                     f_held) for _ in range(4)]
    assert floor["frechet_floor"] == pytest.approx(np.mean(by_hand), rel=1e-6)
    assert floor["frechet_floor_sd"] == pytest.approx(np.std(by_hand, ddof=1), rel=1e-6)
    assert floor["frechet_floor_sd"] > 0 and floor["floor_draws"] == 4
    assert frechet_floor(model, pool, f_held, n, draws=4, seed=3) == floor  # seeded
    assert frechet_floor(model, pool, f_held, n, draws=1)["frechet_floor_sd"] == 0.0
    with pytest.raises(ValueError, match="pool of 100"):
        frechet_floor(model, pool[:100], f_held, n)
    with pytest.raises(ValueError, match="at least 1"):
        frechet_floor(model, pool, f_held, n, draws=0)


def _two_class_toy(n=320, seed=11):
    """Digit-sized images whose class is which half is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = -torch.ones(n, 1, 28, 28)
    x[y == 0, :, :, 4:12] = 1.0
    x[y == 1, :, :, 16:24] = 1.0
    return (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1), y


def test_classifier_trains_and_is_cached(tmp_path, monkeypatch):
    from diffusion_course.evaluation.judge import load_or_train_classifier

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    x, y = _two_class_toy()
    spec = {"dataset": "toy", "n": len(x)}
    model, info = load_or_train_classifier(x, y, spec, epochs=3, progress=False)
    assert info["trained_now"] and not model.training
    assert next(model.parameters()).device.type == "cpu"
    xt, yt = _two_class_toy(seed=12)
    assert accuracy(model, xt, yt) > 0.95
    again, info2 = load_or_train_classifier(x, y, spec, epochs=3, progress=False)
    assert not info2["trained_now"]
    assert torch.equal(classify(model, xt)[0], classify(again, xt)[0])


def test_nearest_neighbour_distances_match_brute_force_and_find_copies():
    from diffusion_course.evaluation.coverage import nearest_neighbour_distances

    g = torch.Generator().manual_seed(0)
    ref, x = torch.rand(300, 1, 28, 28, generator=g), torch.rand(37, 1, 28, 28, generator=g)
    brute = torch.cdist(x.flatten(1).double(), ref.flatten(1).double()).min(1).values
    assert torch.allclose(nearest_neighbour_distances(x, ref, batch=8).double(), brute, atol=1e-5)
    copies = ref[[3, 100, 299]] + 0.0
    assert nearest_neighbour_distances(copies, ref).max() < 1e-3   # a copy sits on its original
    with pytest.raises(ValueError, match="do not compare"):
        nearest_neighbour_distances(x, ref[:, :, :10])
