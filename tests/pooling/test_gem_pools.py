"""The GeM family as modules, in both implementations (fused and autograd): the bounds
max (1/|X|)^(1/p) <= GeM <= max, p = 1 and p = 500, the closed-form gradients (README.md,
Numerics) df/dx_i = (1/|X|) f^(1-p) x_i^(p-1) and df/dp = (f/p) (sum x^p ln x / sum x^p - ln f),
the modes and parametrisations of p, clamping, tracing, and each variant (wgem, agem, rgem, sgem)
against float64 numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pooling_lab.pooling import build_pool

from .helpers import assign, gem_reference, positive_map, seeded

C = 4
IMPLS = ["fused", "autograd"]


# --- GeM: limits and numerics ----------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["shared", "per_channel"])
def test_gem_at_p1_is_average_pooling(mode, impl):
    x = positive_map(2, C, 3, 5, dtype=torch.float64)
    pool = build_pool("gem", C, p=1.0, mode=mode, impl=impl).double()
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3)), rtol=1e-12, atol=0)


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


def closed_form(x: np.ndarray, p: float) -> tuple[float, np.ndarray, float]:
    """f, df/dx and df/dp for one channel's map, written from the closed forms above."""
    values = x.ravel()
    f = np.mean(values**p) ** (1 / p)
    dfdx = (1 / values.size) * f ** (1 - p) * values ** (p - 1)
    dfdp = (f / p) * (np.sum(values**p * np.log(values)) / np.sum(values**p) - np.log(f))
    return f, dfdx.reshape(x.shape), dfdp


def test_dfdp_is_not_the_misprinted_f_over_p_squared():
    """The closed form above is checked against a central finite difference of f in p."""
    x = positive_map(1, 1, 4, 4, seed=5, dtype=torch.float64).numpy()[0, 0]
    p, step = 3.0, 1e-6
    f_of = lambda q: np.mean(x.ravel() ** q) ** (1 / q)  # noqa: E731
    numeric = (f_of(p + step) - f_of(p - step)) / (2 * step)
    f, _, dfdp = closed_form(x, p)
    assert dfdp == pytest.approx(numeric, rel=1e-7)
    assert dfdp * (1 / p) != pytest.approx(numeric, rel=1e-3)


@pytest.mark.parametrize("mode", ["shared", "per_channel"])
@pytest.mark.parametrize("impl", IMPLS)
def test_gem_gradients_match_closed_forms(mode, impl):
    n, h, w = 2, 3, 5
    ps = [3.0] * C if mode == "shared" else [1.5, 3.0, 6.0, 9.0]
    pool = build_pool("gem", C, p=3.0, mode=mode, impl=impl).double()
    assign(pool.p, ps if mode == "per_channel" else [3.0])
    x = positive_map(n, C, h, w, seed=3, dtype=torch.float64).requires_grad_()
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
    expected_p_grad = [expect_dp.sum()] if mode == "shared" else expect_dp
    np.testing.assert_allclose(pool.p.grad.numpy(), expected_p_grad, rtol=1e-10)


# --- modes and parametrisations ---------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_per_channel_with_equal_p_equals_shared(impl):
    x = positive_map(2, C, 5, 3, seed=7)
    shared = build_pool("gem", C, p=2.5, impl=impl)
    per_channel = build_pool("gem", C, p=2.5, mode="per_channel", impl=impl)
    torch.testing.assert_close(per_channel(x), shared(x), rtol=1e-6, atol=0)
    assign(per_channel.p, [2.5, 4.0, 2.5, 2.5])
    assert not torch.allclose(per_channel(x)[:, 1], shared(x)[:, 1])


