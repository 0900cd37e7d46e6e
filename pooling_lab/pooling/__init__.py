"""Pooling layers, selected by name: global pools from ``GLOBAL_POOLS`` (``model.pool``), local
pools from ``LOCAL_POOLS`` (``model.local_pool``)."""

from __future__ import annotations

from typing import Any

from pooling_lab.pooling import attention, gem_pools  # noqa: F401  (registers their pools)
from pooling_lab.pooling.base import Pool
from pooling_lab.pooling.functional import (
    avg_pool,
    gem,
    lse_pool,
    max_pool,
    power_mean,
    regional_gem,
)
from pooling_lab.pooling.fused import gem_fused
from pooling_lab.pooling.global_pools import GLOBAL_POOLS
from pooling_lab.pooling.local_pools import LOCAL_POOLS, LocalPoolFactory, local_pool_factory


def build_pool(name: str, channels: int, **kwargs: Any) -> Pool:
    """Build the global pool ``name`` mapping (N, C, H, W) to (N, out_features(C))."""
    return GLOBAL_POOLS.build(name, channels=channels, **kwargs)


__all__ = [
    "GLOBAL_POOLS",
    "LOCAL_POOLS",
    "LocalPoolFactory",
    "Pool",
    "avg_pool",
    "build_pool",
    "gem",
    "gem_fused",
    "local_pool_factory",
    "lse_pool",
    "max_pool",
    "power_mean",
    "regional_gem",
]
