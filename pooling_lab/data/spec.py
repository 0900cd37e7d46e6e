"""The ``data:`` section of an experiment file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DatasetName = Literal["cifar10", "cifar100", "fashion_mnist", "mnist", "synthetic"]


class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crop_padding: int = Field(
        4,
        ge=0,
        description="Random crop after zero-padding each side by this many pixels; 0 = off.",
    )
    flip: bool = Field(True, description="Random horizontal flip, each image its own coin.")


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(10, ge=2, description="Number of classes (one prototype patch each).")
    image_size: int = Field(32, ge=8, description="Height and width of the square images.")
    channels: Literal[1, 3] = Field(3, description="1 (grey) or 3 (colour).")
    train_size: int = Field(10000, gt=0, description="Images generated for the train split.")
    test_size: int = Field(2000, gt=0, description="Images generated for the test split.")
    cell_size: int = Field(
        4,
        ge=1,
        description="Side of the square cells the image is divided into; divides image_size.",
    )
    signal_fraction: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Fraction of cells that carry the class prototype: small favours max-like "
        "pooling, 1.0 favours average pooling.",
    )
    signal_strength: float = Field(
        6.0,
        gt=0,
        description="Total evidence per image (in units of the noise); each signal cell gets "
        "strength / sqrt(number of signal cells).",
    )
    seed: int = Field(
        0, ge=0, description="Seed of the generator (independent of data.split_seed)."
    )

    @model_validator(mode="after")
    def _cells_tile_the_image(self) -> SyntheticConfig:
        if self.image_size % self.cell_size:
            raise ValueError(f"cell_size {self.cell_size} must divide image_size {self.image_size}")
        if self.channels * self.cell_size**2 < 2:
            raise ValueError("a zero-mean prototype needs 2 values or more: use cell_size >= 2")
        return self


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: DatasetName = Field(description="Which data set to train and test on.")
    root: str = Field(
        "~/.cache/pooling-lab", description="Folder that holds (or receives) the data sets."
    )
    download: bool = Field(
        False, description="Download a missing data set from its official source (needs internet)."
    )
    train_subset: int | None = Field(
        None,
        gt=0,
        description="Train on a random subset of this many images (after the val split).",
    )
    val_size: float = Field(
        0.1,
        ge=0,
        description="Images held out of the official train set for validation: a fraction "
        "below 0.5, or a whole number >= 1 of images; 0 = no validation split.",
    )
    split_seed: int = Field(0, description="Seed that chooses the val split and the train subset.")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Train-time augmentation."
    )
    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig, description="Generator settings for dataset: synthetic."
    )

    @field_validator("val_size")
    @classmethod
    def _fraction_or_count(cls, value: float) -> float:
        if 0.5 <= value < 1:
            raise ValueError("a fraction must be below 0.5 (use a whole number >= 1 for a count)")
        if value >= 1 and not value.is_integer():
            raise ValueError("a count of images must be a whole number")
        return value

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    def val_count(self, train_images: int) -> int:
        """Number of validation images out of ``train_images``; a fraction > 0 keeps at least one."""
        if self.val_size >= 1:
            return int(self.val_size)
        if self.val_size == 0:
            return 0
        return max(1, round(self.val_size * train_images))