def test_group_gem_matches_its_per_channel_expansion():
    x = positive_map(2, C, 3, 5, seed=4, dtype=torch.float64)
    pool = build_pool("gem", C, mode="group", groups=2).double()
    assign(pool.p, [1.5, 5.0])
    np.testing.assert_allclose(pool(x).detach().numpy(), gem_reference(x.numpy(), [1.5, 1.5, 5.0, 5.0]), rtol=1e-12)
    value, parameter = pool.traced()["p"]
    assert parameter is pool.p and value.tolist() == [1.5, 5.0]


def test_group_gem_with_one_group_is_shared_and_with_c_groups_per_channel():
    x = positive_map(2, C, 4, 3, seed=5)
    one = build_pool("gem", C, p=2.5, mode="group", groups=1)
    torch.testing.assert_close(one(x), build_pool("gem", C, p=2.5)(x), rtol=0, atol=0)
    every = build_pool("gem", C, mode="group", groups=C)
    per_channel = build_pool("gem", C, mode="per_channel")
    for pool in (every, per_channel):
        assign(pool.p, [1.2, 2.0, 3.5, 8.0])
    torch.testing.assert_close(every(x), per_channel(x), rtol=0, atol=0)


INVERSE = {  # stored value giving exponent p, written out
    "direct": lambda p: p,
    "softplus": lambda p: math.log(math.expm1(p - 1)),
    "log": math.log,
}


@pytest.mark.parametrize("mode", ["shared", "per_channel"])
@pytest.mark.parametrize("p", [1.5, 2.5, 7.0])
def test_every_parametrisation_gives_the_same_pool(mode, p):
    x = positive_map(2, C, 3, 5, seed=6, dtype=torch.float64)
    expected = gem_reference(x.numpy(), p)
    for param, inverse in INVERSE.items():
        pool = build_pool("gem", C, p=p, mode=mode, param=param)
        # built from p: exact up to the float32 storage of the parameter
        np.testing.assert_allclose(pool(x.float()).detach().numpy(), expected, rtol=2e-6)
        pool = pool.double()
        assign(pool.stored("p"), [inverse(p)] * (C if mode == "per_channel" else 1))
        np.testing.assert_allclose(pool(x).detach().numpy(), expected, rtol=1e-12)


def test_traced_p_is_the_value_of_the_stored_parameter():
    """direct: p itself; softplus: p = 1 + ln(1 + e^q); log: p = e^q (written out, not through
    the package).  A fixed p is a buffer: nothing to learn or trace."""
    shared = build_pool("gem", C, p=3.0)
    assign(shared.p, [2.75])
    (name, (value, parameter)), = shared.traced().items()
    assert name == "p" and parameter is shared.p and list(shared.parameters()) == [shared.p]
    assert value.shape == () and value.item() == 2.75 and not value.requires_grad

    q = [-1.0, 0.0, 0.5, 2.0]
    softplus = build_pool("gem", C, mode="per_channel", param="softplus")
    log = build_pool("gem", C, mode="per_channel", param="log")
    assign(softplus.p_raw, q)
    assign(log.p_raw, q)
    value, parameter = softplus.traced()["p"]
    assert parameter is softplus.p_raw and value.shape == (C,)
    np.testing.assert_allclose(value.numpy(), [1 + math.log1p(math.exp(v)) for v in q], rtol=1e-6)
    value, parameter = log.traced()["p"]
    assert parameter is log.p_raw
    np.testing.assert_allclose(value.numpy(), [math.exp(v) for v in q], rtol=1e-6)
    # the pool computes with that p
    x = positive_map(2, C, 3, 3, seed=7)
    np.testing.assert_allclose(log(x).detach().numpy(), gem_reference(x.double().numpy(), np.exp(q)), rtol=1e-5)

    for mode in ("shared", "per_channel"):
        fixed = build_pool("gem", C, learnable=False, mode=mode)
        assert fixed.traced() == {} and list(fixed.parameters()) == []


