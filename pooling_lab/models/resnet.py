"""ResNet-18/34/50 with the ImageNet stem (He et al., CVPR 2016), written here.

Stem: 7x7 stride-2 convolution, BN, ReLU, 3x3 stride-2 max pool; then four stages of residual
blocks at ``width``, 2, 4 and 8 times ``width`` (times 4 for the Bottleneck's expansion), the
first block of stages 2-4 halving the map.  Every 2x reduction rounds up, so a 224x224 input ends
as a 7x7 map and a 32x32 one as 1x1; the map has 8 * width channels for ResNet-18/34 (512 at
width 64) and 32 * width for ResNet-50 (2048), and is post-ReLU, as GeM expects.  ResNet-50
strides its 3x3 convolution, not the first 1x1 (the variant often called ResNet v1.5).

With a ``local_pool`` the stem max pool becomes a local pool at ``width`` channels, and the first
block of stages 2-4 pools its input (before the channels grow) and runs its convolutions and
shortcut at stride 1, as ``resnet18_cifar`` does: four local pools, and the pools are the only
downsampling after the strided stem convolution, which stays.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from pooling_lab.models.backbones import (
    BACKBONES,
    BasicBlock,
    residual_stages,
    shortcut,
)
from pooling_lab.pooling import LocalPoolFactory

Width = Annotated[int, Field(ge=4, le=256)]


class Bottleneck(nn.Module):
    """1x1 reduce to ``out_channels / 4``, 3x3 (strided), 1x1 expand, plus an identity (or 1x1
    projection) shortcut.  Like ``BasicBlock``, a ``pool`` runs first and both paths see its
    output (then ``stride`` is 1)."""

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: nn.Module | None = None):
        super().__init__()
        middle = out_channels // self.expansion
        self.pool = nn.Identity() if pool is None else pool
        self.conv1 = nn.Conv2d(in_channels, middle, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(middle)
        self.conv2 = nn.Conv2d(middle, middle, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(middle)
        self.conv3 = nn.Conv2d(middle, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The ImageNet ResNet: stem, then ``blocks[i]`` blocks of type ``block`` in stage i, whose
    blocks output ``width * 2**i * expansion`` channels."""

    def __init__(
        self,
        in_channels: int,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: tuple[int, int, int, int],
        width: int,
        expansion: int,
        local_pool: LocalPoolFactory | None,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1) if local_pool is None else local_pool(width),
        )
        self.stages, self.out_channels = residual_stages(block, width, width, blocks, expansion, local_pool)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


@BACKBONES.register("resnet18")
def resnet18(in_channels: int, width: Width = 64, local_pool: LocalPoolFactory | None = None) -> ResNet:
    """ResNet-18 (ImageNet stem, BasicBlocks 2-2-2-2): 8 * width channels, 1/32 of the input side."""
    return ResNet(in_channels, BasicBlock, (2, 2, 2, 2), width, 1, local_pool)


@BACKBONES.register("resnet34")
def resnet34(in_channels: int, width: Width = 64, local_pool: LocalPoolFactory | None = None) -> ResNet:
    """ResNet-34 (ImageNet stem, BasicBlocks 3-4-6-3): 8 * width channels, 1/32 of the input side."""
    return ResNet(in_channels, BasicBlock, (3, 4, 6, 3), width, 1, local_pool)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int, width: Width = 64, local_pool: LocalPoolFactory | None = None) -> ResNet:
    """ResNet-50 (ImageNet stem, Bottlenecks 3-4-6-3): 32 * width channels, 1/32 of the input side."""
    return ResNet(in_channels, Bottleneck, (3, 4, 6, 3), width, Bottleneck.expansion, local_pool)
