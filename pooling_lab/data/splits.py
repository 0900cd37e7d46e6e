"""Image tensors of one split, and the seeded, stratified choice of the val split and train subset."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), CPU, contiguous
    labels: torch.Tensor  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 ({len(self.images)},), got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices].contiguous(), self.labels[indices].contiguous())


@dataclass(frozen=True)
class Source:
    """A data set as published: the official train and test splits and the class names."""

    train: Split
    test: Split
    class_names: list[str]


def stratified_choice(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``count`` labels drawn at random, each class in proportion (within one).

    Every image gets its quantile within its own class in a random order; the ``count`` images
    with the lowest quantiles are taken, so each class contributes ``count * class_share``.
    """
    n = len(labels)
    shuffled = torch.randperm(n, generator=generator)
    by_class = torch.sort(labels[shuffled], stable=True).indices
    sorted_labels = labels[shuffled][by_class]
    class_sizes = torch.bincount(labels)
    class_starts = torch.cumsum(class_sizes, 0) - class_sizes
    rank_in_class = torch.arange(n) - class_starts[sorted_labels]
    quantile = (rank_in_class + 0.5) / class_sizes[sorted_labels]
    chosen = by_class[torch.sort(quantile, stable=True).indices[:count]]
    return torch.sort(shuffled[chosen]).values


def partition(split: Split, count: int, generator: torch.Generator) -> tuple[Split, Split]:
    """(the rest, ``count`` stratified images) of ``split``; both keep the original order."""
    chosen = stratified_choice(split.labels, count, generator)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[chosen] = False
    return split.take(keep.nonzero().squeeze(1)), split.take(chosen)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, exact, from pixel histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.unbind(1):
        histogram = torch.bincount(channel.reshape(-1), minlength=256).double()
        histogram /= histogram.sum()
        mean = (histogram * values).sum()
        variance = (histogram * (values - mean) ** 2).sum()
        means.append(mean.item())
        stds.append(variance.sqrt().item())
    return tuple(means), tuple(stds)
