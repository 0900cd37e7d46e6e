"""Every registered global pool against the uniform contract (found from the registry, so a new
pool is covered automatically), then the pools without an exponent against independent maths:
float64 numpy formulas, limits, and values that the construction pins down.  The GeM family has
its own file, test_gem_pools.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import build_model
from pooling_lab.pooling import GLOBAL_POOLS, Pool, build_pool
from pooling_lab.train.optim import POOL_GROUP, build_optimizer
from pooling_lab.train.recorder import ParamRecorder

from .helpers import assign, gem_reference, positive_map, seeded

C = 4
EXTRA = [
    ("gem", {"mode": "per_channel"}),
    ("gem", {"mode": "group", "groups": 2}),
    ("gem", {"param": "softplus"}),
    ("gem", {"param": "log", "mode": "per_channel"}),
    ("gem", {"impl": "autograd"}),
    ("gem", {"learnable": False}),
    ("gem", {"learnable": False, "mode": "per_channel"}),
    ("agem", {"attention": "softmax"}),
    ("rgem", {"param": "log"}),
    ("sgem", {"combine": "mean"}),
    ("attention", {"heads": 2}),
    ("lse", {"learnable": False}),
    ("mixed", {"learnable": False}),
]
VARIANTS = [(name, {}) for name in GLOBAL_POOLS.names()] + EXTRA
IDS = [name + "".join(f"-{k}={v}" for k, v in kwargs.items()) for name, kwargs in VARIANTS]

# the traced values of each pool at its defaults, and which of them get the pooling group
TRACED = {
    "gem": ["p"], "wgem": ["p", "mask"], "agem": ["p"], "rgem": ["p", "p_local"], "sgem": ["p"],
    "lse": ["r"], "mixed": ["alpha"], "gated": ["gate_weight", "alpha"],
}
GROUP = {"gem": ["p"], "wgem": ["p"], "agem": ["p"], "rgem": ["p", "p_local"], "sgem": ["p"], "lse": ["r"], "mixed": ["alpha"]}


def make(name: str, kwargs: dict, seed: int = 0) -> Pool:
    """The pool with every learnable parameter moved off its initial value (away from the
    symmetric starting points: a zero gate, a uniform mask)."""
    torch.manual_seed(seed)
    pool = build_pool(name, C, **kwargs)
    with torch.no_grad():
        for parameter in pool.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=seeded(seed + 1)))
    return pool


# --- the contract, for every pool -------------------------------------------------------------


@pytest.mark.parametrize("name", GLOBAL_POOLS.names())
def test_builds_from_name_and_channels_and_traces_its_own_parameters(name):
    pool = GLOBAL_POOLS.build(name, channels=C)
    assert isinstance(pool, Pool)
    traced = pool.traced()
    assert list(traced) == TRACED.get(name, [])
    assert [id(q) for q in pool.group_parameters()] == [id(traced[key][1]) for key in GROUP.get(name, [])]


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize(("n", "h", "w"), [(2, 1, 1), (2, 3, 5), (2, 7, 7), (1, 14, 14)])
def test_output_shape_dtype_and_width(name, kwargs, n, h, w):
    pool = make(name, kwargs)
    out = pool(positive_map(n, C, h, w))
    assert out.shape == (n, pool.out_features(C))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_gradient_reaches_input_and_every_parameter(name, kwargs):
    pool = make(name, kwargs)
    x = positive_map(2, C, 3, 5, seed=1).requires_grad_()
    weights = torch.randn(2, pool.out_features(C), generator=seeded(2))
    (pool(x) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    learnable = [parameter for parameter in pool.parameters() if parameter.requires_grad]
    traced = [parameter for _, parameter in pool.traced().values()]
    assert {id(q) for q in traced} <= {id(q) for q in learnable}
    for parameter in learnable:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        assert parameter.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_bf16_autocast_computes_in_fp32(name, kwargs):
    pool = make(name, kwargs)
    x = positive_map(2, C, 7, 7) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # the same bf16 values pooled in fp32 outside autocast: only summation order may differ
    torch.testing.assert_close(out, pool(x.bfloat16().float()), rtol=1e-6, atol=1e-6)
    # and within bf16 input rounding (8 bits of mantissa) of the fp32 original, relative to the
    # largest output (a learned projection can cancel an output to near zero)
    exact = pool(x)
    torch.testing.assert_close(out, exact, rtol=1e-2, atol=1e-2 * exact.abs().max().item())


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_all_zero_input_gives_no_nan(name, kwargs):
    pool = make(name, kwargs)
    x = torch.zeros(2, C, 3, 5, requires_grad=True)
    out = pool(x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    for parameter in pool.parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_traced_values_and_groups(name, kwargs):
    pool = make(name, kwargs)
    pool(positive_map(2, C, 3, 3))
    parameters = {id(q) for q in pool.parameters()}
    for value, parameter in pool.traced().values():
        assert isinstance(parameter, nn.Parameter) and id(parameter) in parameters
        assert not value.requires_grad and value.dim() <= 1 and torch.isfinite(value).all()
    traced = {id(parameter) for _, parameter in pool.traced().values()}
    assert {id(q) for q in pool.group_parameters()} <= traced
    if kwargs.get("learnable") is False:
        assert traced == set()


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_repr_shows_every_traced_value(name, kwargs):
    pool = make(name, kwargs)
    pool(positive_map(2, C, 3, 3))
    text = repr(pool)
    for key, (value, _) in pool.traced().items():
        shown = f"{value.item():.4f}" if value.numel() == 1 else f"(mean={value.mean().item():.4f}"
        assert f"{key}={shown}" in text


@pytest.mark.parametrize("name", GLOBAL_POOLS.names())
def test_one_training_step_in_a_classifier(name):
    """Built from a config, trained one step, clamped and recorded with no pool-specific code."""
    config = ExperimentConfig.model_validate({
        "name": "zoo",
        "data": {"dataset": "synthetic"},
        "model": {"backbone": {"name": "small_cnn", "width": 4, "depth": 2}, "pool": {"name": name}},
    })
    model = build_model(config, in_channels=1, num_classes=3)
    optimizer = build_optimizer(model, config.optim)
    recorder = ParamRecorder(model, torch.device("cpu"))
    images = torch.randn(4, 1, 12, 12, generator=seeded(3))
    loss = nn.functional.cross_entropy(model(images, torch.tensor([0, 1, 2, 0]))[0], torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    model.pool.clamp_exponents_(1.0, None)
    recorder.capture(1, 0.1)
    frame = recorder.drain()
    assert set(frame["param"]) == set(model.pool.traced())
    assert np.isfinite(frame["value"].astype(float)).all()
    pool_group = [g["params"] for g in optimizer.param_groups if g["name"] == POOL_GROUP]
    assert [id(q) for q in (pool_group[0] if pool_group else [])] == [id(q) for q in model.pool.group_parameters()]


# --- construction errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("gem", {"mode": "group", "groups": 3}, "must divide the 4 channels"),
        ("gem", {"groups": 2}, "needs mode: group"),
        ("gem", {"param": "softplus", "p": 1.0}, "outside the range"),
        ("gem", {"p": 1e-7}, "must exceed eps"),
        ("mixed", {"alpha": 1.0}, "outside the range"),
        ("attention", {"heads": 3}, "must divide the 4 channels"),
    ],
)
def test_invalid_options_say_why(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_pool(name, C, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("gem", {"p": -1.0}), ("gem", {"mode": "spatial"}), ("lse", {"r": 0.0}), ("sgem", {"scales": []}), ("wgem", {"size": 4})],
)
def test_schema_rejects_bad_values(name, kwargs):
    with pytest.raises(ValidationError):
        build_pool(name, C, **kwargs)


# --- values against direct formulas --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "formula"),
    [
        ("avg", {}, lambda a: a.mean(axis=(2, 3))),
        ("max", {}, lambda a: a.max(axis=(2, 3))),
        ("gem", {}, lambda a: gem_reference(a, 3.0)),
        ("gem", {"mode": "per_channel", "learnable": False}, lambda a: gem_reference(a, 3.0)),
        ("gem", {"impl": "autograd"}, lambda a: gem_reference(a, 3.0)),
        ("gem", {"mode": "group", "groups": C}, lambda a: gem_reference(a, 3.0)),
    ],
    ids=["avg", "max", "gem", "gem-per_channel-fixed", "gem-autograd", "gem-group"],
)
@pytest.mark.parametrize(("n", "h", "w"), [(4, 7, 7), (1, 1, 1), (2, 3, 5)])
def test_avg_max_and_gem_match_their_formulas(name, kwargs, formula, n, h, w):
    x = positive_map(n, C, h, w)
    np.testing.assert_allclose(build_pool(name, C, **kwargs)(x).detach().numpy(), formula(x.double().numpy()), rtol=1e-5)


def test_lse_matches_its_formula_and_limits():
    x = positive_map(2, C, 3, 5, seed=8, dtype=torch.float64)
    a = x.numpy()
    pool = build_pool("lse", C).double()
    assign(pool.r_raw, [math.log(0.7)])
    expected = np.log(np.mean(np.exp(0.7 * a), axis=(2, 3))) / 0.7
    np.testing.assert_allclose(pool(x).detach().numpy(), expected, rtol=1e-12)
    assert pool.traced()["r"][0].item() == pytest.approx(0.7, rel=1e-12)
    small = build_pool("lse", C, r=1e-6).double()(x)
    torch.testing.assert_close(small, x.mean(dim=(2, 3)), rtol=1e-6, atol=0)
    large = build_pool("lse", C, r=1e4).double()(x)
    peak = x.amax(dim=(2, 3))
    assert (large <= peak).all() and (large >= peak - math.log(15) / 1e4).all()


def test_lse_is_finite_for_huge_inputs_and_sharpness():
    x = positive_map(2, C, 3, 3, seed=9) * 1e4
    assert torch.isfinite(build_pool("lse", C, r=100.0)(x)).all()


def test_mixed_endpoints_and_blend():
    x = positive_map(2, C, 3, 5, seed=10, dtype=torch.float64)
    mean, peak = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    assert torch.equal(build_pool("mixed", C, alpha=1.0, learnable=False).double()(x), peak)
    assert torch.equal(build_pool("mixed", C, alpha=0.0, learnable=False).double()(x), mean)
    pool = build_pool("mixed", C).double()
    assign(pool.alpha_raw, [math.log(0.3 / 0.7)])
    torch.testing.assert_close(pool(x), 0.3 * peak + 0.7 * mean, rtol=1e-12, atol=0)
    assign(pool.alpha_raw, [2.0])
    assert pool.traced()["alpha"][0].item() == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_avgmax_and_catavgmax():
    x = positive_map(2, C, 3, 5, seed=11, dtype=torch.float64)
    mean, peak = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    torch.testing.assert_close(build_pool("avgmax", C)(x), (mean + peak) / 2, rtol=1e-12, atol=0)
    assert torch.equal(build_pool("catavgmax", C)(x), torch.cat([mean, peak], dim=1))


def test_gated_gate_reads_mean_and_max():
    x = positive_map(3, C, 3, 5, seed=12, dtype=torch.float64)
    pool = build_pool("gated", C).double()
    mean, peak = x.mean(dim=(2, 3)).numpy(), x.amax(dim=(2, 3)).numpy()
    np.testing.assert_allclose(pool(x).detach().numpy(), (mean + peak) / 2, rtol=1e-12)  # gate 1/2 at init
    weight = np.array([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.4], [0.0, 1.0]])
    bias = np.array([0.1, -0.2, 0.0, 0.3])
    assign(pool.gate_weight, weight)
    assign(pool.gate_bias, bias)
    alpha = 1 / (1 + np.exp(-(mean * weight[:, 0] + peak * weight[:, 1] + bias)))
    np.testing.assert_allclose(pool(x).detach().numpy(), alpha * peak + (1 - alpha) * mean, rtol=1e-12)
    value, parameter = pool.traced()["alpha"]
    assert parameter is pool.gate_bias
    np.testing.assert_allclose(value.numpy(), alpha.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_matches_multi_head_attention_written_out(heads):
    x = positive_map(2, C, 3, 5, seed=18, dtype=torch.float64)
    pool = build_pool("attention", C, heads=heads).double()
    tokens = x.numpy().reshape(2, C, 15).transpose(0, 2, 1)  # (N, L, C)
    wk, wv, bv = pool.key.weight.detach().numpy(), pool.value.weight.detach().numpy(), pool.value.bias.detach().numpy()
    wo, bo, q = pool.proj.weight.detach().numpy(), pool.proj.bias.detach().numpy(), pool.query.detach().numpy()
    keys, values = tokens @ wk.T, tokens @ wv.T + bv
    d = C // heads
    heads_out = []
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        scores = keys[:, :, part] @ q[part] / math.sqrt(d)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        heads_out.append(np.einsum("nl,nld->nd", weights, values[:, :, part]))
    expected = np.concatenate(heads_out, axis=1) @ wo.T + bo
    np.testing.assert_allclose(pool(x).detach().numpy(), expected, rtol=1e-10)
