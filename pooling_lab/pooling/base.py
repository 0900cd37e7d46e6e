"""What every pooling module shares: its output width and the parameters it wants traced."""

from __future__ import annotations

import torch
from torch import nn


class Pool(nn.Module):
    """Base class of the pooling modules.

    ``traced()`` declares the learnable pooling parameters once, so that the recorder writes them
    to ``params.csv`` without the training loop knowing what a pool contains.  It maps a
    parameter name to ``(value, parameter)``: the value as the paper defines it (detached) and
    the ``nn.Parameter`` whose ``.grad`` is recorded beside it.
    """

    def out_features(self, channels: int) -> int:
        return channels

    def traced(self) -> dict[str, tuple[torch.Tensor, nn.Parameter]]:
        return {}

    def clamp_exponents_(self, low: float | None, high: float | None) -> None:
        """Keep learnable exponents in ``[low, high]`` (called after each optimiser step)."""
