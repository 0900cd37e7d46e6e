"""The owner of p (pooling/exponent.py): a pool's exponents, a model's exponents by module name,
the global p, the fixed-p baseline predicate on configured pools, and the probe's fixed GeM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import build_model
from pooling_lab.pooling import build_pool, gem
from pooling_lab.pooling.exponent import exponents, fixed_gem, fixed_p, global_p, model_exponents

from .helpers import assign, positive_map

C = 4


def test_exponents_are_the_declared_exponents_learnable_or_fixed():
    rgem = build_pool("rgem", C, p=2.0, p_local=5.0, learnable=False)
    assert {name: value.tolist() for name, value in exponents(rgem).items()} == {"p": [2.0], "p_local": [5.0]}
    per_channel = build_pool("gem", C, mode="per_channel")
    assign(per_channel.p, [1.0, 2.0, 3.0, 4.0])
    found = exponents(per_channel)
    assert found["p"].tolist() == [1.0, 2.0, 3.0, 4.0] and not found["p"].requires_grad
    assert exponents(build_pool("mixed", C)) == {} and exponents(build_pool("lse", C)) == {}


@pytest.mark.parametrize(
    ("kwargs", "stored", "expected"),
    [
        ({"p": 2.5}, None, 2.5),
        ({"mode": "per_channel"}, [1.0, 2.0, 6.0, 3.0], 3.0),
        ({"mode": "group", "groups": 2}, [1.5, 4.5], 3.0),
        ({"p": 4.0, "learnable": False}, None, 4.0),
        ({"p": 4.0, "param": "log"}, None, 4.0),
    ],
    ids=["shared", "per_channel", "group", "fixed", "log"],
)
def test_global_p_is_the_mean_exponent_of_a_gem(kwargs, stored, expected):
    pool = build_pool("gem", C, **kwargs)
    if stored is not None:
        assign(pool.p, stored)
    assert global_p(pool) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("pool", [build_pool("avg", C), build_pool("lse", C), nn.Identity()], ids=["avg", "lse", "identity"])
def test_global_p_of_a_pool_without_p_is_nan(pool):
    assert math.isnan(global_p(pool))


def test_model_exponents_names_every_global_and_local_exponent():
    """small_cnn with depth 3 is conv, pool, conv, pool, conv: local pools at features.1 and .3."""
    config = ExperimentConfig.model_validate({
        "name": "exponents",
        "data": {"dataset": "synthetic"},
        "model": {
            "backbone": {"name": "small_cnn", "width": 4, "depth": 3},
            "local_pool": {"name": "lp", "p": 2.0},
            "pool": {"name": "gem", "mode": "per_channel", "p": 3.0},
        },
    })
    model = build_model(config, in_channels=1, num_classes=3)
    assign(model.backbone.features[3].p, [5.0])
    found = {name: value.tolist() for name, value in model_exponents(model).items()}
    assert found == {
        "backbone.features.1.p": [2.0],
        "backbone.features.3.p": [5.0],
        "pool.p": [3.0] * model.backbone.out_channels,
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"name": "gem", "p": 4.0, "learnable": False}, 4.0),
        ({"name": "gem", "p": 4.0, "learnable": False, "mode": "per_channel", "param": "log"}, 4.0),
        ({"name": "gem", "p": 6.0, "learnable": False, "mode": "group", "groups": 4}, 6.0),
        ({"name": "rgem", "p": 2.0, "p_local": 5.0, "learnable": False}, 2.0),
        ({"name": "gem", "p": 4.0}, None),
        ({"name": "gem", "mode": "group", "groups": 4}, None),
        ({"name": "avg"}, None),
        ({"name": "lse", "r": 2.0, "learnable": False}, None),
        ({"name": "attention", "heads": 2}, None),
    ],
    ids=["gem", "gem-per_channel", "gem-group", "rgem", "gem-learnable", "gem-group-learnable", "avg", "lse", "attention"],
)
def test_fixed_p_is_the_p_of_a_fixed_gem_and_none_otherwise(spec, expected):
    assert fixed_p(spec) == expected


def test_fixed_p_reads_a_full_configured_pool():
    config = ExperimentConfig.model_validate({
        "name": "fixed",
        "data": {"dataset": "synthetic"},
        "model": {"pool": {"name": "gem", "p": 2.5, "learnable": False, "mode": "group", "groups": 2}},
    })
    assert fixed_p(config.model.pool.model_dump()) == 2.5


@pytest.mark.parametrize("p", [1.0, 2.5, 8.0])
def test_fixed_gem_is_functional_gem_at_that_p(p):
    pool = fixed_gem(p)
    x = positive_map(2, C, 5, 3, seed=21)
    torch.testing.assert_close(pool(x), gem(x, p), rtol=1e-6, atol=0)
    assert list(pool.parameters()) == [] and global_p(pool) == p
    torch.testing.assert_close(fixed_gem(p, eps=1e-3)(torch.zeros(1, C, 2, 2)), torch.full((1, C), 1e-3))
