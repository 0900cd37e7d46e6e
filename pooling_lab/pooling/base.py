"""What every pooling module shares: float32 computation, and pooling parameters declared once
so that tracing, the optimiser group, clamping and ``repr`` need no per-pool code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from pooling_lab.pooling.reparam import RANGE, Reparam, check_in_range, to_stored, to_value


@dataclass(frozen=True)
class Declared:
    attr: str  # the attribute holding the stored tensor
    reparam: Reparam
    exponent: bool  # kept in range by ``clamp_exponents_``


class Pool(nn.Module):
    """Base class of the pooling modules.

    ``forward`` disables autocast and hands ``compute`` a float32 map (float64 stays float64),
    so pooling is exact even when the backbone runs in bf16.  A subclass declares its pooling
    parameters (p, r, alpha, ...) with ``declare``; a learnable one is an ``nn.Parameter``
    holding the value in its parametrisation, a fixed one a buffer holding the value.

    ``traced()`` maps a name to ``(value, parameter)``: the value as the paper defines it
    (detached; a scalar, or a tensor the recorder summarises as a distribution) and the
    ``nn.Parameter`` whose ``.grad`` is recorded beside it.  ``group_parameters()`` are the
    parameters that get the optimiser's pooling group (own lr, no weight decay).
    """

    def __init__(self) -> None:
        super().__init__()
        self._declared: dict[str, Declared] = {}

    def declare(
        self, name: str, initial: float, size: int, reparam: Reparam, learnable: bool, exponent: bool = False
    ) -> None:
        """Create pooling parameter ``name``: ``size`` values starting at ``initial``, stored
        as ``name`` (direct or fixed) or ``name_raw`` (softplus, log, sigmoid)."""
        if learnable:
            check_in_range(name, initial, reparam)
        else:
            reparam = "direct"
        stored = to_stored(torch.full((size,), float(initial)), reparam)
        attr = name if reparam == "direct" else f"{name}_raw"
        if learnable:
            self.register_parameter(attr, nn.Parameter(stored))
        else:
            self.register_buffer(attr, stored)
        self._declared[name] = Declared(attr, reparam, exponent)

    def effective(self, name: str) -> torch.Tensor:
        """The current values of a declared parameter, differentiable, shape (size,)."""
        declared = self._declared[name]
        return to_value(getattr(self, declared.attr), declared.reparam)

    def stored(self, name: str) -> torch.Tensor:
        """The tensor holding a declared parameter: an ``nn.Parameter`` when it learns."""
        return getattr(self, self._declared[name].attr)

    def declared_exponents(self) -> list[str]:
        """The names of the declared parameters that are exponents (kept in range by the clamp)."""
        return [name for name, declared in self._declared.items() if declared.exponent]

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.compute(x if x.dtype in (torch.float32, torch.float64) else x.float())

    def out_features(self, channels: int) -> int:
        return channels

    def traced(self) -> dict[str, tuple[torch.Tensor, nn.Parameter]]:
        traced = {}
        for name, declared in self._declared.items():
            stored = getattr(self, declared.attr)
            if isinstance(stored, nn.Parameter):
                value = self.effective(name).detach()
                traced[name] = (value[0] if value.numel() == 1 else value, stored)
        return traced

    def group_parameters(self) -> list[nn.Parameter]:
        """The parameters of the optimiser's pooling group; by default those of ``traced()``."""
        return list({id(parameter): parameter for _, parameter in self.traced().values()}.values())

    def clamp_exponents_(self, low: float | None, high: float | None) -> None:
        """Keep the value (not the stored form) of every learnable exponent in ``[low, high]``
        (called after each optimiser step)."""
        if low is None and high is None:
            return
        with torch.no_grad():
            for name, declared in self._declared.items():
                stored = getattr(self, declared.attr)
                if not (declared.exponent and isinstance(stored, nn.Parameter)):
                    continue
                if high is not None and high <= RANGE[declared.reparam][0]:
                    raise ValueError(f"cannot clamp {name} to <= {high}: the {declared.reparam} parametrisation keeps it above {RANGE[declared.reparam][0]}")
                value = self.effective(name)
                clamped = value.clamp(min=low, max=high)
                stored.copy_(torch.where(clamped != value, to_stored(clamped, declared.reparam), stored))

    def extra_repr(self) -> str:
        """Every declared and every traced value: a scalar to 4 decimals, a tensor as its mean
        and range; declared ones say whether they learn and how they are stored."""
        shown = {name: self.effective(name).detach() for name in self._declared}
        shown.update({name: value for name, (value, _) in self.traced().items()})
        parts = []
        for name, value in shown.items():
            text = f"{value.item():.4f}" if value.numel() == 1 else (
                f"(mean={value.mean().item():.4f}, range=[{value.min().item():.3f}, {value.max().item():.3f}])"
            )
            if name in self._declared:
                declared = self._declared[name]
                kind = "learnable" if isinstance(getattr(self, declared.attr), nn.Parameter) else "fixed"
                text += f" ({kind}{'' if declared.reparam == 'direct' else ', ' + declared.reparam})"
            parts.append(f"{name}={text}")
        return ", ".join(parts)


class FixedPool(Pool):
    """A pool with nothing to learn: ``function`` (a subclass attribute) is the whole pool."""

    function: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, channels: int):
        super().__init__()

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class MixedMaxAvg(Pool):
    """alpha * max + (1 - alpha) * mean with one learnable alpha in [0, 1] (Lee, Gallagher & Tu,
    "Generalizing Pooling Functions in CNNs: Mixed, Gated, and Tree", AISTATS 2016).  Stored as
    its logit, alpha = sigmoid(a), so it stays in (0, 1) without clamping and cannot freeze at a
    bound (the trace records alpha with the gradient of a); the endpoints 0 and 1 are for a
    fixed alpha.  Subclasses say over what: ``average`` and ``maximum`` map x to the pooled means
    and maxima (the whole map for the global pool, 2x2 regions for the local one)."""

    average: Callable[[torch.Tensor], torch.Tensor]
    maximum: Callable[[torch.Tensor], torch.Tensor]

    def __init__(
        self,
        channels: int,
        alpha: Annotated[float, Field(ge=0, le=1, description="initial weight of max pooling")] = 0.5,
        learnable: bool = True,
    ):
        super().__init__()
        self.declare("alpha", alpha, 1, "sigmoid", learnable)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lerp(self.average(x), self.maximum(x), self.effective("alpha")[0])