def test_repr_shows_current_p():
    shared = build_pool("gem", C, p=3.0)
    assert "p=3.0000" in repr(shared)
    assign(shared.p, [4.25])
    assert "p=4.2500" in repr(shared) and "learnable" in repr(shared)
    assert "fixed" in repr(build_pool("gem", C, p=2.0, learnable=False))
    per_channel = build_pool("gem", C, mode="per_channel")
    assign(per_channel.p, [1.0, 2.0, 6.0, 3.0])
    assert "mean=3.0000" in repr(per_channel) and "range=[1.000, 6.000]" in repr(per_channel)


# --- clamping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["direct", "softplus", "log"])
def test_clamp_acts_on_the_effective_p(param):
    pool = build_pool("gem", C, mode="per_channel", param=param)
    targets = [1.2, 3.0, 5.0, 9.0]
    stored = pool.stored("p")
    assign(stored, [INVERSE[param](v) for v in targets])
    before = stored.detach().clone()
    pool.clamp_exponents_(1.5, 6.0)
    np.testing.assert_allclose(pool.traced()["p"][0].numpy(), [1.5, 3.0, 5.0, 6.0], rtol=1e-6)
    assert torch.equal(stored[1:3], before[1:3])  # values inside the range are left bit for bit
    if param == "softplus":
        with pytest.raises(ValueError, match="keeps it above 1"):
            pool.clamp_exponents_(None, 0.5)


def test_clamp_one_sided_none_and_fixed():
    pool = build_pool("gem", C, mode="per_channel")
    assign(pool.p, [0.5, 3.0, 10.0, 2.5])
    pool.clamp_exponents_(None, 2.0)
    assert pool.p.tolist() == [0.5, 2.0, 2.0, 2.0]
    pool.clamp_exponents_(1.5, None)
    assert pool.p.tolist() == [1.5, 2.0, 2.0, 2.0]
    pool.clamp_exponents_(None, None)
    assert pool.p.tolist() == [1.5, 2.0, 2.0, 2.0]
    shared = build_pool("gem", C, p=0.8)
    shared.clamp_exponents_(1.0, None)
    assert shared.p.tolist() == [1.0]
    fixed = build_pool("gem", C, p=0.8, learnable=False)
    fixed.clamp_exponents_(1.0, None)
    assert fixed.p.tolist() == [pytest.approx(0.8)]


def test_clamp_reaches_both_exponents_of_rgem_and_no_other_parameter():
    rgem = build_pool("rgem", C, p=0.5, p_local=9.0)
    rgem.clamp_exponents_(1.0, 8.0)
    assert rgem.p.tolist() == [1.0] and rgem.p_local.tolist() == [8.0]
    lse, mixed = build_pool("lse", C, r=20.0), build_pool("mixed", C, alpha=0.9)
    lse.clamp_exponents_(1.0, 8.0)
    mixed.clamp_exponents_(1.0, 8.0)
    assert lse.traced()["r"][0].item() == pytest.approx(20.0)
    assert mixed.traced()["alpha"][0].item() == pytest.approx(0.9)


# --- the variants -----------------------------------------------------------------------------


def test_wgem_weights_locations_before_gem():
    x = positive_map(2, C, 4, 4, seed=13, dtype=torch.float64)
    pool = build_pool("wgem", C, mask_size=4, p=2.0).double()
    # mask 1/2 everywhere at the start: GeM is homogeneous, so wgem = GeM / 2
    np.testing.assert_allclose(pool(x).detach().numpy(), gem_reference(x.numpy(), 2.0) / 2, rtol=1e-12)
    mask = np.random.default_rng(0).uniform(0.1, 0.9, (4, 4))
    assign(pool.mask_raw, np.log(mask / (1 - mask)).ravel())
    np.testing.assert_allclose(pool(x).detach().numpy(), gem_reference(x.numpy() * mask, 2.0), rtol=1e-10)
    assert [id(q) for q in pool.group_parameters()] == [id(pool.p)]


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (14, 14)])
def test_wgem_constant_mask_is_a_scale_at_any_size(h, w):
    x = positive_map(2, C, h, w, seed=14, dtype=torch.float64)
    pool = build_pool("wgem", C, mask_size=8).double()
    assign(pool.mask_raw, np.full(64, math.log(0.8 / 0.2)))
    np.testing.assert_allclose(pool(x).detach().numpy(), 0.8 * gem_reference(x.numpy(), 3.0), rtol=1e-10)


