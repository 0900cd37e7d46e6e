"""Parameter groups and schedules: group contents by identity, decay by hand, schedules at points
whose value is known without the formula (warmup ramps, cosine ends and midpoint, step halvings)."""

from __future__ import annotations

import math

import pytest
import torch

from pooling_lab.experiment import ExperimentConfig, OptimConfig
from pooling_lab.models import build_model
from pooling_lab.train.optim import (
    BASE_GROUP,
    POOL_GROUP,
    build_optimizer,
    build_scheduler,
    group_lr,
    lr_factor,
)


def make_model(pool: dict | None = None, optim: dict | None = None):
    config = ExperimentConfig.model_validate({
        "name": "optim",
        "data": {"dataset": "synthetic"},
        "model": {
            "backbone": {"name": "small_cnn", "width": 4, "depth": 2},
            "pool": pool or {"name": "gem"},
            "embedding_dim": 6,
        },
        "optim": optim or {},
    })
    return build_model(config, in_channels=1, num_classes=3), config.optim


def groups_by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {group["name"]: group for group in optimizer.param_groups}


@pytest.mark.parametrize(("mode", "lr_mult"), [("shared", 10.0), ("per_channel", 100.0)])
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_pool_group_holds_exactly_p(mode, lr_mult, name):
    model, config = make_model(
        {"name": "gem", "mode": mode},
        {"name": name, "lr": 0.05, "weight_decay": 1e-3, "pool_params": {"lr_mult": lr_mult}},
    )
    groups = groups_by_name(build_optimizer(model, config))
    assert set(groups) == {BASE_GROUP, POOL_GROUP}
    pool, base = groups[POOL_GROUP], groups[BASE_GROUP]
    assert len(pool["params"]) == 1 and pool["params"][0] is model.pool.p
    assert pool["lr"] == pytest.approx(0.05 * lr_mult)
    assert pool["weight_decay"] == 0.0
    assert base["lr"] == pytest.approx(0.05) and base["weight_decay"] == 1e-3

    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = [id(p) for group in groups.values() for p in group["params"]]
    assert len(grouped) == len(set(grouped)) == len(trainable)
    assert set(grouped) == {id(p) for p in trainable}


@pytest.mark.parametrize(
    ("pool", "in_pool_group"),
    [
        ({"name": "gem", "param": "softplus"}, ["p_raw"]),
        ({"name": "rgem"}, ["p", "p_local"]),
        ({"name": "lse"}, ["r_raw"]),
        ({"name": "mixed"}, ["alpha_raw"]),
        ({"name": "wgem"}, ["p"]),  # the mask is a weight map: base group
        ({"name": "agem"}, ["p"]),  # the attention convolution: base group
        ({"name": "gated"}, []),  # the gate is a small layer: base group
        ({"name": "attention"}, []),
    ],
)
def test_pool_group_holds_only_pooling_parameters(pool, in_pool_group):
    """Exponents, sharpness and blend weights get the pooling group; a pool's ordinary network
    weights stay in the base group with the rest of the model."""
    model, config = make_model(pool, {"lr": 0.05, "weight_decay": 1e-3})
    groups = groups_by_name(build_optimizer(model, config))
    expected = [getattr(model.pool, name) for name in in_pool_group]
    assert [id(p) for p in groups.get(POOL_GROUP, {"params": []})["params"]] == [id(p) for p in expected]
    base_ids = {id(p) for p in groups[BASE_GROUP]["params"]}
    others = [p for name, p in model.pool.named_parameters() if name not in in_pool_group]
    assert all(id(p) in base_ids for p in others)


def test_fixed_pool_has_no_pool_group():
    model, config = make_model({"name": "gem", "learnable": False})
    optimizer = build_optimizer(model, config)
    assert [g["name"] for g in optimizer.param_groups] == [BASE_GROUP]
    assert math.isnan(group_lr(optimizer, POOL_GROUP))
    assert group_lr(optimizer, BASE_GROUP) == pytest.approx(config.lr)


