"""Data sets as uint8 tensors: read (or generate) a source, hold out val, subsample train."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pooling_lab.data.cifar import load_cifar
from pooling_lab.data.imagefolder import load_image_folder
from pooling_lab.data.imagenette import load_fastai
from pooling_lab.data.loader import BatchLoader
from pooling_lab.data.mnist import load_idx_dataset
from pooling_lab.data.open_set import split_classes
from pooling_lab.data.spec import (
    FASTAI_DATASETS,
    SUBSET_DATASETS,
    AugmentConfig,
    DataConfig,
    OpenSetConfig,
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
    "OpenSetConfig",
    "RandomResizedCropConfig",
    "Split",
    "SyntheticConfig",
    "load_data",
]


@dataclass(frozen=True)
class DataSplits:
    """The splits of a data set.  Under the open-set protocol, train, val, test, num_classes and
    class_names hold the seen classes only (the head's), and ``unseen_val`` / ``unseen_test`` the
    unseen classes that retrieval and the probe use; under the closed-set protocol those are
    ``None`` and retrieval uses val and test."""

    train: Split
    val: Split | None
    test: Split  # always the official test set
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] units, of the train split actually used
    std: tuple[float, ...]
    unseen_val: Split | None = None  # held out of the official train set, like val
    unseen_test: Split | None = None  # from the official test set
    unseen_class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.train.images.shape[1:])


def load_data(cfg: DataConfig) -> DataSplits:
    """The splits ``cfg`` describes; the same ``cfg`` always gives byte-identical tensors."""
    source, unseen = read_source(cfg), None
    if cfg.open_set is not None:
        source, unseen = split_classes(source, cfg.open_set)
    generator = torch.Generator().manual_seed(cfg.split_seed)
    train, val = held_out(source.train, cfg, generator)
    if cfg.train_subset is not None:
        if cfg.train_subset > len(train):
            raise UserError(
                f"{cfg.train_subset} is more than the {len(train)} train images left after "
                f"holding out {len(val) if val else 0} for validation",
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
        unseen_val=None if unseen is None else held_out(unseen.train, cfg, generator, "unseen-class ")[1],
        unseen_test=None if unseen is None else unseen.test,
        unseen_class_names=() if unseen is None else tuple(unseen.class_names),
    )


def held_out(split: Split, cfg: DataConfig, generator: torch.Generator, kind: str = "") -> tuple[Split, Split | None]:
    """(the rest, the validation images): ``data.val_size`` of ``split``, stratified; ``kind``
    names the images in an error."""
    val_count = cfg.val_count(len(split))
    if val_count >= len(split):
        raise UserError(
            f"{val_count} validation images leave none of the {len(split)} {kind}train images",
            field="data.val_size",
        )
    if not val_count:
        return split, None
    return partition(split, val_count, generator)


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
