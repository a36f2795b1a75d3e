import math

import pytest
import torch

from diffusion_course.diffusion.gaussians import (kl_diag_normal, kl_monte_carlo, kl_normal,
                                                  normal_log_pdf, normal_pdf)


def test_pdf_normaliser_and_integral():
    # At the mean the density is 1/sqrt(2 pi sigma^2) (sigma squared inside the root).
    assert normal_pdf(1.0, 1.0, 3.0).item() == pytest.approx(1 / math.sqrt(2 * math.pi * 9))
    x = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    assert torch.trapezoid(normal_pdf(x, 2.0, 3.0), x).item() == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(normal_log_pdf(x, 2.0, 3.0).exp(), normal_pdf(x, 2.0, 3.0))


@pytest.mark.parametrize("mu1,s1,mu2,s2", [(0, 1, 1, 1), (0.5, 0.3, -1, 2), (2, 3, 2, 1)])
def test_kl_closed_form_vs_monte_carlo(mu1, s1, mu2, s2):
    g = torch.Generator().manual_seed(1)
    est, se = kl_monte_carlo(mu1, s1, mu2, s2, 400_000, generator=g)
    assert abs(est - kl_normal(mu1, s1, mu2, s2).item()) < 5 * se + 1e-12


def test_kl_properties():
    assert kl_normal(0.3, 1.2, 0.3, 1.2).item() == pytest.approx(0.0, abs=1e-15)
    # Equal variances: KL = (mu1 - mu2)^2 / (2 sigma^2).
    assert kl_normal(1.0, 0.5, -0.5, 0.5).item() == pytest.approx(1.5**2 / (2 * 0.25))
    # Asymmetry.
    assert kl_normal(0, 1, 0, 2).item() != pytest.approx(kl_normal(0, 2, 0, 1).item())
    with pytest.raises(ValueError, match="positive"):
        kl_normal(0, 0, 0, 1)


def test_diag_kl_is_sum_of_1d():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(5, generator=g, dtype=torch.float64) + 0.1, torch.rand(5, generator=g, dtype=torch.float64) + 0.1
    total = kl_normal(m1, v1.sqrt(), m2, v2.sqrt()).sum()
    assert kl_diag_normal(m1, v1, m2, v2).item() == pytest.approx(total.item(), rel=1e-12)
