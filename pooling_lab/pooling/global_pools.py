"""Global pools: a feature map (N, C, H, W) becomes a descriptor (N, out_features)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from pooling_lab.pooling.base import Pool
from pooling_lab.pooling.functional import avg_pool, gem, max_pool
from pooling_lab.registry import Registry

GLOBAL_POOLS = Registry("pool", context=("channels",))


@GLOBAL_POOLS.register("avg")
class AvgPool(Pool):
    """Average pooling: f_k = mean over H x W of x_k."""

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool(x)


@GLOBAL_POOLS.register("max")
class MaxPool(Pool):
    """Max pooling: f_k = max over H x W of x_k."""

    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool(x)


@GLOBAL_POOLS.register("gem")
class GeM(Pool):
    """Generalised-mean pooling, f_k = (mean x^p)^(1/p) (Radenovic et al., TPAMI 2018).

    p = 1 is average pooling and p -> inf max pooling.  ``mode`` chooses one ``shared`` p or one
    p ``per_channel``; ``learnable: false`` keeps p as a fixed buffer.
    """

    def __init__(
        self,
        channels: int,
        p: Annotated[float, Field(gt=0, description="initial exponent")] = 3.0,
        learnable: bool = True,
        mode: Literal["shared", "per_channel"] = "shared",
        eps: Annotated[float, Field(gt=0, lt=1, description="clamp floor of the input")] = 1e-6,
    ):
        super().__init__()
        if p <= eps:
            raise ValueError(f"p={p} must exceed eps={eps}")
        self.eps = eps
        self.mode = mode
        initial = torch.full((channels if mode == "per_channel" else 1,), float(p))
        if learnable:
            self.p = nn.Parameter(initial)
        else:
            self.register_buffer("p", initial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return gem(x, self.p if self.mode == "per_channel" else self.p[0], self.eps)

    def traced(self) -> dict[str, tuple[torch.Tensor, nn.Parameter]]:
        if not isinstance(self.p, nn.Parameter):
            return {}
        value = self.p.detach()
        return {"p": (value[0] if self.mode == "shared" else value, self.p)}

    def clamp_exponents_(self, low: float | None, high: float | None) -> None:
        if isinstance(self.p, nn.Parameter) and (low is not None or high is not None):
            with torch.no_grad():
                self.p.clamp_(min=low, max=high)

    def extra_repr(self) -> str:
        values = self.p.detach()
        shown = f"{values[0].item():.4f}" if self.mode == "shared" else (
            f"mean={values.mean().item():.4f}, range=[{values.min().item():.3f}, {values.max().item():.3f}]"
        )
        kind = "learnable" if isinstance(self.p, nn.Parameter) else "fixed"
        return f"p={shown}, mode={self.mode}, {kind}, eps={self.eps:g}"
