"""Local pools against independent maths: each 2x2 region written out in float64 numpy, the power
mean bounds m (1/|R|)^(1/p) <= Lp <= m, Lee et al.'s mixed / gated / tree formulas, stochastic
pooling's sampling probabilities and the fractional max-pooling window sequence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pooling_lab.pooling import GLOBAL_POOLS, LOCAL_POOLS, Pool, local_pool_factory

from .helpers import assign, positive_map, seeded

C = 3
NAMES = LOCAL_POOLS.names()
RANDOM_IN_TRAINING = ("stochastic", "fractional_max")


def build(name: str, **options) -> Pool:
    torch.manual_seed(0)
    return LOCAL_POOLS.build(name, channels=C, **options)


def region_reference(x: torch.Tensor, reduce) -> np.ndarray:
    """``reduce`` applied to every 2x2 region (clipped at odd edges) of every channel, in numpy."""
    a = x.detach().double().numpy()
    n, c, h, w = a.shape
    out = np.empty((n, c, math.ceil(h / 2), math.ceil(w / 2)))
    for index in np.ndindex(out.shape):
        i, k, row, col = index
        out[index] = reduce(a[i, k, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2])
    return out


def padded(region: np.ndarray) -> np.ndarray:
    """A region zero-padded to 2x2 and flattened row-major: the input of a learned 2x2 filter."""
    full = np.zeros((2, 2))
    full[: region.shape[0], : region.shape[1]] = region
    return full.ravel()


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# --- uniform behaviour, every pool ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("n", "h", "w"), [(1, 1, 1), (1, 3, 5), (1, 7, 7), (1, 14, 14), (2, 5, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_output_halves_with_ceil(name, n, h, w, training):
    pool = build(name).train(training)
    out = pool(positive_map(n, C, h, w))
    assert out.shape == (n, C, math.ceil(h / 2), math.ceil(w / 2))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# the pooling parameters (own optimiser group) and the traced learned filters (base group)
GROUP = {"lp": ["p"], "mixed": ["alpha"]}
TRACED = {"lp": ["p"], "mixed": ["alpha"], "gated": ["gate"], "tree": ["leaves", "gates"]}


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_name_and_channels_and_traces_its_own_parameters(name):
    pool = LOCAL_POOLS.build(name, channels=C)
    assert isinstance(pool, Pool) and pool.out_features(C) == C
    traced = pool.traced()
    assert sorted(traced) == sorted(TRACED.get(name, []))
    own = {id(p) for p in pool.parameters()}
    for param_name, (value, parameter) in traced.items():
        assert isinstance(parameter, nn.Parameter) and id(parameter) in own
        assert not value.requires_grad
        assert f"{param_name}=" in repr(pool)
    grouped = {id(parameter) for parameter in pool.group_parameters()}
    assert grouped == {id(traced[n][1]) for n in GROUP.get(name, [])}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("h", "w"), [(3, 5), (14, 14)])
def test_gradient_reaches_input_and_every_parameter(name, h, w):
    pool = build(name).train()
    x = positive_map(2, C, h, w).requires_grad_()
    out = pool(x)
    weights = torch.rand(out.shape, generator=seeded(1))
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for param_name, parameter in pool.named_parameters():
        assert parameter.grad is not None, param_name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", RANDOM_IN_TRAINING)
def test_random_regions_in_training_fixed_ones_in_eval(name):
    pool = build(name)
    x = positive_map(2, C, 14, 14)
    assert not torch.equal(pool.train()(x), pool(x))
    torch.manual_seed(1)
    first = pool.eval()(x)
    torch.manual_seed(2)
    assert torch.equal(first, pool(x))


@pytest.mark.parametrize("name", NAMES)
def test_fp32_and_finite_under_bf16_autocast(name):
    pool = build(name).eval()
    x = positive_map(2, C, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # only the bf16 rounding of the input differs
    torch.testing.assert_close(out, pool(x.bfloat16().float()))
    torch.testing.assert_close(out, pool(x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [True, False])
def test_no_nan_at_all_zero_input(name, training):
    pool = build(name).train(training)
    x = torch.zeros(2, C, 5, 6, requires_grad=True)
    out = pool(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    for parameter in pool.parameters():
        assert torch.isfinite(parameter.grad).all()


# --- identities and formulas ----------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (6, 4)])
def test_max_and_avg_match_the_regions(h, w):
    x = positive_map(2, C, h, w)
    np.testing.assert_allclose(build("max")(x).numpy(), region_reference(x, np.max), rtol=1e-6)
    np.testing.assert_allclose(build("avg")(x).numpy(), region_reference(x, np.mean), rtol=1e-6)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, 7.5])
def test_lp_is_the_power_mean_of_each_region(p):
    x = positive_map(2, C, 5, 7, dtype=torch.float64)
    expected = region_reference(x, lambda r: np.mean(r**p) ** (1 / p))
    np.testing.assert_allclose(build("lp", p=p).double()(x).detach().numpy(), expected, rtol=1e-10)


def test_lp_at_p1_is_average_pooling():
    x = positive_map(2, C, 7, 5)
    pool = build("lp", p=1.0)
    torch.testing.assert_close(pool(x), build("avg")(x))
    torch.testing.assert_close(
        pool(x), torch.nn.functional.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
    )


@pytest.mark.parametrize("p", [1.0, 2.0, 8.0, 64.0, 500.0])
def test_lp_bounds_and_large_p_approaches_max(p):
    x = positive_map(2, C, 7, 7) * 1e3
    out = build("lp", p=p)(x)
    peak = build("max")(x)
    counts = torch.tensor(region_reference(torch.ones(1, 1, 7, 7), np.size), dtype=torch.float32)
    assert torch.isfinite(out).all()
    assert (out <= peak * (1 + 1e-5)).all()
    assert (out >= peak * (1 / counts) ** (1 / p) * (1 - 1e-5)).all()
    if p == 500.0:
        torch.testing.assert_close(out, peak, rtol=1e-2, atol=0)


def test_lp_regions_far_below_the_map_peak_are_exact():
    """Each region is divided by its own maximum: at p = 64 a region of ones beside a pixel of
    1000 is exactly 1 (a peak shared by the map would make its powers underflow in float32)."""
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1000.0
    expected = torch.tensor([[[[1000.0 / 4 ** (1 / 64), 1.0], [1.0, 1.0]]]])
    torch.testing.assert_close(build("lp", p=64.0)(x), expected, rtol=1e-6, atol=0)


def test_lp_gradient_of_p_matches_the_closed_form():
    """df/dp = (f/p) (sum x^p ln x / sum x^p - ln f) on each region, summed over regions."""
    p = 2.5
    x = positive_map(1, 1, 3, 5, dtype=torch.float64)
    pool = LOCAL_POOLS.build("lp", channels=1, p=p).double()
    pool(x).sum().backward()

    def dfdp(r):
        f = np.mean(r**p) ** (1 / p)
        return f / p * (np.sum(r**p * np.log(r)) / np.sum(r**p) - np.log(f))

    assert pool.p.grad.item() == pytest.approx(region_reference(x, dfdp).sum(), rel=1e-10)


def test_lp_fixed_p_and_clamp():
    fixed = build("lp", p=2.0, learnable=False)
    assert fixed.traced() == {} and list(fixed.parameters()) == []
    x = positive_map(1, C, 4, 4)
    torch.testing.assert_close(fixed(x), build("lp", p=2.0)(x))
    pool = build("lp", p=0.5)
    pool.clamp_exponents_(1.0, None)
    assert pool.traced()["p"][0].item() == 1.0 and "p=1.0000" in repr(pool)


def test_mixed_endpoints_are_max_and_avg():
    x = positive_map(2, C, 5, 3)
    assert torch.equal(build("mixed", alpha=1.0, learnable=False)(x), build("max")(x))
    assert torch.equal(build("mixed", alpha=0.0, learnable=False)(x), build("avg")(x))
    # a learnable alpha (stored as its logit) approaches them
    torch.testing.assert_close(build("mixed", alpha=1 - 1e-9)(x), build("max")(x))
    torch.testing.assert_close(build("mixed", alpha=1e-9)(x), build("avg")(x))
    pool = build("mixed", alpha=0.3)
    expected = region_reference(x, lambda r: 0.3 * r.max() + 0.7 * r.mean())
    np.testing.assert_allclose(pool(x).detach().numpy(), expected, rtol=1e-5)
    assert pool.traced()["alpha"][0].item() == pytest.approx(0.3)


def test_mixed_alpha_range():
    with pytest.raises(ValidationError):
        local_pool_factory({"name": "mixed", "alpha": 1.5})
    with pytest.raises(ValueError, match="outside the range"):
        local_pool_factory({"name": "mixed", "alpha": 1.0})(C)


def test_gated_mixes_max_and_avg_by_a_region_gate():
    x = positive_map(2, C, 5, 4, dtype=torch.float64)
    gate = [0.5, -1.0, 0.25, 2.0]
    pool = build("gated").double()
    assign(pool.gate, gate)

    def gated(r):
        s = sigmoid(float(np.dot(gate, padded(r))))
        return s * r.max() + (1 - s) * r.mean()

    np.testing.assert_allclose(pool(x).detach().numpy(), region_reference(x, gated), rtol=1e-10)
    # zero gate: the even mix
    torch.testing.assert_close(build("gated")(x.float()), build("mixed", alpha=0.5)(x.float()))


@pytest.mark.parametrize("depth", [2, 3])
def test_tree_combines_leaf_filters_with_gates(depth):
    x = positive_map(2, C, 3, 6, dtype=torch.float64)
    pool = build("tree", depth=depth).double()
    leaves = np.random.default_rng(0).normal(size=tuple(pool.leaves.shape))
    gates = np.random.default_rng(1).normal(size=tuple(pool.gates.shape))
    assign(pool.leaves, leaves)
    assign(pool.gates, gates)
    assert len(leaves) == 2 ** (depth - 1) and len(gates) == len(leaves) - 1

    def node(v, level, index):
        """The value at ``index`` (0-based, left to right) of tree level ``level`` (root = 0)."""
        if level == depth - 1:
            return float(np.dot(leaves[index], v))
        s = sigmoid(float(np.dot(gates[2**level - 1 + index], v)))
        return s * node(v, level + 1, 2 * index) + (1 - s) * node(v, level + 1, 2 * index + 1)

    expected = region_reference(x, lambda r: node(padded(r), 0, 0))
    np.testing.assert_allclose(pool(x).detach().numpy(), expected, rtol=1e-10)


def test_stochastic_eval_is_the_probability_weighted_average():
    x = positive_map(2, C, 5, 7)
    expected = region_reference(x, lambda r: np.sum(r**2) / np.sum(r))
    np.testing.assert_allclose(build("stochastic").eval()(x).numpy(), expected, rtol=1e-5)


def test_stochastic_training_samples_by_activation():
    """One region [0, 1, 3, 0] many times: 1 with probability 1/4, 3 with 3/4, 0 never."""
    x = torch.tensor([[0.0, 1.0], [3.0, 0.0]]).expand(20000, 1, 2, 2)
    torch.manual_seed(0)
    out = build("stochastic").train()(x).flatten()
    assert set(out.unique().tolist()) == {1.0, 3.0}
    assert (out == 3.0).float().mean().item() == pytest.approx(0.75, abs=0.015)


@pytest.mark.parametrize(("h", "w"), [(14, 14), (7, 5), (2, 3), (1, 1)])
def test_fractional_max_eval_windows_follow_the_fixed_sequence(h, w):
    """Window starts a_i = floor((i + u) alpha) - floor(u alpha), alpha = (H - k)/(H' - 1), the
    last window ending at the border; eval fixes u = 1/2."""

    def starts(size):
        out, k = math.ceil(size / 2), min(3, size - math.ceil(size / 2) + 1)
        if out == 1:
            return [size - k], k
        alpha = (size - k) / (out - 1)
        return [int((i + 0.5) * alpha) - int(0.5 * alpha) for i in range(out - 1)] + [size - k], k

    x = positive_map(2, C, h, w)
    (rows, kh), (cols, kw) = starts(h), starts(w)
    a = x.numpy()
    expected = np.array([[[[a[i, k, r : r + kh, c : c + kw].max() for c in cols] for r in rows]
                          for k in range(C)] for i in range(2)])
    np.testing.assert_allclose(build("fractional_max").eval()(x).numpy(), expected)


def test_conv_is_a_strided_3x3_convolution():
    pool = build("conv")
    x = positive_map(2, C, 7, 4)
    expected = torch.nn.functional.conv2d(x, pool.conv.weight, pool.conv.bias, stride=2, padding=1)
    torch.testing.assert_close(pool(x), expected)
    assert pool.traced() == {} and "weight_norm=" in repr(pool)


# --- the factory the config uses, and the names ---------------------------------------------


def test_local_pool_factory_validates_early_and_builds_per_channels():
    factory = local_pool_factory({"name": "lp", "p": 2.0})
    first, second = factory(4), factory(8)
    assert first is not second and first.traced()["p"][0].item() == 2.0
    with pytest.raises(ValidationError):
        local_pool_factory({"name": "lp", "q": 2.0})
    with pytest.raises(KeyError, match="unknown local_pool"):
        local_pool_factory({"name": "nope"})
    assert local_pool_factory({"name": "conv"})(4).conv.in_channels == 4


def test_local_and_global_pool_classes_have_distinct_names():
    """A class name says which kind of pool it is; the registry keys (YAML names) may coincide."""
    local = {LOCAL_POOLS.get(name).factory.__name__ for name in NAMES}
    global_ = {GLOBAL_POOLS.get(name).factory.__name__ for name in GLOBAL_POOLS.names()}
    assert len(local) == len(NAMES) and not local & global_
    assert {"max", "avg", "mixed", "gated"} <= set(NAMES) & set(GLOBAL_POOLS.names())
