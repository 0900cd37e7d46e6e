"""Backbones: an image batch becomes a non-negative feature map (N, C, H', W').

Each backbone reports ``out_channels`` so the global pool and the head can size themselves.  The
map ends with a ReLU because GeM expects non-negative inputs.  A convolutional backbone given a
``local_pool`` factory builds one pool per downsampling point in place of its own downsampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from pooling_lab.pooling import LocalPoolFactory
from pooling_lab.registry import Registry

BACKBONES = Registry("backbone", context=("in_channels", "local_pool"))


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@BACKBONES.register("small_cnn")
class SmallCNN(nn.Module):
    """A plain VGG-style net: ``depth`` stages of ``convs_per_stage`` 3x3 conv-BN-ReLU layers.

    Stage i has ``width * 2**i`` channels; a 2x2 max pool (``ceil_mode``), or ``local_pool`` when
    given, halves the map between stages, so a 28x28 input with depth 3 ends as a 7x7 map.  Fast
    enough to train on a laptop CPU.
    """

    def __init__(
        self,
        in_channels: int,
        width: Annotated[int, Field(ge=4, le=1024)] = 32,
        depth: Annotated[int, Field(ge=1, le=6)] = 3,
        convs_per_stage: Annotated[int, Field(ge=1, le=4)] = 1,
        local_pool: LocalPoolFactory | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(depth):
            if stage > 0:
                pool = nn.MaxPool2d(2, ceil_mode=True) if local_pool is None else local_pool(channels)
                layers.append(pool)
            for _ in range(convs_per_stage):
                layers.append(conv_bn_relu(channels, width * 2**stage))
                channels = width * 2**stage
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """A residual block's skip path: identity, or a strided 1x1 projection where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


def residual_stages(
    block: Callable[..., nn.Module],
    in_channels: int,
    width: int,
    counts: tuple[int, ...],
    expansion: int,
    local_pool: LocalPoolFactory | None,
) -> tuple[nn.Sequential, int]:
    """The stages of a ResNet: stage i has ``counts[i]`` blocks of ``width * 2**i * expansion``
    output channels; the first block of every stage after the first halves the map, by stride 2
    or, given ``local_pool``, by that pool at the incoming width (then its convs run at stride 1).
    Returns the stages and their output width."""
    stages: list[nn.Module] = []
    channels = in_channels
    for index, count in enumerate(counts):
        out_channels = width * 2**index * expansion
        for position in range(count):
            downsample = index > 0 and position == 0
            pool = local_pool(channels) if downsample and local_pool is not None else None
            stride = 2 if downsample and pool is None else 1
            stages.append(block(channels, out_channels, stride, pool))
            channels = out_channels
    return nn.Sequential(*stages), channels


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut (He et al., 2016).

    A ``pool`` runs first and both paths see its output: the block downsamples by the pool
    instead of by a strided first convolution and strided shortcut (then ``stride`` is 1).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: nn.Module | None = None):
        super().__init__()
        self.pool = nn.Identity() if pool is None else pool
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@BACKBONES.register("resnet18_cifar")
class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 inputs: a 3x3 stride-1 stem and no stem max pool, so the last of the
    four stages (strides 1, 2, 2, 2) is a 4x4 map of ``8 * width`` channels (512 at width 64).

    With a ``local_pool`` the first block of stages 2-4 pools its input (at the stage's incoming
    width, before the channels grow) and runs its convolutions and shortcut at stride 1 on the
    pooled map, so the pool is the only downsampling and the residual sum stays aligned.
    """

    def __init__(
        self,
        in_channels: int,
        width: Annotated[int, Field(ge=4, le=256)] = 64,
        local_pool: LocalPoolFactory | None = None,
    ):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        self.stages, self.out_channels = residual_stages(BasicBlock, width, width, (2, 2, 2, 2), 1, local_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))
