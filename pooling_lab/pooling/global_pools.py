"""Global pools without an exponent: a feature map (N, C, H, W) becomes (N, out_features).

The GeM family lives in ``gem_pools`` and the attention pool in ``attention``; all of them
register in ``GLOBAL_POOLS``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from pooling_lab.pooling.base import FixedPool, MixedMaxAvg, Pool
from pooling_lab.pooling.functional import avg_pool, lse_pool, max_pool
from pooling_lab.registry import Registry

GLOBAL_POOLS = Registry("pool", context=("channels",))


def _avg_max_mean(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (avg_pool(x) + max_pool(x))


def _avg_max_concatenated(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([avg_pool(x), max_pool(x)], dim=1)


@GLOBAL_POOLS.register("avg")
class AvgPool(FixedPool):
    """Average pooling: f_k = mean over H x W of x_k."""

    function = staticmethod(avg_pool)


@GLOBAL_POOLS.register("max")
class MaxPool(FixedPool):
    """Max pooling: f_k = max over H x W of x_k."""

    function = staticmethod(max_pool)


@GLOBAL_POOLS.register("avgmax")
class AvgMaxPool(FixedPool):
    """Mean of average and max pooling: f_k = (mean x_k + max x_k) / 2."""

    function = staticmethod(_avg_max_mean)


@GLOBAL_POOLS.register("catavgmax")
class CatAvgMaxPool(FixedPool):
    """Average and max pooling side by side: f = [mean x; max x], width 2C."""

    function = staticmethod(_avg_max_concatenated)

    def out_features(self, channels: int) -> int:
        return 2 * channels


@GLOBAL_POOLS.register("lse")
class LSEPool(Pool):
    """Log-sum-exp pooling, f_k = (1/r) log(mean exp(r x_k)), learnable sharpness r > 0.

    Pinheiro & Collobert, "From Image-level to Pixel-level Labeling with Convolutional
    Networks", CVPR 2015.  r (stored as log r) moves f from the mean (r -> 0) to the max
    (r -> inf).
    """

    def __init__(
        self,
        channels: int,
        r: Annotated[float, Field(gt=0, description="initial sharpness")] = 1.0,
        learnable: bool = True,
    ):
        super().__init__()
        self.declare("r", r, 1, "log", learnable)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return lse_pool(x, self.effective("r")[0])


@GLOBAL_POOLS.register("mixed")
class MixedPool(MixedMaxAvg):
    """Mixed max-average pooling, f = alpha max x + (1 - alpha) mean x, learnable alpha
    (Lee, Gallagher & Tu, AISTATS 2016)."""

    average, maximum = staticmethod(avg_pool), staticmethod(max_pool)


@GLOBAL_POOLS.register("gated")
class GatedPool(Pool):
    """Gated max-average pooling, f_k = alpha_k max x_k + (1 - alpha_k) mean x_k with the gate
    alpha_k = sigmoid(w_k1 mean x_k + w_k2 max x_k + b_k) computed from the input.

    After Lee, Gallagher & Tu, "Generalizing Pooling Functions in CNNs: Mixed, Gated, and
    Tree", AISTATS 2016; their gate reads the pooling region, which has no fixed size for a
    global pool, so this one reads the region's two statistics.  The gate starts at 1/2 (zero
    weights: average-max pooling).  It traces its weights and the gate value per channel,
    averaged over the last batch (grad column: the gate bias); the weights are ordinary network
    weights, so the optimiser's base group trains them.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gate_weight = nn.Parameter(torch.zeros(channels, 2))
        self.gate_bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("last_alpha", torch.full((channels,), 0.5), persistent=False)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        mean, peak = avg_pool(x), max_pool(x)
        weight = self.gate_weight
        alpha = torch.sigmoid(mean * weight[:, 0] + peak * weight[:, 1] + self.gate_bias)
        self.last_alpha = alpha.detach().mean(dim=0)
        return torch.lerp(mean, peak, alpha)

    def traced(self) -> dict[str, tuple[torch.Tensor, nn.Parameter]]:
        return {
            "gate_weight": (self.gate_weight.detach().flatten(), self.gate_weight),
            "alpha": (self.last_alpha, self.gate_bias),
        }

    def group_parameters(self) -> list[nn.Parameter]:
        return []
