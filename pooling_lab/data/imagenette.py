"""Imagenette and ImageWoof (fast.ai): ten-class ImageNet subsets, each published in three sizes.

``https://s3.amazonaws.com/fast-ai-imageclas/<folder>.tgz`` with ``<folder>`` ``imagenette2-160``,
``imagenette2-320`` or ``imagenette2`` (full size; the same for ``imagewoof2``) holds
``<folder>/{train,val}/<wnid>/*.JPEG`` (and a CSV of noisy labels, not used).  ``val`` is the
official test split.

The download is checked by its structure, not by md5: the archives have been replaced on the
server since they were first published (two different md5s of imagenette2.tgz are in circulation),
so a pinned checksum can go stale and refuse a good download.  Only members that are regular
files at ``<folder>/{train,val}/<one of the ten wnids>/<image>`` are extracted, to paths built
here (nothing in the archive can write elsewhere), into a temporary folder that is renamed into
place once both splits hold exactly the ten wnid folders.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pooling_lab.data.download import ARCHIVE_ERRORS, Remote, downloaded, staging_folder
from pooling_lab.data.imagefolder import IMAGE_SUFFIXES, class_folders, read_tree
from pooling_lab.data.spec import DataConfig
from pooling_lab.data.splits import Source
from pooling_lab.errors import DataNotFoundError

BASE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/"
VARIANT_SUFFIX = {"160": "-160", "320": "-320", "full": ""}
SPLIT_FOLDERS = ("train", "val")


@dataclass(frozen=True)
class FastaiDataset:
    prefix: str
    classes: dict[str, str]  # wnid -> ImageNet class name, in wnid order

    def folder(self, variant: str) -> str:
        return self.prefix + VARIANT_SUFFIX[variant]


DATASETS = {
    "imagenette": FastaiDataset(
        "imagenette2",
        {
            "n01440764": "tench",
            "n02102040": "English springer",
            "n02979186": "cassette player",
            "n03000684": "chain saw",
            "n03028079": "church",
            "n03394916": "French horn",
            "n03417042": "garbage truck",
            "n03425413": "gas pump",
            "n03445777": "golf ball",
            "n03888257": "parachute",
        },
    ),
    "imagewoof": FastaiDataset(
        "imagewoof2",
        {
            "n02086240": "Shih-Tzu",
            "n02087394": "Rhodesian ridgeback",
            "n02088364": "beagle",
            "n02089973": "English foxhound",
            "n02093754": "Border terrier",
            "n02096294": "Australian terrier",
            "n02099601": "golden retriever",
            "n02105641": "Old English sheepdog",
            "n02111889": "Samoyed",
            "n02115641": "dingo",
        },
    ),
}


def load_fastai(cfg: DataConfig) -> Source:
    spec = DATASETS[cfg.dataset]
    assert cfg.variant is not None and cfg.image_size is not None  # filled in by DataConfig
    name = spec.folder(cfg.variant)
    folder = cfg.root_path / name
    wnids = list(spec.classes)
    if not _complete(folder, wnids):
        if folder.exists():
            raise DataNotFoundError(
                f"{folder} is incomplete: expected train/<wnid>/ and val/<wnid>/ for the ten "
                f"{cfg.dataset} wnids; remove it to download it again",
                field="data.root",
            )
        if not cfg.download:
            raise DataNotFoundError(
                f"{cfg.dataset} is not there: expected {folder}/{{train,val}}/<wnid>/*.JPEG. Set "
                f"data.download: true to download it (needs internet) or extract "
                f"{BASE_URL}{name}.tgz into {cfg.root_path} yourself",
                field="data.root",
            )
        download_tree(Remote(f"{BASE_URL}{name}.tgz", md5=None), name, wnids, folder)
    return read_tree(
        folder, wnids, name, cfg.image_size, cfg.cache_path, list(spec.classes.values())
    )


def _complete(folder: Path, wnids: list[str]) -> bool:
    return all(
        (folder / split).is_dir() and class_folders(folder / split) == sorted(wnids)
        for split in SPLIT_FOLDERS
    )


def download_tree(remote: Remote, name: str, wnids: list[str], destination: Path) -> None:
    """Download ``remote`` and extract its ``name/{train,val}/<wnid>/<image>`` files to
    ``destination`` (which must not exist yet)."""
    with downloaded(remote, destination.parent) as archive, staging_folder(destination) as staging:
        try:
            _extract_images(archive, name, set(wnids), staging)
        except ARCHIVE_ERRORS as error:
            raise DataNotFoundError(
                f"cannot extract {remote.url}: {error}", field="data.download"
            ) from error
        if not _complete(staging, wnids):
            raise DataNotFoundError(
                f"archive {remote.url} does not hold {name}/{{train,val}}/<wnid>/ for the "
                f"ten wnids",
                field="data.download",
            )
        os.replace(staging, destination)


def _extract_images(archive: Path, name: str, wnids: set[str], staging: Path) -> None:
    """Write the archive's ``name/<split>/<wnid>/<image>`` files under ``staging``."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if not (
                member.isfile()
                and len(parts) == 4
                and parts[0] == name
                and parts[1] in SPLIT_FOLDERS
                and parts[2] in wnids
                and not parts[3].startswith(".")
                and PurePosixPath(parts[3]).suffix.lower() in IMAGE_SUFFIXES
            ):
                continue
            target = staging / parts[1] / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file has content
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
