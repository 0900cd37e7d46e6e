"""Image files in class folders: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``.

The classes are the sorted names of the class folders under ``train`` (or a chosen subset of
them, labelled in sorted order too); ``val`` is the official test split, and the harness holds
its own validation split out of ``train`` as for every data set.  Images are the files directly
in a class folder with an image suffix (any case); other and hidden files are ignored.  Both
splits are decoded once and cached (``image_cache``).

``imagefolder`` reads any such tree; ``imagenet_subset`` reads an ImageNet tree (one ``<wnid>``
folder per class in ``train`` and in ``val``) and needs the classes chosen, by list or by count.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pooling_lab.data.image_cache import cached_split
from pooling_lab.data.spec import DataConfig
from pooling_lab.data.splits import Source
from pooling_lab.errors import DataNotFoundError, UserError

IMAGE_SUFFIXES = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)


def class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    )


def choose_classes(
    available: list[str], classes: list[str] | None, num_classes: int | None, seed: int | None
) -> list[str]:
    """The classes to use, sorted: ``classes`` as given, or ``num_classes`` of ``available``
    drawn with ``seed`` (the same seed and folders always give the same classes), or all."""
    if classes is not None:
        missing = [name for name in classes if name not in available]
        if missing:
            raise UserError(
                f"{len(missing)} class(es) have no train folder, e.g. {missing[0]!r}",
                field="data.classes",
            )
        return sorted(classes)
    if num_classes is not None:
        if num_classes > len(available):
            raise UserError(
                f"{num_classes} classes asked for, the train folder has {len(available)}",
                field="data.num_classes",
            )
        order = torch.randperm(len(available), generator=torch.Generator().manual_seed(seed or 0))
        return sorted(available[i] for i in order[:num_classes].tolist())
    return available


def read_tree(
    root: Path, classes: list[str], name: str, size: int, cache_dir: Path, class_names: list[str]
) -> Source:
    """Both splits of the tree at ``root``, label i being ``classes[i]``."""
    splits = []
    for folder_name in ("train", "val"):
        folder = root / folder_name
        files: list[Path] = []
        labels: list[int] = []
        for label, class_folder in enumerate(classes):
            found = image_files(folder / class_folder) if (folder / class_folder).is_dir() else []
            if folder_name == "train" and not found:
                raise UserError(
                    "a train class folder without images", source=str(folder / class_folder)
                )
            files += found
            labels += [label] * len(found)
        if not files:
            raise UserError(f"no images of the {len(classes)} classes", source=str(folder))
        splits.append(
            cached_split(f"{name}-{folder_name}", folder, files, labels, classes, size, cache_dir)
        )
    train, test = splits
    return Source(train, test, class_names)


def load_image_folder(cfg: DataConfig) -> Source:
    """``imagefolder`` or ``imagenet_subset`` at ``cfg.root``."""
    root = cfg.root_path
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise DataNotFoundError(
            f"{cfg.dataset} is not there: expected {root}/train/<class>/<image> and "
            f"{root}/val/<class>/<image>",
            field="data.root",
        )
    available = class_folders(root / "train")
    val_classes = class_folders(root / "val")
    if not val_classes and image_files(root / "val"):
        raise UserError(
            "val holds images directly: sort them into val/<class>/ folders (for ImageNet, one "
            "<wnid> folder per class, from the validation ground truth)",
            source=str(root / "val"),
        )
    unknown = sorted(set(val_classes) - set(available))
    if unknown:
        raise UserError(
            f"{len(unknown)} val class folder(s) have no train folder, e.g. {unknown[0]!r}",
            source=str(root / "val"),
        )
    classes = choose_classes(available, cfg.classes, cfg.num_classes, cfg.class_seed)
    assert cfg.image_size is not None  # filled in by DataConfig for these data sets
    name = f"{cfg.dataset}-{root.name}"
    return read_tree(root, classes, name, cfg.image_size, cfg.cache_path, classes)
