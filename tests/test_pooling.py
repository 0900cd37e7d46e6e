"""Global pools against independent maths: direct float64 formulas, the GeM bounds
max (1/|X|)^(1/p) <= GeM <= max, and the closed-form gradients (README.md, Numerics)
df/dx_i = (1/|X|) f^(1-p) x_i^(p-1) and df/dp = (f/p) (sum x^p ln x / sum x^p - ln f)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pooling_lab.pooling import build_pool, fused, gem, gem_fused

C = 3
POOLS = [
    ("avg", {}),
    ("max", {}),
    ("gem", {"mode": "shared", "learnable": True}),
    ("gem", {"mode": "shared", "learnable": False}),
    ("gem", {"mode": "per_channel", "learnable": True}),
    ("gem", {"mode": "per_channel", "learnable": False}),
    ("gem", {"mode": "shared", "learnable": True, "impl": "autograd"}),
    ("gem", {"mode": "group", "groups": C, "learnable": True}),
]
IMPLS = ["fused", "autograd"]
POOL_IDS = [f"{name}-{'-'.join(str(v) for v in kw.values())}" if kw else name for name, kw in POOLS]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def positive_map(n: int, c: int, h: int, w: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Strictly positive activations in [0.05, 2.05), well above eps."""
    return (torch.rand(n, c, h, w, generator=seeded(seed), dtype=torch.float64) * 2 + 0.05).to(dtype)


def reference(name: str, x: torch.Tensor, p: float | list[float] = 3.0) -> np.ndarray:
    """Each pool written out directly in float64 numpy, one channel at a time."""
    a = x.detach().double().numpy()
    n, c = a.shape[:2]
    out = np.empty((n, c))
    ps = p if isinstance(p, list) else [p] * c
    for i in range(n):
        for k in range(c):
            values = a[i, k].ravel()
            if name == "avg":
                out[i, k] = values.mean()
            elif name == "max":
                out[i, k] = values.max()
            else:
                values = np.maximum(values, 1e-6)
                out[i, k] = np.mean(values ** ps[k]) ** (1 / ps[k])
    return out


def set_p(pool: nn.Module, values) -> None:
    with torch.no_grad():
        pool.p.copy_(torch.as_tensor(values, dtype=pool.p.dtype))


# --- every pool ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), POOLS, ids=POOL_IDS)
@pytest.mark.parametrize(("n", "h", "w"), [(4, 7, 7), (1, 1, 1), (2, 3, 5), (1, 7, 7)])
def test_shape_width_and_values(name, kwargs, n, h, w):
    pool = build_pool(name, C, **kwargs)
    x = positive_map(n, C, h, w, dtype=torch.float32)
    out = pool(x)
    assert out.shape == (n, C) == (n, pool.out_features(C))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), reference(name, x), rtol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), POOLS, ids=POOL_IDS)
def test_gradient_reaches_input_and_learnable_p(name, kwargs):
    pool = build_pool(name, C, **kwargs)
    x = positive_map(2, C, 3, 5, dtype=torch.float32).requires_grad_()
    pool(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for parameter in pool.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
    learnable = [q for q in pool.parameters() if q.requires_grad]
    assert len(learnable) == (1 if kwargs.get("learnable") else 0)


@pytest.mark.parametrize(("name", "kwargs"), POOLS, ids=POOL_IDS)
def test_eval_is_deterministic(name, kwargs):
    pool = build_pool(name, C, **kwargs).eval()
    x = positive_map(3, C, 5, 5, dtype=torch.float32)
    first = pool(x)
    assert torch.equal(first, pool(x.clone()))


@pytest.mark.parametrize(("name", "kwargs"), POOLS, ids=POOL_IDS)
def test_bf16_autocast_computes_in_fp32(name, kwargs):
    pool = build_pool(name, C, **kwargs)
    x = positive_map(2, C, 7, 7, dtype=torch.float32) * 10
    x_bf16 = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x_bf16)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # the same bf16 values pooled in fp32 outside autocast: only summation order may differ
    torch.testing.assert_close(out, pool(x_bf16.float()), rtol=1e-5, atol=0)
    # and within bf16 input rounding (8 bits of mantissa) of the fp32 original
    torch.testing.assert_close(out, pool(x), rtol=1e-2, atol=0)


def test_pools_without_parameters_trace_nothing():
    for name, kwargs in POOLS:
        pool = build_pool(name, C, **kwargs)
        if not kwargs.get("learnable"):
            assert pool.traced() == {}


