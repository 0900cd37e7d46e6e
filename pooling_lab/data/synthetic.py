"""Procedural images whose best pooling is known by construction.

The image is a grid of ``cell_size`` x ``cell_size`` cells. Every class owns a fixed random
prototype patch (``channels`` x ``cell_size`` x ``cell_size``, zero mean, unit norm). An image is
Gaussian background noise plus, in k = max(1, round(signal_fraction * cells)) randomly chosen
cells, its class prototype with amplitude ``signal_strength / sqrt(k)``. The total evidence
(the energy of the signal, ``signal_strength ** 2``) is the same at every fraction, only its
spread changes:

* a small fraction puts the evidence in a few strong cells: the best per-cell statistic to pool
  is the maximum, so max-like pooling (a large GeM p) wins;
* ``signal_fraction = 1`` spreads it thinly over every cell: averaging cancels the noise, so
  average pooling (GeM p = 1) wins.

Noise has unit variance per pixel and is mapped to uint8 as ``128 + 24 * value``, clamped to
[0, 255]. Classes are balanced; train and test come from independent random streams of ``seed``
(so the test set does not change with ``train_size``), and the prototypes from a third.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pooling_lab.data.spec import SyntheticConfig
from pooling_lab.data.splits import Source, Split

MID_GREY = 128.0
GREY_LEVELS_PER_NOISE_STD = 24.0
PROTOTYPE_STREAM, TRAIN_STREAM, TEST_STREAM = range(3)
CHUNK_IMAGES = 4096  # bounds the float working memory of the generator


def generate(cfg: SyntheticConfig) -> Source:
    prototypes = class_prototypes(cfg)
    return Source(
        train=_generate_split(cfg, prototypes, cfg.train_size, TRAIN_STREAM),
        test=_generate_split(cfg, prototypes, cfg.test_size, TEST_STREAM),
        class_names=[f"class{c}" for c in range(cfg.num_classes)],
    )


def class_prototypes(cfg: SyntheticConfig) -> torch.Tensor:
    """float32 (num_classes, channels, cell_size, cell_size), each zero-mean with unit norm."""
    flat = torch.randn(
        cfg.num_classes,
        cfg.channels * cfg.cell_size**2,
        generator=_generator(cfg, PROTOTYPE_STREAM),
    )
    flat -= flat.mean(dim=1, keepdim=True)
    flat /= flat.norm(dim=1, keepdim=True)
    return flat.view(cfg.num_classes, cfg.channels, cfg.cell_size, cfg.cell_size)


def signal_cells(cfg: SyntheticConfig) -> int:
    grid = cfg.image_size // cfg.cell_size
    return max(1, round(cfg.signal_fraction * grid * grid))


def _generator(cfg: SyntheticConfig, stream: int) -> torch.Generator:
    seed = np.random.SeedSequence([cfg.seed, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def _generate_split(
    cfg: SyntheticConfig, prototypes: torch.Tensor, size: int, stream: int
) -> Split:
    generator = _generator(cfg, stream)
    labels = (torch.arange(size) % cfg.num_classes)[torch.randperm(size, generator=generator)]
    channels, side, cell = cfg.channels, cfg.image_size, cfg.cell_size
    grid = side // cell
    k = signal_cells(cfg)
    amplitude = cfg.signal_strength / math.sqrt(k)
    images = torch.empty(size, channels, side, side, dtype=torch.uint8)
    for start in range(0, size, CHUNK_IMAGES):
        chunk_labels = labels[start : start + CHUNK_IMAGES]
        n = len(chunk_labels)
        noise = torch.randn(n, channels, side, side, generator=generator)
        chosen = torch.rand(n, grid * grid, generator=generator).argsort(dim=1)[:, :k]
        cell_amplitude = torch.zeros(n, grid * grid).scatter_(1, chosen, amplitude)
        signal = cell_amplitude[:, :, None, None, None] * prototypes[chunk_labels][:, None]
        # (n, row cell, column cell, C, y, x) -> (n, C, row cell, y, column cell, x) = (n, C, H, W)
        signal = signal.view(n, grid, grid, channels, cell, cell).permute(0, 3, 1, 4, 2, 5)
        grey = MID_GREY + GREY_LEVELS_PER_NOISE_STD * (noise + signal.reshape(noise.shape))
        images[start : start + n] = grey.round().clamp(0, 255).to(torch.uint8)
    return Split(images, labels)
