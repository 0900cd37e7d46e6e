"""The fused GeM (closed-form backward) against the functional power mean ``functional.gem``:
values and gradients on post-ReLU maps, float64 finite differences, random sizes and exponents,
CPU chunking, and its refusal to be differentiated twice."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pooling_lab.pooling import fused, gem, gem_fused

from .helpers import positive_map, seeded

C = 3
EXPONENTS = [3.0, [1.5, 3.0, 7.0], 64.0, 500.0, [1.0, 64.0, 500.0]]


def values_and_gradients(pool, x: torch.Tensor, p, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The pooled values and the gradients of sum(weights * pool(x, p)) in x and in p."""
    a, q = x.clone().requires_grad_(), torch.tensor(p, dtype=x.dtype, requires_grad=True)
    out = pool(a, q)
    (out * weights).sum().backward()
    return out.detach(), a.grad, q.grad


@pytest.mark.parametrize("p", EXPONENTS, ids=str)
def test_fused_gradcheck(p):
    """float64 finite differences, with x and p, x alone and p alone needing a gradient."""
    x = positive_map(3, C, 3, 4, seed=9, dtype=torch.float64).requires_grad_()
    q = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gem_fused, (x, q))
    assert torch.autograd.gradcheck(lambda a: gem_fused(a, q.detach()), (x,))
    assert torch.autograd.gradcheck(lambda e: gem_fused(x.detach(), e), (q,))


@pytest.mark.parametrize("p", EXPONENTS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_equals_functional_values_and_gradients(p, dtype):
    """A post-ReLU-like map (about half exact zeros, below the clamp) through both."""
    x = torch.randn(4, C, 5, 6, generator=seeded(10), dtype=torch.float64).relu().to(dtype)
    weights = torch.randn(4, C, generator=seeded(11), dtype=dtype)
    fused_result = values_and_gradients(gem_fused, x, p, weights)
    functional_result = values_and_gradients(gem, x, p, weights)
    tolerance = {"rtol": 1e-11, "atol": 1e-13} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for got, expected in zip(fused_result, functional_result, strict=True):
        torch.testing.assert_close(got, expected, **tolerance)
    assert (fused_result[1][x == 0] == 0).all()  # clamped inputs get no gradient


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
    exponents=st.lists(st.floats(0.5, 200.0), min_size=1, max_size=4),
    zeros=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_functional_on_random_maps(shape, exponents, zeros, seed):
    """Any size, any mix of exact zeros, scalar or per-channel p from 0.5 to 200 (float64)."""
    n, c, h, w = shape
    generator = seeded(seed)
    x = torch.rand(shape, generator=generator, dtype=torch.float64) * 3
    x = x * (torch.rand(shape, generator=generator, dtype=torch.float64) >= zeros)
    p = exponents[0] if len(exponents) == 1 else [exponents[k % len(exponents)] for k in range(c)]
    weights = torch.randn(n, c, generator=generator, dtype=torch.float64)
    fused_result = values_and_gradients(gem_fused, x, p, weights)
    for got, expected in zip(fused_result, values_and_gradients(gem, x, p, weights), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 50])
def test_fused_cpu_chunks_do_not_change_the_result(monkeypatch, chunk):
    x = positive_map(5, C, 4, 3, seed=12)
    p, weights = [2.0, 3.0, 9.0], torch.ones(5, C)
    whole = values_and_gradients(gem_fused, x, p, weights)
    monkeypatch.setattr(fused, "CPU_CHUNK_ELEMENTS", chunk)
    for got, expected in zip(values_and_gradients(gem_fused, x, p, weights), whole, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_fused_backward_refuses_to_be_differentiated():
    """Second derivatives (e.g. a gradient penalty) need ``impl: autograd``; fused says so."""
    x = positive_map(1, C, 3, 3, seed=13, dtype=torch.float64).requires_grad_()
    weights = torch.randn(1, C, generator=seeded(14), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((gem_fused(x, 3.0) * weights).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad.sum().backward()
