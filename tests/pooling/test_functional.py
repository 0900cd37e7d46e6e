"""The one power mean and the GeM ops written with it, against float64 numpy: the generalised
mean per channel, its p = 1 and single-peak limits, regional Lp windows with replicate padding,
and the floor for windows that underflow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pooling_lab.pooling import gem, power_mean, regional_gem

from .helpers import gem_reference, positive_map

C = 3


def test_power_mean_divides_each_window_by_its_own_peak():
    """Over ``dims`` every window keeps full precision at p = 64 in float32, even one a million
    times below another (a shared peak would make its powers underflow)."""
    rows = np.array([[1e3, 5e2, 8e2, 2e2], [1e-3, 5e-4, 8e-4, 2e-4]])
    got = power_mean(torch.tensor(rows, dtype=torch.float32), 64.0, dims=(1,), eps=1e-9)
    expected = np.mean(rows**64, axis=1, keepdims=True) ** (1 / 64)
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("p", [1.0, torch.ones(C, dtype=torch.float64)], ids=["scalar", "per_channel"])
def test_gem_at_p1_is_the_mean(p):
    x = positive_map(2, C, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(gem(x, p), x.mean(dim=(2, 3)), rtol=1e-12, atol=0)


def test_gem_matches_the_direct_formula_for_scalar_and_per_channel_p():
    x = positive_map(2, C, 4, 4, seed=8, dtype=torch.float64)
    expected = gem_reference(x.numpy(), [2.0, 3.0, 5.0])
    got = gem(x, torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64))
    assert got.shape == (2, C)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(gem(x, 2.0).numpy()[:, 0], expected[:, 0], rtol=1e-12)
    assert math.isclose(gem(x, torch.tensor(5.0, dtype=torch.float64))[1, 2].item(), expected[1, 2], rel_tol=1e-12)


def test_gem_bound_is_tight_for_a_single_peak():
    """One nonzero element: GeM = max * (1/HW)^(1/p) exactly (4.6% below max at p=64 on 4x5)."""
    x = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    x[0, 0, 2, 3] = 7.0
    out = gem(x, 64.0, eps=1e-300).item()
    assert out == pytest.approx(7.0 * 20 ** (-1 / 64), rel=1e-12)
    assert 1 - out / 7.0 == pytest.approx(0.0457, abs=1e-4)


@pytest.mark.parametrize("per_channel", [False, True])
def test_gem_gradcheck(per_channel):
    x = positive_map(2, C, 3, 4, seed=6, dtype=torch.float64).requires_grad_()
    p = torch.tensor([1.5, 3.0, 7.0] if per_channel else 3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, q: gem(a, q), (x, p))
    assert torch.autograd.gradgradcheck(lambda a, q: gem(a, q), (x, p))


def window_reference(a: np.ndarray, p: float, k: int) -> np.ndarray:
    """(mean x^p)^(1/p) over the k x k window at every pixel of the edge-padded map (left / top
    pad (k - 1) // 2, right / bottom the rest)."""
    before = (k - 1) // 2
    padded = np.pad(a, ((0, 0), (0, 0), (before, k - 1 - before), (before, k - 1 - before)), mode="edge")
    out = np.empty_like(a)
    for i in range(a.shape[2]):
        for j in range(a.shape[3]):
            out[:, :, i, j] = np.mean(padded[:, :, i : i + k, j : j + k] ** p, axis=(2, 3)) ** (1 / p)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("p", [1.0, 2.5, 7.0])
def test_regional_gem_is_the_power_mean_of_each_window(k, p):
    x = positive_map(2, C, 4, 5, seed=16, dtype=torch.float64)
    got = regional_gem(x, p, k)
    assert got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), window_reference(x.numpy(), p, k), rtol=1e-10)


def test_regional_gem_floors_windows_that_underflow():
    """One bright pixel in a map of zeros, p = 8 in float32: windows away from it have powers
    (1e-6 / 100)^8, below the smallest float, and give peak * tiny^(1/p) with finite gradients."""
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 0, 0] = 100.0
    x.requires_grad_()
    p = torch.tensor(8.0, requires_grad=True)
    out = regional_gem(x, p, 3)
    far = 100.0 * torch.finfo(torch.float32).tiny ** (1 / 8)
    torch.testing.assert_close(out[0, 0, 3:, 3:], torch.full((3, 3), far), rtol=1e-5, atol=0)
    assert out[0, 0, 0, 0].item() == pytest.approx(100.0 * (4 / 9) ** (1 / 8), rel=1e-5)  # 4 of 9 are the peak
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(p.grad).all()
