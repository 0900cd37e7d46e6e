"""Pooling layers, selected by name from one registry."""

from __future__ import annotations

from typing import Any

from pooling_lab.pooling import attention, gem_pools  # noqa: F401  (registers their pools)
from pooling_lab.pooling.base import Pool
from pooling_lab.pooling.functional import avg_pool, gem, lse_pool, max_pool, regional_gem
from pooling_lab.pooling.fused import gem_fused
from pooling_lab.pooling.global_pools import GLOBAL_POOLS


def build_pool(name: str, channels: int, **kwargs: Any) -> Pool:
    """Build the global pool ``name`` mapping (N, C, H, W) to (N, out_features(C))."""
    return GLOBAL_POOLS.build(name, channels=channels, **kwargs)


__all__ = [
    "GLOBAL_POOLS",
    "Pool",
    "avg_pool",
    "build_pool",
    "gem",
    "gem_fused",
    "lse_pool",
    "max_pool",
    "regional_gem",
]
