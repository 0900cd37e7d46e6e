"""The ``data:`` section of an experiment file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pooling_lab.registry import StrictModel

DatasetName = Literal[
    "cifar10",
    "cifar100",
    "fashion_mnist",
    "imagefolder",
    "imagenet_subset",
    "imagenette",
    "imagewoof",
    "mnist",
    "synthetic",
]
EVALUATION_ONLY_DATASETS = ("roxford5k", "rparis6k")  # pooling-lab evaluate RUN_DIR --data NAME
FASTAI_DATASETS = ("imagenette", "imagewoof")
SUBSET_DATASETS = ("imagefolder", "imagenet_subset")
FOLDER_DATASETS = (*FASTAI_DATASETS, *SUBSET_DATASETS)  # decoded from image files and cached
DEFAULT_IMAGE_SIZE = 128
DEFAULT_CACHE_ROOT = "~/.cache/pooling-lab/image-cache"
WNID = r"^n\d{8}$"
CLOSED_SET, OPEN_SET = "closed", "open"  # the evaluation protocols (``DataConfig.protocol``)


def _omitted_when_unset(value: Any) -> bool:
    return value is None


def optional_field(description: str, **constraints: Any) -> Any:
    """An optional field left out of dumps while unset, so that adding it changed neither the
    written config nor the run id of any existing experiment."""
    return Field(None, description=description, exclude_if=_omitted_when_unset, **constraints)


class RandomResizedCropConfig(StrictModel):
    """Crop a random box (area and aspect ratio drawn per image) and resize it to the image size."""

    scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = Field(
        (0.35, 1.0), description="[low, high] fraction of the image area the box covers."
    )
    ratio: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        (3 / 4, 4 / 3), description="[low, high] width / height of the box, drawn log-uniformly."
    )

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"low {value[0]} is above high {value[1]}")
        return value


class AugmentConfig(StrictModel):

    crop_padding: int = Field(
        4,
        ge=0,
        description="Random crop after zero-padding each side by this many pixels; 0 = off.",
    )
    flip: bool = Field(True, description="Random horizontal flip, each image its own coin.")
    random_resized_crop: RandomResizedCropConfig | None = optional_field(
        "Random-resized crop instead of the padded crop ({} for the defaults); crop_padding then "
        "defaults to 0 and may not be set above it."
    )

    @model_validator(mode="after")
    def _one_crop(self) -> AugmentConfig:
        if self.random_resized_crop is not None:
            if "crop_padding" in self.model_fields_set and self.crop_padding:
                raise ValueError("choose one crop: crop_padding > 0 or random_resized_crop")
            self.crop_padding = 0
        return self


class SyntheticConfig(StrictModel):

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


class OpenSetConfig(StrictModel):
    """Classes held out of training (the open-set protocol of deep metric learning): the model
    trains on the seen classes, and its accuracy is measured on them; retrieval metrics and the
    test-time p probe use only the unseen classes."""

    unseen_classes: int | None = optional_field(
        "The last K classes (by label) are unseen: the convention of CUB-200 (100 / 100) and "
        "CIFAR-100 (50 / 50).",
        ge=2,
    )
    unseen: list[Annotated[int, Field(ge=0)]] | None = optional_field(
        "The unseen classes by label, instead of the last K.", min_length=2
    )

    @model_validator(mode="after")
    def _one_choice(self) -> OpenSetConfig:
        if (self.unseen_classes is None) == (self.unseen is None):
            raise ValueError("give unseen_classes (the last K classes) or unseen (their labels), one of them")
        if self.unseen is not None and len(set(self.unseen)) < len(self.unseen):
            repeated = sorted({label for label in self.unseen if self.unseen.count(label) > 1})
            raise ValueError(f"unseen classes repeated: {', '.join(map(str, repeated))}")
        return self

    @property
    def labels_field(self) -> str:
        """The dotted field that names the unseen classes, for error messages."""
        return "data.open_set." + ("unseen" if self.unseen is not None else "unseen_classes")

    def unseen_labels(self, num_classes: int) -> list[int]:
        """The unseen classes of a data set of ``num_classes`` classes, sorted."""
        if self.unseen is not None:
            return sorted(self.unseen)
        return list(range(num_classes - (self.unseen_classes or 0), num_classes))


class DataConfig(StrictModel):

    dataset: DatasetName = Field(description="Which data set to train and test on.")
    root: str = Field(
        "~/.cache/pooling-lab",
        description="Folder that holds (or receives) the data sets; for imagefolder and "
        "imagenet_subset, the folder that holds train/ and val/.",
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
    image_size: int | None = optional_field(
        f"Image-file data sets: images are decoded once, their shorter side resized to this and "
        f"centre-cropped to a square, and cached; default {DEFAULT_IMAGE_SIZE}.",
        ge=16,
        le=1024,
    )
    variant: Literal["160", "320", "full"] | None = optional_field(
        "imagenette, imagewoof: which published archive, by the shorter side of its images "
        "(160 px, 320 px or full size); default 160."
    )
    classes: list[str] | None = optional_field(
        "imagefolder, imagenet_subset: the class folders to use (for ImageNet, wnids such as "
        "n01440764); labels follow their sorted order.",
        min_length=2,
    )
    num_classes: int | None = optional_field(
        "imagefolder, imagenet_subset: use this many class folders, chosen at random with "
        "class_seed.",
        ge=2,
    )
    class_seed: int | None = optional_field(
        "Seed that chooses the num_classes classes; default 0.", ge=0
    )
    cache_root: str | None = optional_field(
        f"Image-file data sets: folder of the decoded-image cache; default {DEFAULT_CACHE_ROOT}."
    )
    open_set: OpenSetConfig | None = optional_field(
        "The open-set protocol: {unseen_classes: K} (the last K classes) or {unseen: [labels]} are "
        "left out of training; retrieval metrics and the probe use only them (validation: unseen-class "
        "images held out of the official train set; test: those of the official test set)."
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _trainable(cls, value: Any) -> Any:
        if value in EVALUATION_ONLY_DATASETS:
            raise ValueError(
                f"{value} is for evaluation only (it has no training split): train on another data "
                f"set, then evaluate the run with `pooling-lab evaluate RUN_DIR --data {value}`"
            )
        return value

    @field_validator("val_size")
    @classmethod
    def _fraction_or_count(cls, value: float) -> float:
        if 0.5 <= value < 1:
            raise ValueError("a fraction must be below 0.5 (use a whole number >= 1 for a count)")
        if value >= 1 and not value.is_integer():
            raise ValueError("a count of images must be a whole number")
        return value

    @field_validator("variant", mode="before")
    @classmethod
    def _variant_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            repeated = sorted({name for name in value if value.count(name) > 1})
            if repeated:
                raise ValueError(f"classes repeated: {', '.join(repeated)}")
            bad = [name for name in value if not name or "/" in name or name in (".", "..")]
            if bad:
                raise ValueError(f"{bad[0]!r} is not a class folder name")
        return value

    @model_validator(mode="after")
    def _image_fields_fit_the_dataset(self) -> DataConfig:
        applies = {
            "image_size": FOLDER_DATASETS,
            "cache_root": FOLDER_DATASETS,
            "variant": FASTAI_DATASETS,
            "classes": SUBSET_DATASETS,
            "num_classes": SUBSET_DATASETS,
            "class_seed": SUBSET_DATASETS,
        }
        for name, datasets in applies.items():
            if getattr(self, name) is not None and self.dataset not in datasets:
                raise ValueError(
                    f"data.{name} applies only to dataset {', '.join(datasets)}, "
                    f"not {self.dataset}: remove it"
                )
        if self.classes is not None and self.num_classes is not None:
            raise ValueError("give data.classes or data.num_classes, not both")
        if self.class_seed is not None and self.num_classes is None:
            raise ValueError(
                "data.class_seed chooses the data.num_classes classes: set num_classes"
            )
        if self.dataset == "imagenet_subset":
            if self.classes is None and self.num_classes is None:
                raise ValueError("imagenet_subset needs data.classes (wnids) or data.num_classes")
            bad = [name for name in self.classes or [] if not re.match(WNID, name)]
            if bad:
                raise ValueError(f"{bad[0]!r} is not an ImageNet wnid (n followed by 8 digits)")
        self._fill_defaults()
        return self

    def _fill_defaults(self) -> None:
        """Defaults of the image-file fields, set only where they apply (and so written out)."""
        if self.dataset in FOLDER_DATASETS and self.image_size is None:
            self.image_size = DEFAULT_IMAGE_SIZE
        if self.dataset in FASTAI_DATASETS and self.variant is None:
            self.variant = "160"
        if self.num_classes is not None and self.class_seed is None:
            self.class_seed = 0

    @property
    def protocol(self) -> str:
        """``open`` (retrieval on classes unseen in training) or ``closed`` (on the training classes)."""
        return CLOSED_SET if self.open_set is None else OPEN_SET

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_root or DEFAULT_CACHE_ROOT).expanduser()

    def val_count(self, train_images: int) -> int:
        """Number of validation images out of ``train_images``; a fraction > 0 keeps at least one."""
        if self.val_size >= 1:
            return int(self.val_size)
        if self.val_size == 0:
            return 0
        return max(1, round(self.val_size * train_images))