def test_agem_reweights_by_its_attention_map():
    x = positive_map(2, C, 3, 5, seed=15, dtype=torch.float64)
    sigmoid = build_pool("agem", C).double()
    softmax = build_pool("agem", C, attention="softmax").double()
    gem3 = gem_reference(x.numpy(), 3.0)
    np.testing.assert_allclose(sigmoid(x).detach().numpy(), gem3 / 2, rtol=1e-12)  # a = 1/2
    np.testing.assert_allclose(softmax(x).detach().numpy(), gem3, rtol=1e-12)  # a = HW / HW
    w, b = np.array([0.3, -0.2, 0.5, 0.1]), 0.2
    assign(sigmoid.score.weight, w.reshape(1, C, 1, 1))
    assign(sigmoid.score.bias, [b])
    assign(softmax.score.weight, w.reshape(1, C, 1, 1))
    score = np.einsum("nchw,c->nhw", x.numpy(), w)[:, None]
    np.testing.assert_allclose(sigmoid(x).detach().numpy(), gem_reference(x.numpy() / (1 + np.exp(-score - b)), 3.0), rtol=1e-10)
    soft = np.exp(score) / np.exp(score).sum(axis=(2, 3), keepdims=True) * 15
    np.testing.assert_allclose(softmax(x).detach().numpy(), gem_reference(x.numpy() * soft, 3.0), rtol=1e-10)


def test_rgem_blends_a_local_lp_pool_into_the_map():
    x = positive_map(2, C, 4, 5, seed=16, dtype=torch.float64)
    a = x.numpy()
    # kernel 1: the local pool is the map itself, so rgem is gem
    np.testing.assert_allclose(build_pool("rgem", C, kernel_size=1).double()(x).detach().numpy(), gem_reference(a, 3.0), rtol=1e-12)
    q = 2.5
    padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    local = np.zeros_like(a)
    for i in range(4):
        for j in range(5):
            local[:, :, i, j] = np.mean(padded[:, :, i : i + 3, j : j + 3] ** q, axis=(2, 3)) ** (1 / q)
    pool = build_pool("rgem", C, kernel_size=3, p_local=q, p=4.0).double()
    np.testing.assert_allclose(pool(x).detach().numpy(), gem_reference((a + local) / 2, 4.0), rtol=1e-10)
    assert set(pool.traced()) == {"p", "p_local"}


def test_sgem_combines_gem_over_scales():
    x = positive_map(2, C, 2, 2, seed=17, dtype=torch.float64)
    a = x.numpy()
    single = build_pool("sgem", C, scales=(1.0,)).double()(x)
    np.testing.assert_allclose(single.detach().numpy(), gem_reference(a, 3.0), rtol=1e-12)
    # 2x2 -> 1x1 bilinear with antialiasing weighs the four pixels equally; GeM of one value is it
    half = build_pool("sgem", C, scales=(0.5,)).double()(x)
    np.testing.assert_allclose(half.detach().numpy(), a.mean(axis=(2, 3)), rtol=1e-12)
    both = build_pool("sgem", C, scales=(1.0, 0.5), combine="max").double()(x)
    np.testing.assert_allclose(both.detach().numpy(), np.maximum(gem_reference(a, 3.0), a.mean(axis=(2, 3))), rtol=1e-12)
    mean = build_pool("sgem", C, scales=(1.0, 0.5), combine="mean").double()(x)
    np.testing.assert_allclose(mean.detach().numpy(), (gem_reference(a, 3.0) + a.mean(axis=(2, 3))) / 2, rtol=1e-12)
