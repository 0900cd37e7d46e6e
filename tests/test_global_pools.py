"""Every registered global pool against the uniform contract (found from the registry, so a new
pool is covered automatically), then each pool's identities against independent maths: float64
numpy formulas, limits, and values that the construction pins down (a mask of 1/2, a uniform
attention)."""

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

C = 4
EXTRA = [
    ("gem", {"mode": "per_channel"}),
    ("gem", {"mode": "group", "groups": 2}),
    ("gem", {"param": "softplus"}),
    ("gem", {"param": "log", "mode": "per_channel"}),
    ("gem", {"impl": "autograd"}),
    ("gem", {"learnable": False}),
    ("agem", {"attention": "softmax"}),
    ("rgem", {"param": "log"}),
    ("sgem", {"combine": "mean"}),
    ("attention", {"heads": 2}),
    ("lse", {"learnable": False}),
    ("mixed", {"learnable": False}),
]
VARIANTS = [(name, {}) for name in GLOBAL_POOLS.names()] + EXTRA
IDS = [name + "".join(f"-{k}={v}" for k, v in kwargs.items()) for name, kwargs in VARIANTS]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def positive_map(n: int, c: int, h: int, w: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Strictly positive activations in [0.05, 2.05), well above eps."""
    return (torch.rand(n, c, h, w, generator=seeded(seed), dtype=torch.float64) * 2 + 0.05).to(dtype)


def make(name: str, kwargs: dict, seed: int = 0) -> Pool:
    """The pool with every learnable parameter moved off its initial value (away from the
    symmetric starting points: a zero gate, a uniform mask)."""
    torch.manual_seed(seed)
    pool = build_pool(name, C, **kwargs)
    with torch.no_grad():
        for parameter in pool.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=seeded(seed + 1)))
    return pool


def set_stored(pool: nn.Module, attr: str, values) -> None:
    with torch.no_grad():
        getattr(pool, attr).copy_(torch.as_tensor(values, dtype=torch.float64))


def gem_reference(a: np.ndarray, p) -> np.ndarray:
    """GeM per channel of a float64 (N, C, H, W) array; p scalar or one per channel."""
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), (a.shape[1],))
    a = np.maximum(a, 1e-6)
    return np.stack([np.mean(a[:, k] ** p[k], axis=(1, 2)) ** (1 / p[k]) for k in range(a.shape[1])], axis=1)


# --- the contract, for every pool -------------------------------------------------------------


@pytest.mark.parametrize("name", GLOBAL_POOLS.names())
def test_builds_from_name_and_channels_alone(name):
    pool = GLOBAL_POOLS.build(name, channels=C)
    assert isinstance(pool, Pool)
    assert "=" in (type(pool).__doc__ or "")  # the docstring states the formula


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
def test_eval_is_deterministic(name, kwargs):
    pool = make(name, kwargs).eval()
    x = positive_map(3, C, 5, 5)
    assert torch.equal(pool(x), pool(x.clone()))


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_bf16_autocast_computes_in_fp32(name, kwargs):
    pool = make(name, kwargs)
    x_bf16 = (positive_map(2, C, 7, 7) * 10).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x_bf16)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, pool(x_bf16.float()), rtol=1e-6, atol=1e-6)


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
    loss = nn.functional.cross_entropy(model(images, torch.tensor([0, 1, 2, 0])), torch.tensor([0, 1, 2, 0]))
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


# --- GeM: modes and parametrisations ----------------------------------------------------------


def test_group_gem_matches_its_per_channel_expansion():
    x = positive_map(2, C, 3, 5, seed=4, dtype=torch.float64)
    pool = build_pool("gem", C, mode="group", groups=2).double()
    set_stored(pool, "p", [1.5, 5.0])
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
        set_stored(pool, "p", [1.2, 2.0, 3.5, 8.0])
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
        set_stored(pool, "p" if param == "direct" else "p_raw", [inverse(p)] * (C if mode == "per_channel" else 1))
        np.testing.assert_allclose(pool(x).detach().numpy(), expected, rtol=1e-12)


def test_traced_p_is_the_value_of_the_stored_parameter():
    """softplus: p = 1 + ln(1 + e^q); log: p = e^q (written out, not through the package)."""
    q = [-1.0, 0.0, 0.5, 2.0]
    softplus = build_pool("gem", C, mode="per_channel", param="softplus")
    log = build_pool("gem", C, mode="per_channel", param="log")
    set_stored(softplus, "p_raw", q)
    set_stored(log, "p_raw", q)
    value, parameter = softplus.traced()["p"]
    assert parameter is softplus.p_raw
    np.testing.assert_allclose(value.numpy(), [1 + math.log1p(math.exp(v)) for v in q], rtol=1e-6)
    value, parameter = log.traced()["p"]
    assert parameter is log.p_raw
    np.testing.assert_allclose(value.numpy(), [math.exp(v) for v in q], rtol=1e-6)
    # the pool computes with that p
    x = positive_map(2, C, 3, 3, seed=7)
    np.testing.assert_allclose(log(x).detach().numpy(), gem_reference(x.double().numpy(), np.exp(q)), rtol=1e-5)


@pytest.mark.parametrize("param", ["direct", "softplus", "log"])
def test_clamp_acts_on_the_effective_p(param):
    pool = build_pool("gem", C, mode="per_channel", param=param)
    targets = [1.2, 3.0, 5.0, 9.0]
    with torch.no_grad():
        stored = pool.p if param == "direct" else pool.p_raw
        stored.copy_(torch.tensor([INVERSE[param](v) for v in targets]))
    before = stored.detach().clone()
    pool.clamp_exponents_(1.5, 6.0)
    np.testing.assert_allclose(pool.traced()["p"][0].numpy(), [1.5, 3.0, 5.0, 6.0], rtol=1e-6)
    assert torch.equal(stored[1:3], before[1:3])  # values inside the range are left bit for bit
    if param == "softplus":
        with pytest.raises(ValueError, match="keeps it above 1"):
            pool.clamp_exponents_(None, 0.5)


def test_clamp_reaches_both_exponents_of_rgem_and_no_other_parameter():
    rgem = build_pool("rgem", C, p=0.5, p_local=9.0)
    rgem.clamp_exponents_(1.0, 8.0)
    assert rgem.p.tolist() == [1.0] and rgem.p_local.tolist() == [8.0]
    lse, mixed = build_pool("lse", C, r=20.0), build_pool("mixed", C, alpha=0.9)
    lse.clamp_exponents_(1.0, 8.0)
    mixed.clamp_exponents_(1.0, 8.0)
    assert lse.traced()["r"][0].item() == pytest.approx(20.0)
    assert mixed.traced()["alpha"][0].item() == pytest.approx(0.9)


# --- lse, mixed, gated --------------------------------------------------------------------------


def test_lse_matches_its_formula_and_limits():
    x = positive_map(2, C, 3, 5, seed=8, dtype=torch.float64)
    a = x.numpy()
    pool = build_pool("lse", C).double()
    set_stored(pool, "r_raw", [math.log(0.7)])
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
    set_stored(pool, "alpha_raw", [math.log(0.3 / 0.7)])
    torch.testing.assert_close(pool(x), 0.3 * peak + 0.7 * mean, rtol=1e-12, atol=0)
    set_stored(pool, "alpha_raw", [2.0])
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
    set_stored(pool, "gate_weight", weight)
    set_stored(pool, "gate_bias", bias)
    alpha = 1 / (1 + np.exp(-(mean * weight[:, 0] + peak * weight[:, 1] + bias)))
    np.testing.assert_allclose(pool(x).detach().numpy(), alpha * peak + (1 - alpha) * mean, rtol=1e-12)
    value, parameter = pool.traced()["alpha"]
    assert parameter is pool.gate_bias
    np.testing.assert_allclose(value.numpy(), alpha.mean(axis=0), rtol=1e-12)
    assert pool.group_parameters() == []


# --- GeM variants ---------------------------------------------------------------------------------


def test_wgem_weights_locations_before_gem():
    x = positive_map(2, C, 4, 4, seed=13, dtype=torch.float64)
    pool = build_pool("wgem", C, mask_size=4, p=2.0).double()
    # mask 1/2 everywhere at the start: GeM is homogeneous, so wgem = GeM / 2
    np.testing.assert_allclose(pool(x).detach().numpy(), gem_reference(x.numpy(), 2.0) / 2, rtol=1e-12)
    mask = np.random.default_rng(0).uniform(0.1, 0.9, (4, 4))
    set_stored(pool, "mask_raw", np.log(mask / (1 - mask)).ravel())
    np.testing.assert_allclose(pool(x).detach().numpy(), gem_reference(x.numpy() * mask, 2.0), rtol=1e-10)
    assert [id(q) for q in pool.group_parameters()] == [id(pool.p)]


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (14, 14)])
def test_wgem_constant_mask_is_a_scale_at_any_size(h, w):
    x = positive_map(2, C, h, w, seed=14, dtype=torch.float64)
    pool = build_pool("wgem", C, mask_size=8).double()
    set_stored(pool, "mask_raw", np.full(64, math.log(0.8 / 0.2)))
    np.testing.assert_allclose(pool(x).detach().numpy(), 0.8 * gem_reference(x.numpy(), 3.0), rtol=1e-10)


def test_agem_reweights_by_its_attention_map():
    x = positive_map(2, C, 3, 5, seed=15, dtype=torch.float64)
    sigmoid = build_pool("agem", C).double()
    softmax = build_pool("agem", C, attention="softmax").double()
    gem3 = gem_reference(x.numpy(), 3.0)
    np.testing.assert_allclose(sigmoid(x).detach().numpy(), gem3 / 2, rtol=1e-12)  # a = 1/2
    np.testing.assert_allclose(softmax(x).detach().numpy(), gem3, rtol=1e-12)  # a = HW / HW
    w, b = np.array([0.3, -0.2, 0.5, 0.1]), 0.2
    set_stored(sigmoid.score, "weight", w.reshape(1, C, 1, 1))
    set_stored(sigmoid.score, "bias", [b])
    set_stored(softmax.score, "weight", w.reshape(1, C, 1, 1))
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
    assert pool.traced() == {} and pool.group_parameters() == []
