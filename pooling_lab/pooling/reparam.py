"""Maps from an unconstrained stored parameter to a pooling parameter with a valid range.

``direct`` stores the value itself; ``softplus`` stores q with value = 1 + softplus(q) (so an
exponent stays above 1); ``log`` stores q with value = exp(q) (positive); ``sigmoid`` stores
q with value = sigmoid(q) (a blend weight in [0, 1]).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Reparam = Literal["direct", "softplus", "log", "sigmoid"]

# open lower and upper end of the values each map can produce
RANGE: dict[str, tuple[float, float]] = {
    "direct": (-math.inf, math.inf),
    "softplus": (1.0, math.inf),
    "log": (0.0, math.inf),
    "sigmoid": (0.0, 1.0),
}


def to_value(stored: torch.Tensor, reparam: Reparam) -> torch.Tensor:
    """The pooling parameter from its stored form (differentiable)."""
    if reparam == "softplus":
        return 1.0 + F.softplus(stored)
    if reparam == "log":
        return stored.exp()
    if reparam == "sigmoid":
        return torch.sigmoid(stored)
    return stored


def to_stored(value: torch.Tensor, reparam: Reparam) -> torch.Tensor:
    """The inverse of ``to_value``: softplus^-1(v - 1) = v - 1 + log(1 - exp(1 - v)), log(v),
    logit(v)."""
    if reparam == "softplus":
        shifted = value - 1.0
        return shifted + torch.log(-torch.expm1(-shifted))
    if reparam == "log":
        return value.log()
    if reparam == "sigmoid":
        return torch.logit(value)
    return value.clone()


def check_in_range(name: str, value: float, reparam: Reparam) -> None:
    """Raise a ValueError when ``value`` lies outside the open range of ``reparam``."""
    low, high = RANGE[reparam]
    if not low < value < high:
        raise ValueError(f"{name}={value} is outside the range ({low}, {high}) of the {reparam} parametrisation")
