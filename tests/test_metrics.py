import numpy as np
import pytest
import torch

from diffusion_course.metrics import frechet_distance, frechet_from_features, sqrtm_psd


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