# --- GeM: limits and numerics ----------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["shared", "per_channel"])
def test_gem_at_p1_is_average_pooling(mode, impl):
    x = positive_map(2, C, 3, 5)
    pool = build_pool("gem", C, p=1.0, mode=mode, impl=impl).double()
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3)), rtol=1e-12, atol=0)
    torch.testing.assert_close(gem(x, 1.0), x.mean(dim=(2, 3)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0, 8.0, 64.0, 500.0])
@pytest.mark.parametrize("magnitude", [1.0, 1e30])
@pytest.mark.parametrize(("h", "w"), [(4, 5), (7, 7)])
@pytest.mark.parametrize("impl", IMPLS)
def test_gem_lies_between_the_bound_and_max(p, magnitude, h, w, impl):
    x = torch.rand(3, C, h, w, generator=seeded(1)) * magnitude
    out = build_pool("gem", C, p=p, learnable=False, impl=impl)(x).double()
    peak = x.amax(dim=(2, 3)).double()
    assert torch.isfinite(out).all()
    low = peak * (1.0 / (h * w)) ** (1.0 / p)
    assert (out >= low * (1 - 1e-5)).all()
    assert (out <= peak * (1 + 1e-5)).all()


def test_gem_bound_is_tight_for_a_single_peak():
    """One nonzero element: GeM = max * (1/HW)^(1/p) exactly (4.6% below max at p=64 on 4x5)."""
    x = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    x[0, 0, 2, 3] = 7.0
    out = gem(x, 64.0, eps=1e-300).item()
    assert out == pytest.approx(7.0 * 20 ** (-1 / 64), rel=1e-12)
    assert 1 - out / 7.0 == pytest.approx(0.0457, abs=1e-4)


