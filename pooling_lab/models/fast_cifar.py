"""``fast_cifar``: a small, wide residual net for fast CIFAR training, in the spirit of the
CIFAR-10 speed-run nets (few layers, large widths, pooling early, BatchNorm, everything on the
GPU) with the global pool left to the harness (GeM by default).

stem 3x3 conv -> three groups, each: 3x3 conv -> 2x downsampling (max pool, or ``local_pool``)
-> BN -> ReLU -> a residual pair of 3x3 conv-BN-ReLU layers.  A 32x32 input ends as a 4x4 map of
``4 * width`` channels.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from pooling_lab.models.backbones import BACKBONES, conv_bn_relu
from pooling_lab.pooling import LocalPoolFactory


class _Group(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, downsample: nn.Module):
        super().__init__()
        self.entry = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            downsample,
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.residual = nn.Sequential(conv_bn_relu(out_channels, out_channels), conv_bn_relu(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        return x + self.residual(x)  # a sum of non-negative maps stays non-negative


@BACKBONES.register("fast_cifar")
class FastCifar(nn.Module):
    """A small, wide residual net for fast CIFAR training (groups of width, 2x, 4x ``width``)."""

    def __init__(
        self,
        in_channels: int,
        width: Annotated[int, Field(ge=8, le=512)] = 64,
        local_pool: LocalPoolFactory | None = None,
    ):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        groups, channels = [], width
        for out_channels in (width, 2 * width, 4 * width):
            downsample = nn.MaxPool2d(2, ceil_mode=True) if local_pool is None else local_pool(out_channels)
            groups.append(_Group(channels, out_channels, downsample))
            channels = out_channels
        self.groups = nn.Sequential(*groups)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.groups(self.stem(x))
