"""The one owner of the pooling exponent p: how it is read from a model, which configured pool
is a fixed-p baseline, and the fixed GeM (max pooling at p = inf) that the test-time probe puts
in a model's place.

Every other module asks these functions; none reads ``pool.p`` or compares pool names itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pooling_lab.pooling.base import Pool
from pooling_lab.pooling.global_pools import GLOBAL_POOLS

P = "p"  # the name under which a pool declares its GeM exponent


def exponents(pool: Pool) -> dict[str, torch.Tensor]:
    """Every exponent ``pool`` declares (learnable or fixed), detached, shape (size,)."""
    return {name: pool.effective(name).detach() for name in pool.declared_exponents()}


def model_exponents(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every pooling exponent of a model (global and local pools), keyed ``module.name``."""
    return {
        f"{module}.{name}" if module else name: value
        for module, pool in model.named_modules()
        if isinstance(pool, Pool)
        for name, value in exponents(pool).items()
    }


def global_p(pool: nn.Module) -> float:
    """The global pool's p (its mean when per-channel or per-group); NaN when it has none."""
    if isinstance(pool, Pool) and P in pool.declared_exponents():
        return pool.effective(P).detach().float().mean().item()
    return math.nan


def fixed_p(pool_spec: Mapping[str, Any]) -> float | None:
    """The p of a configured global pool (``model.pool``) that holds GeM's p fixed: a fixed-p
    baseline; ``None`` for a learnable p or a pool without one.  The spec is validated first, so
    an option read back as a whole float (``groups: 4.0``) counts as the integer it stands for."""
    name = pool_spec["name"]
    options = GLOBAL_POOLS.get(name).spec_model(**pool_spec).model_dump(exclude={"name"})
    # a channel count that every integer option divides, as GeM's groups and attention's heads must
    channels = math.lcm(1, *(value for value in options.values() if type(value) is int and value > 0))
    pool = GLOBAL_POOLS.build(name, channels=channels, **options)
    if P not in pool.declared_exponents() or isinstance(pool.stored(P), nn.Parameter):
        return None
    return float(options[P])


def fixed_gem(p: float, eps: float = 1e-6) -> Pool:
    """A GeM with one fixed, finite p."""
    return GLOBAL_POOLS.build("gem", channels=1, p=p, learnable=False, mode="shared", eps=eps)


def probe_pool(p: float, eps: float = 1e-6) -> Pool:
    """What the probe evaluates a trained model with at p: a fixed GeM, or for p = inf its limit,
    max pooling."""
    return GLOBAL_POOLS.build("max", channels=1) if p == math.inf else fixed_gem(p, eps)
