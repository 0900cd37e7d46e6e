"""The tensor-resident batched loader against a ``torch.utils.data.DataLoader`` with
per-sample transforms (the usual torchvision-style pipeline: crop with padding, flip, to float,
normalise, one image at a time), on the same uint8 images.  Images per second of CPU time of one
thread (torch held at one thread), median of repeats.  Run: ``python -m benchmarks.data_path``.
"""

from __future__ import annotations

import functools
import time

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.report import interleaved_medians, main_for
from pooling_lab.data import AugmentConfig, BatchLoader, Split

SHAPES = {"fmnist 1x28x28": (1, 28, 28), "cifar 3x32x32": (3, 32, 32)}
BATCH = 128
PADDING = 4


class PerSampleDataset(Dataset):
    """Each image augmented on its own, as a per-sample transform pipeline does."""

    def __init__(self, split: Split, mean: float, std: float, generator: torch.Generator):
        self.split, self.mean, self.std, self.generator = split, mean, std, generator

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.split.images[index]
        padded = torch.nn.functional.pad(image, (PADDING,) * 4)
        top, left = torch.randint(0, 2 * PADDING + 1, (2,), generator=self.generator).tolist()
        image = padded[:, top : top + image.shape[1], left : left + image.shape[2]]
        if torch.rand((), generator=self.generator) < 0.5:
            image = image.flip(-1)
        return (image.float() / 255 - self.mean) / self.std, self.split.labels[index]


def _epoch_seconds(batches) -> float:
    start = time.thread_time()
    for images, labels in batches:
        images.sum(), labels.sum()  # touch the batch as a training step would
    return time.thread_time() - start


def measure(name: str, shape: tuple[int, int, int], count: int, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator),
                  torch.randint(0, 10, (count,), generator=generator))
    channels = shape[0]
    ours = BatchLoader(split, BATCH, device=torch.device("cpu"), mean=(0.5,) * channels, std=(0.25,) * channels,
                       shuffle=True, drop_last=True, augment=AugmentConfig(crop_padding=PADDING, flip=True),
                       generator=torch.Generator().manual_seed(0))
    baseline = DataLoader(PerSampleDataset(split, 0.5, 0.25, torch.Generator().manual_seed(0)),
                          batch_size=BATCH, shuffle=True, drop_last=True, num_workers=0)
    seconds = interleaved_medians({"ours": functools.partial(_epoch_seconds, ours),
                                   "dataloader": functools.partial(_epoch_seconds, baseline)}, warmup=1, repeats=repeats)
    images = (count // BATCH) * BATCH
    ours_rate = images / seconds["ours"]
    baseline_rate = images / seconds["dataloader"]
    return {
        "data": name,
        "ours_img_s": round(ours_rate),
        "dataloader_img_s": round(baseline_rate),
        "speedup": round(ours_rate / baseline_rate, 1),
    }


def run(quick: bool) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        count = 2048 if quick else 10240
        return [measure(name, shape, count, repeats=2 if quick else 5) for name, shape in SHAPES.items()]
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main_for(run)
