"""Batches from a split that lives on the device as uint8, augmented and normalised there.

Nothing in an epoch reads a tensor value back on the host, so iterating never waits for the
device. Randomness (shuffle, crops, flips) comes from ``generator``, which must be on the same
device as the data: the caller creates ``torch.Generator(device=device)`` and seeds it, and a
checkpoint can save and restore ``generator.get_state()`` to replay the same batches.  With
``m_per_class`` every batch holds that many images of each of batch_size / m_per_class classes
(see m_per_class.py), whatever ``shuffle`` and ``drop_last`` say.

With ``share=(rank, ranks)`` (one run on several processes) every process draws the same global
batches and keeps its contiguous part of each (the rank-th of ``ranks`` equal parts, so the
M-per-class blocks stay whole): the processes together see exactly the batches one process
would, with the same augmentation draws, and their random streams stay in step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from pooling_lab.data.augment import crop_and_flip, random_resized_crop
from pooling_lab.data.m_per_class import MPerClassOrder
from pooling_lab.data.spec import AugmentConfig
from pooling_lab.data.splits import Split


class BatchLoader:
    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        drop_last: bool = False,
        augment: AugmentConfig | None = None,
        generator: torch.Generator | None = None,
        channels_last: bool = False,
        m_per_class: int | None = None,
        share: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.crop_padding = augment.crop_padding if augment else 0
        self.flip = augment.flip if augment else False
        self.resized_crop = augment.random_resized_crop if augment else None
        self.generator = generator
        self.m_per_class = None if m_per_class is None else MPerClassOrder(self.labels, batch_size, m_per_class)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.rank, self.ranks = share
        # x = (pixel / 255 - mean) / std, folded into one multiply and one subtract
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std_t)
        self.shift = mean_t / std_t

    def __len__(self) -> int:
        if self.m_per_class is not None:
            return self.m_per_class.batches
        full, rest = divmod(len(self.labels), self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.m_per_class is not None:
            order = self.m_per_class(self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            part = self._part(len(index))
            if self.draws_at_random:  # augment the whole batch, so that the draws match one process's
                yield self._prepare(self.images[index])[part], self.labels[index[part]]
            else:
                index = index[part]
                yield self._prepare(self.images[index]), self.labels[index]

    def _part(self, batch: int) -> slice:
        """This rank's part of a batch of ``batch`` images."""
        return slice(self.rank * batch // self.ranks, (self.rank + 1) * batch // self.ranks)

    @property
    def draws_at_random(self) -> bool:
        return self.resized_crop is not None or bool(self.crop_padding) or self.flip

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.resized_crop is not None:
            crop = self.resized_crop
            x = random_resized_crop(
                images.float(), crop.scale, crop.ratio, self.flip, self.generator
            )
        else:
            if self.crop_padding or self.flip:
                images = crop_and_flip(images, self.crop_padding, self.flip, self.generator)
            x = images.float()
        x = x * self.scale - self.shift
        return x.contiguous(memory_format=self.memory_format)