@pytest.mark.parametrize("pool_decay", [0.0, 0.2])
def test_sgd_decay_touches_base_parameters_only(pool_decay):
    lr, decay, lr_mult = 0.1, 0.05, 10.0
    model, config = make_model(
        optim={"lr": lr, "weight_decay": decay, "pool_params": {"lr_mult": lr_mult, "weight_decay": pool_decay}}
    )
    optimizer = build_optimizer(model, config)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    weight = model.head.weight.detach().clone()
    p = model.pool.p.detach().clone()
    optimizer.step()
    # zero gradient: the first SGD step (momentum buffer = d_p) is w - lr * decay * w
    torch.testing.assert_close(model.head.weight.detach(), weight * (1 - lr * decay), rtol=1e-6, atol=0)
    torch.testing.assert_close(model.pool.p.detach(), p * (1 - lr * lr_mult * pool_decay), rtol=1e-6, atol=0)
    if pool_decay == 0.0:
        assert torch.equal(model.pool.p.detach(), p)


def optim_config(**values) -> OptimConfig:
    return OptimConfig.model_validate(values)


def test_warmup_is_linear_then_constant():
    factor = lr_factor(optim_config(schedule="constant", warmup_epochs=2), steps_per_epoch=5, total_steps=40)
    assert [factor(s) for s in range(12)] == pytest.approx([0.1 * k for k in range(1, 11)] + [1.0, 1.0])
    assert factor(39) == 1.0


def test_cosine_runs_from_one_to_min_lr_ratio():
    config = optim_config(schedule="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    factor = lr_factor(config, steps_per_epoch=10, total_steps=110)
    assert [factor(s) for s in range(10)] == pytest.approx([0.1 * k for k in range(1, 11)])
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55)  # halfway through the cosine: (1 + min) / 2
    assert factor(110) == pytest.approx(0.1)
    assert factor(500) == pytest.approx(0.1)
    values = [factor(s) for s in range(10, 111)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_cosine_without_warmup_or_floor():
    factor = lr_factor(optim_config(schedule="cosine"), steps_per_epoch=4, total_steps=40)
    assert factor(0) == 1.0
    assert factor(10) == pytest.approx((1 + math.sqrt(0.5)) / 2)  # a quarter of the way: cos(pi/4)
    assert factor(40) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_decays_by_gamma_every_step_epochs():
    config = optim_config(schedule="step", step_epochs=2, gamma=0.5)
    factor = lr_factor(config, steps_per_epoch=5, total_steps=40)
    expected = [1.0] * 10 + [0.5] * 10 + [0.25] * 10 + [0.125] * 10
    assert [factor(s) for s in range(40)] == pytest.approx(expected)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_freeze_epochs_hold_the_pool_group_at_zero(schedule):
    lr, lr_mult, steps_per_epoch, epochs, frozen = 0.2, 10.0, 4, 5, 2
    model, config = make_model(
        optim={
            "lr": lr,
            "schedule": schedule,
            "min_lr_ratio": 0.05,
            "pool_params": {"lr_mult": lr_mult, "freeze_epochs": frozen},
        }
    )
    optimizer = build_optimizer(model, config)
    total = steps_per_epoch * epochs
    scheduler = build_scheduler(optimizer, config, steps_per_epoch, total)
    p = model.pool.p.detach().clone()
    for step in range(total):
        base_lr, pool_lr = group_lr(optimizer, BASE_GROUP), group_lr(optimizer, POOL_GROUP)
        if schedule == "constant":
            assert base_lr == pytest.approx(lr)
        if step < frozen * steps_per_epoch:
            assert pool_lr == 0.0
        else:
            assert pool_lr == pytest.approx(base_lr * lr_mult) and pool_lr > 0
        for parameter in model.parameters():
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        scheduler.step()
        if step < frozen * steps_per_epoch:
            assert torch.equal(model.pool.p.detach(), p)
    assert not torch.equal(model.pool.p.detach(), p)
    if schedule == "cosine":
        assert group_lr(optimizer, BASE_GROUP) == pytest.approx(lr * 0.05)
