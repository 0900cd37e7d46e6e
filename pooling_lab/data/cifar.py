"""CIFAR-10 and CIFAR-100 from the official "python version" pickles.

Each batch is a dict with bytes keys (written by Python 2): ``b"data"`` is uint8 (N, 3072), one
image per row as the R, then G, then B plane of 32x32 pixels in row-major order, which is exactly
a (N, 3, 32, 32) array.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pooling_lab.data.download import Remote, download_members, not_found
from pooling_lab.data.splits import Source, Split
from pooling_lab.errors import UserError


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    archive: Remote
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: bytes
    names_key: bytes

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        archive=Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        ),
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        labels_key=b"labels",
        names_key=b"label_names",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        archive=Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        labels_key=b"fine_labels",
        names_key=b"fine_label_names",
    ),
}


def load_cifar(dataset: str, root: Path, download: bool) -> Source:
    layout = LAYOUTS[dataset]
    folder = root / layout.folder
    if not all((folder / name).is_file() for name in layout.files):
        if not download:
            raise not_found(dataset, [folder], list(layout.files))
        members = {f"{layout.folder}/{name}": folder / name for name in layout.files}
        download_members(layout.archive, members)
    class_names = _read_class_names(folder / layout.meta_file, layout.names_key)
    *train_batches, test = [
        _read_batch(folder / name, layout.labels_key, len(class_names))
        for name in (*layout.train_files, layout.test_file)
    ]
    train = Split(
        torch.cat([b.images for b in train_batches]), torch.cat([b.labels for b in train_batches])
    )
    return Source(train, test, class_names)


def _unpickle(path: Path, required: tuple[bytes, ...]) -> dict[bytes, Any]:
    try:
        with path.open("rb") as handle:
            content = pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise UserError(f"not a readable CIFAR pickle ({error})", source=str(path)) from error
    if not isinstance(content, dict) or not all(key in content for key in required):
        keys = ", ".join(map(repr, required))
        raise UserError(f"not a CIFAR pickle: expected a dict with keys {keys}", source=str(path))
    return content


def _read_batch(path: Path, labels_key: bytes, num_classes: int) -> Split:
    batch = _unpickle(path, (b"data", labels_key))
    data, labels = batch[b"data"], np.asarray(batch[labels_key], dtype=np.int64)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3 * 32 * 32
        and labels.shape == data.shape[:1]
    ):
        raise UserError(f"b'data' must be uint8 (N, 3072) with N {labels_key!r}", source=str(path))
    if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
        raise UserError(f"labels must lie in 0..{num_classes - 1}", source=str(path))
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return Split(images, torch.from_numpy(labels))


def _read_class_names(path: Path, names_key: bytes) -> list[str]:
    return [name.decode("utf-8") for name in _unpickle(path, (names_key,))[names_key]]
