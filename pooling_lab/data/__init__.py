"""Data sets as uint8 tensors: read (or generate) a source, hold out val, subsample train."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pooling_lab.data.cifar import load_cifar
from pooling_lab.data.imagefolder import load_image_folder
from pooling_lab.data.imagenette import load_fastai
from pooling_lab.data.loader import BatchLoader
from pooling_lab.data.mnist import load_idx_dataset
from pooling_lab.data.spec import (
    FASTAI_DATASETS,
    SUBSET_DATASETS,
    AugmentConfig,
    DataConfig,
    RandomResizedCropConfig,
    SyntheticConfig,
)
from pooling_lab.data.splits import Source, Split, channel_stats, partition
from pooling_lab.data.synthetic import generate
from pooling_lab.errors import UserError

__all__ = [
    "AugmentConfig",
    "BatchLoader",
    "DataConfig",
    "DataSplits",
    "RandomResizedCropConfig",
    "Split",
    "SyntheticConfig",
    "load_data",
]


@dataclass(frozen=True)
class DataSplits:
    train: Split
    val: Split | None
    test: Split  # always the official test set
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] units, of the train split actually used
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.train.images.shape[1:])


def load_data(cfg: DataConfig) -> DataSplits:
    """The splits ``cfg`` describes; the same ``cfg`` always gives byte-identical tensors."""
    source = read_source(cfg)
    generator = torch.Generator().manual_seed(cfg.split_seed)
    train, val = source.train, None
    val_count = cfg.val_count(len(train))
    if val_count >= len(train):
        raise UserError(
            f"{val_count} validation images leave none of the {len(train)} train images",
            field="data.val_size",
        )
    if val_count:
        train, val = partition(train, val_count, generator)
    if cfg.train_subset is not None:
        if cfg.train_subset > len(train):
            raise UserError(
                f"{cfg.train_subset} is more than the {len(train)} train images left after "
                f"holding out {val_count} for validation",
                field="data.train_subset",
            )
        _, train = partition(train, cfg.train_subset, generator)
    mean, std = channel_stats(train.images)
    return DataSplits(
        train=train,
        val=val,
        test=source.test,
        num_classes=len(source.class_names),
        class_names=source.class_names,
        mean=mean,
        std=std,
    )


def read_source(cfg: DataConfig) -> Source:
    if cfg.dataset == "synthetic":
        return generate(cfg.synthetic)
    if cfg.dataset in ("cifar10", "cifar100"):
        return load_cifar(cfg.dataset, cfg.root_path, cfg.download)
    if cfg.dataset in FASTAI_DATASETS:
        return load_fastai(cfg)
    if cfg.dataset in SUBSET_DATASETS:
        return load_image_folder(cfg)
    return load_idx_dataset(cfg.dataset, cfg.root_path, cfg.download)
