"""MNIST and Fashion-MNIST: four idx files each, found on disk or downloaded from the official mirror."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pooling_lab.data.download import Remote, download_file, not_found
from pooling_lab.data.idx import read_idx
from pooling_lab.data.splits import Source, Split
from pooling_lab.errors import UserError

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = FILE_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class IdxDataset:
    base_url: str
    gz_md5s: tuple[str, ...]  # of the published .gz files, in FILE_NAMES order; checked on download
    class_names: tuple[str, ...]
    system_folders: tuple[Path, ...] = ()  # searched after <root>/<dataset> and its raw/ folder


DATASETS = {
    "mnist": IdxDataset(
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        gz_md5s=(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        class_names=tuple(str(digit) for digit in range(10)),
    ),
    "fashion_mnist": IdxDataset(
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        gz_md5s=(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        # Debian's dataset-fashion-mnist package (recompressed, so its md5s differ: not checked).
        system_folders=(Path("/usr/share/datasets/fashion-mnist"),),
    ),
}


def load_idx_dataset(dataset: str, root: Path, download: bool) -> Source:
    spec = DATASETS[dataset]
    folders = [root / dataset, root / dataset / "raw", *spec.system_folders]
    paths = next(filter(None, map(_complete_set, folders)), None)
    if paths is None:
        if not download:
            raise not_found(dataset, folders, [f"{name}[.gz]" for name in FILE_NAMES])
        _download(spec, root / dataset)
        paths = _complete_set(root / dataset)
    num_classes = len(spec.class_names)
    return Source(
        train=_read_split(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], num_classes),
        test=_read_split(paths[TEST_IMAGES], paths[TEST_LABELS], num_classes),
        class_names=list(spec.class_names),
    )


def _find(folder: Path, name: str) -> Path | None:
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _complete_set(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder``, each plain or gzipped, or None when any is missing."""
    paths = {name: _find(folder, name) for name in FILE_NAMES}
    return paths if all(paths.values()) else None


def _download(spec: IdxDataset, folder: Path) -> None:
    """Download into ``folder`` the files it lacks."""
    for name, md5 in zip(FILE_NAMES, spec.gz_md5s, strict=True):
        if _find(folder, name) is None:
            download_file(Remote(f"{spec.base_url}{name}.gz", md5), folder / f"{name}.gz")


def _read_split(images_path: Path, labels_path: Path, num_classes: int) -> Split:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise UserError(
            f"expected images (N, H, W), found shape {images.shape}", source=str(images_path)
        )
    if labels.shape != images.shape[:1]:
        raise UserError(
            f"expected {len(images)} labels to match {images_path.name}, found shape {labels.shape}",
            source=str(labels_path),
        )
    if labels.size and labels.max() >= num_classes:
        raise UserError(f"labels must lie in 0..{num_classes - 1}", source=str(labels_path))
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())