@pytest.mark.parametrize("magnitude", [1.0, 1e-3, 1e30])
@pytest.mark.parametrize("mode", ["shared", "per_channel"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gem_at_p500_is_within_one_percent_of_max(magnitude, mode, impl):
    pool = build_pool("gem", C, p=500.0, mode=mode, impl=impl)
    x = (torch.rand(2, C, 7, 7, generator=seeded(2)) * magnitude).requires_grad_()
    out = pool(x)
    peak = x.detach().amax(dim=(2, 3))
    assert torch.isfinite(out).all()
    assert ((out - peak).abs() <= 0.01 * peak).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(pool.p.grad).all()


@pytest.mark.parametrize("mode", ["shared", "per_channel"])
@pytest.mark.parametrize("p", [3.0, 500.0])
@pytest.mark.parametrize("impl", IMPLS)
def test_gem_of_zeros_is_eps_with_finite_gradients(mode, p, impl):
    eps = 1e-6
    pool = build_pool("gem", C, p=p, mode=mode, eps=eps, impl=impl)
    x = torch.zeros(2, C, 3, 5, requires_grad=True)
    out = pool(x)
    # every element is clamped to eps, and the mean of equal values is that value
    torch.testing.assert_close(out, torch.full((2, C), eps), rtol=1e-6, atol=0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(pool.p.grad).all()
    # below the clamp the input has no influence; with all values equal, f does not depend on p
    assert (x.grad == 0).all() and (pool.p.grad == 0).all()


# --- GeM: gradients against the closed forms ------------------------------------------------


def closed_form(x: np.ndarray, p: float) -> tuple[float, np.ndarray, float]:
    """f, df/dx and df/dp for one channel's map, written from the closed forms above."""
    values = x.ravel()
    f = np.mean(values**p) ** (1 / p)
    dfdx = (1 / values.size) * f ** (1 - p) * values ** (p - 1)
    dfdp = (f / p) * (np.sum(values**p * np.log(values)) / np.sum(values**p) - np.log(f))
    return f, dfdx.reshape(x.shape), dfdp


@pytest.mark.parametrize("mode", ["shared", "per_channel"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gem_gradients_match_closed_forms(mode, impl):
    n, h, w = 2, 3, 5
    ps = [3.0, 3.0, 3.0] if mode == "shared" else [1.5, 3.0, 6.0]
    pool = build_pool("gem", C, p=3.0, mode=mode, impl=impl).double()
    set_p(pool, ps if mode == "per_channel" else [3.0])
    x = positive_map(n, C, h, w, seed=3).requires_grad_()
    weights = torch.randn(n, C, generator=seeded(4), dtype=torch.float64)
    out = pool(x)
    (out * weights).sum().backward()

    a, wts = x.detach().numpy(), weights.numpy()
    expect_dx = np.empty_like(a)
    expect_dp = np.zeros(C)
    for i in range(n):
        for k in range(C):
            f, dfdx, dfdp = closed_form(a[i, k], ps[k])
            assert out[i, k].item() == pytest.approx(f, rel=1e-12)
            expect_dx[i, k] = wts[i, k] * dfdx
            expect_dp[k] += wts[i, k] * dfdp
    np.testing.assert_allclose(x.grad.numpy(), expect_dx, rtol=1e-10, atol=1e-14)
    got_dp = pool.p.grad.numpy()
    if mode == "shared":
        np.testing.assert_allclose(got_dp, [expect_dp.sum()], rtol=1e-10)
    else:
        np.testing.assert_allclose(got_dp, expect_dp, rtol=1e-10)


def test_dfdp_is_not_the_misprinted_f_over_p_squared():
    """The closed form above is checked against a central finite difference of f in p."""
    x = positive_map(1, 1, 4, 4, seed=5).numpy()[0, 0]
    p, step = 3.0, 1e-6
    f_of = lambda q: np.mean(x.ravel() ** q) ** (1 / q)  # noqa: E731
    numeric = (f_of(p + step) - f_of(p - step)) / (2 * step)
    f, _, dfdp = closed_form(x, p)
    assert dfdp == pytest.approx(numeric, rel=1e-7)
    assert dfdp * (1 / p) != pytest.approx(numeric, rel=1e-3)


@pytest.mark.parametrize("per_channel", [False, True])
def test_gem_gradcheck(per_channel):
    x = positive_map(2, C, 3, 4, seed=6).requires_grad_()
    p = torch.tensor([1.5, 3.0, 7.0] if per_channel else 3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, q: gem(a, q), (x, p))
    assert torch.autograd.gradgradcheck(lambda a, q: gem(a, q), (x, p))


@pytest.mark.parametrize("impl", IMPLS)
def test_per_channel_with_equal_p_equals_shared(impl):
    x = positive_map(2, C, 5, 3, seed=7, dtype=torch.float32)
    shared = build_pool("gem", C, p=2.5, impl=impl)
    per_channel = build_pool("gem", C, p=2.5, mode="per_channel", impl=impl)
    torch.testing.assert_close(per_channel(x), shared(x), rtol=1e-6, atol=0)
    set_p(per_channel, [2.5, 4.0, 2.5])
    assert not torch.allclose(per_channel(x)[:, 1], shared(x)[:, 1])


# --- GeM: the module around the parameter ----------------------------------------------------


def test_clamp_exponents():
    pool = build_pool("gem", C, mode="per_channel")
    set_p(pool, [0.5, 3.0, 10.0])
    pool.clamp_exponents_(1.0, 6.0)
    assert pool.p.tolist() == [1.0, 3.0, 6.0]
    pool.clamp_exponents_(None, 2.0)
    assert pool.p.tolist() == [1.0, 2.0, 2.0]
    pool.clamp_exponents_(1.5, None)
    assert pool.p.tolist() == [1.5, 2.0, 2.0]
    pool.clamp_exponents_(None, None)
    assert pool.p.tolist() == [1.5, 2.0, 2.0]

    shared = build_pool("gem", C, p=0.8)
    shared.clamp_exponents_(1.0, None)
    assert shared.p.tolist() == [1.0]
    fixed = build_pool("gem", C, p=0.8, learnable=False)
    fixed.clamp_exponents_(1.0, None)
    assert fixed.p.tolist() == [pytest.approx(0.8)]


def test_traced_declares_learnable_p():
    shared = build_pool("gem", C, p=3.0)
    set_p(shared, [2.75])
    (name, (value, parameter)), = shared.traced().items()
    assert name == "p" and parameter is shared.p
    assert value.shape == () and value.item() == 2.75 and not value.requires_grad

    per_channel = build_pool("gem", C, mode="per_channel")
    set_p(per_channel, [1.0, 2.0, 4.0])
    value, parameter = per_channel.traced()["p"]
    assert parameter is per_channel.p
    assert value.shape == (C,) and value.tolist() == [1.0, 2.0, 4.0]

    assert build_pool("gem", C, learnable=False).traced() == {}
    assert build_pool("gem", C, learnable=False, mode="per_channel").traced() == {}


def test_repr_shows_current_p():
    shared = build_pool("gem", C, p=3.0)
    assert "p=3.0000" in repr(shared)
    set_p(shared, [4.25])
    assert "p=4.2500" in repr(shared) and "learnable" in repr(shared)
    assert "fixed" in repr(build_pool("gem", C, p=2.0, learnable=False))
    per_channel = build_pool("gem", C, mode="per_channel")
    set_p(per_channel, [1.0, 2.0, 6.0])
    assert "mean=3.0000" in repr(per_channel) and "range=[1.000, 6.000]" in repr(per_channel)


def test_p_must_exceed_eps():
    with pytest.raises(ValueError, match="must exceed eps"):
        build_pool("gem", C, p=1e-7)


def test_gem_functional_scalar_and_vector_p_agree_with_direct_formula():
    x = positive_map(2, C, 4, 4, seed=8)
    expected = reference("gem", x, [2.0, 3.0, 5.0])
    got = gem(x, torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(gem(x, 2.0).numpy()[:, 0], expected[:, 0], rtol=1e-12)
    assert math.isclose(gem(x, torch.tensor(5.0, dtype=torch.float64))[1, 2].item(), expected[1, 2], rel_tol=1e-12)


# --- fused GeM (closed-form backward) against plain autograd GeM ------------------------------

EXPONENTS = [3.0, [1.5, 3.0, 7.0], 64.0, 500.0, [1.0, 64.0, 500.0]]


@pytest.mark.parametrize("p", EXPONENTS, ids=str)
def test_fused_gradcheck(p):
    """float64 finite differences, with x and p, x alone and p alone needing a gradient."""
    x = positive_map(3, C, 3, 4, seed=9).requires_grad_()
    q = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gem_fused, (x, q))
    assert torch.autograd.gradcheck(lambda a: gem_fused(a, q.detach()), (x,))
    assert torch.autograd.gradcheck(lambda e: gem_fused(x.detach(), e), (q,))


@pytest.mark.parametrize("p", EXPONENTS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_equals_plain_values_and_gradients(p, dtype):
    """A post-ReLU-like map (about half exact zeros, below the clamp) of both implementations."""
    x = torch.randn(4, C, 5, 6, generator=seeded(10), dtype=torch.float64).relu().to(dtype)
    weights = torch.randn(4, C, generator=seeded(11), dtype=dtype)
    results = []
    for pool in (gem_fused, gem):
        a = x.clone().requires_grad_()
        q = torch.tensor(p, dtype=dtype, requires_grad=True)
        out = pool(a, q)
        (out * weights).sum().backward()
        results.append((out.detach(), a.grad, q.grad))
    tolerance = {"rtol": 1e-11, "atol": 1e-13} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for fused_value, plain_value in zip(*results, strict=True):
        torch.testing.assert_close(fused_value, plain_value, **tolerance)
    assert (results[0][1][x == 0] == 0).all()  # clamped inputs get no gradient


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
    exponents=st.lists(st.floats(0.5, 200.0), min_size=1, max_size=4),
    zeros=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_plain_on_random_maps(shape, exponents, zeros, seed):
    """Any size, any mix of exact zeros, scalar or per-channel p from 0.5 to 200 (float64)."""
    n, c, h, w = shape
    generator = seeded(seed)
    x = torch.rand(shape, generator=generator, dtype=torch.float64) * 3
    x = x * (torch.rand(shape, generator=generator, dtype=torch.float64) >= zeros)
    p = exponents[0] if len(exponents) == 1 else [exponents[k % len(exponents)] for k in range(c)]
    weights = torch.randn(n, c, generator=generator, dtype=torch.float64)
    results = []
    for pool in (gem_fused, gem):
        a, q = x.clone().requires_grad_(), torch.tensor(p, dtype=torch.float64, requires_grad=True)
        out = pool(a, q)
        (out * weights).sum().backward()
        results.append((out.detach(), a.grad, q.grad))
    for fused_value, plain_value in zip(*results, strict=True):
        torch.testing.assert_close(fused_value, plain_value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 50])
def test_fused_cpu_chunks_do_not_change_the_result(monkeypatch, chunk):
    x = positive_map(5, C, 4, 3, seed=12, dtype=torch.float32)
    p = torch.tensor([2.0, 3.0, 9.0])

    def value_and_grads():
        a, q = x.clone().requires_grad_(), p.clone().requires_grad_()
        out = gem_fused(a, q)
        out.sum().backward()
        return out.detach(), a.grad, q.grad

    whole = value_and_grads()
    monkeypatch.setattr(fused, "CPU_CHUNK_ELEMENTS", chunk)
    for got, expected in zip(value_and_grads(), whole, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_fused_backward_refuses_to_be_differentiated():
    """Second derivatives (e.g. a gradient penalty) need ``impl: autograd``; fused says so."""
    x = positive_map(1, C, 3, 3, seed=13).requires_grad_()
    weights = torch.randn(1, C, generator=seeded(14), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((gem_fused(x, 3.0) * weights).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        grad.sum().backward()
