"""Data readers (on files written here in the official formats), splits, synthetic data, loader."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

import pooling_lab.data as data_module
from pooling_lab.data import BatchLoader, DataConfig, Split, cifar, load_data, mnist
from pooling_lab.data.download import Remote
from pooling_lab.data.idx import read_idx
from pooling_lab.data.spec import AugmentConfig, SyntheticConfig
from pooling_lab.data.splits import Source
from pooling_lab.data.synthetic import class_prototypes, generate
from pooling_lab.errors import DataNotFoundError, UserError

FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def no_val(dataset: str, root: Path, **overrides) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), val_size=0, **overrides)


# ---------------------------------------------------------------- CIFAR


def write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=2))  # the protocol of the Python 2 originals


def flat_index(channel: int, row: int, col: int) -> int:
    """Position in a CIFAR row: the R plane, then G, then B, each 32x32 in row-major order."""
    return channel * 1024 + row * 32 + col


def marked_rows(positions: list[tuple[int, int, int]], first: int = 0) -> np.ndarray:
    """One flat CIFAR row per position, zero except value 100 + first + i at that position."""
    rows = np.zeros((len(positions), 3072), dtype=np.uint8)
    for i, position in enumerate(positions):
        rows[i, flat_index(*position)] = 100 + first + i
    return rows


def assert_marked(images: torch.Tensor, positions: list[tuple[int, int, int]]) -> None:
    assert images.shape == (len(positions), 3, 32, 32)
    for i, position in enumerate(positions):
        assert images[i].nonzero().tolist() == [list(position)]
        assert images[i][position].item() == 100 + i


CIFAR10_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]
TRAIN_POSITIONS = [
    (0, 0, 0),
    (0, 0, 31),
    (0, 31, 0),
    (1, 5, 7),
    (2, 31, 31),
    (2, 0, 1),
    (1, 1, 0),
    (0, 17, 3),
    (2, 9, 30),
    (1, 30, 2),
]
TEST_POSITIONS = [(2, 3, 4), (1, 0, 0), (0, 12, 13)]


def write_cifar10(root: Path) -> None:
    """Five train batches of two images each, a test batch, and batches.meta."""
    folder = root / "cifar-10-batches-py"
    for b in range(5):
        write_pickle(
            folder / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [2 * b, 2 * b + 1],
                b"data": marked_rows(TRAIN_POSITIONS[2 * b : 2 * b + 2], first=2 * b),
                b"filenames": [b"a.png", b"b.png"],
            },
        )
    write_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [9, 0, 4],
            b"data": marked_rows(TEST_POSITIONS),
            b"filenames": [b"c.png", b"d.png", b"e.png"],
        },
    )
    write_pickle(
        folder / "batches.meta",
        {
            b"label_names": CIFAR10_NAMES,
            b"num_cases_per_batch": 2,
            b"num_vis": 3072,
        },
    )


def test_cifar10_pixels_labels_and_names_round_trip(tmp_path):
    write_cifar10(tmp_path)
    splits = load_data(no_val("cifar10", tmp_path))
    assert_marked(splits.train.images, TRAIN_POSITIONS)
    assert_marked(splits.test.images, TEST_POSITIONS)
    assert splits.train.labels.tolist() == list(range(10))
    assert splits.test.labels.tolist() == [9, 0, 4]
    assert splits.train.labels.dtype == torch.int64
    assert splits.class_names == [name.decode() for name in CIFAR10_NAMES]
    assert splits.num_classes == 10 and splits.val is None
    assert splits.train.images.is_contiguous()


def write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    fine_names = [f"fine{i}".encode() for i in range(100)]
    write_pickle(
        folder / "train",
        {
            b"filenames": [b"x"] * 4,
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": [99, 0, 42, 7],
            b"coarse_labels": [19, 0, 3, 1],
            b"data": marked_rows(TRAIN_POSITIONS[:4]),
        },
    )
    write_pickle(
        folder / "test",
        {
            b"filenames": [b"y"] * 3,
            b"batch_label": b"testing batch 1 of 1",
            b"fine_labels": [5, 6, 7],
            b"coarse_labels": [1, 1, 1],
            b"data": marked_rows(TEST_POSITIONS),
        },
    )
    write_pickle(
        folder / "meta",
        {
            b"fine_label_names": fine_names,
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    write_cifar100(tmp_path)
    splits = load_data(no_val("cifar100", tmp_path))
    assert_marked(splits.train.images, TRAIN_POSITIONS[:4])
    assert_marked(splits.test.images, TEST_POSITIONS)
    assert splits.train.labels.tolist() == [99, 0, 42, 7]
    assert splits.test.labels.tolist() == [5, 6, 7]
    assert splits.num_classes == 100
    assert splits.class_names[:2] == ["fine0", "fine1"] and splits.class_names[-1] == "fine99"


def test_cifar_label_beyond_class_names_names_the_file(tmp_path):
    write_cifar100(tmp_path)
    test_file = tmp_path / "cifar-100-python" / "test"
    content = pickle.loads(test_file.read_bytes(), encoding="bytes")
    content[b"fine_labels"] = [5, 100, 7]
    write_pickle(test_file, content)
    with pytest.raises(UserError, match=r"test: labels must lie in 0\.\.99"):
        load_data(no_val("cifar100", tmp_path))


@pytest.mark.parametrize(
    "dataset, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_missing_cifar_without_download_says_where_and_how(tmp_path, dataset, folder):
    with pytest.raises(DataNotFoundError) as caught:
        load_data(DataConfig(dataset=dataset, root=str(tmp_path)))
    message = str(caught.value)
    assert message.startswith("data.root: ")
    assert str(tmp_path / folder) in message
    assert "data.download: true" in message
    assert ("data_batch_1" if dataset == "cifar10" else "meta") in message
    assert "\n" not in message


def cifar10_archive(source_root: Path, archive: Path, extra: dict[str, bytes]) -> str:
    """A tar.gz of the CIFAR-10 folder under ``source_root`` plus ``extra`` members; its md5."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        for name, content in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return hashlib.md5(archive.read_bytes()).hexdigest()


def use_archive(monkeypatch, url: str, md5: str) -> None:
    layout = dataclasses.replace(cifar.LAYOUTS["cifar10"], archive=Remote(url, md5))
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10", layout)


def test_cifar_download_extracts_only_the_expected_files(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "source")
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = cifar10_archive(tmp_path / "source", archive, {"../escaped": b"evil", "readme.html": b""})
    use_archive(monkeypatch, archive.as_uri(), md5)
    root = tmp_path / "root" / "data"
    splits = load_data(DataConfig(dataset="cifar10", root=str(root), download=True, val_size=0))
    assert splits.train.labels.tolist() == list(range(10))
    assert_marked(splits.test.images, TEST_POSITIONS)
    assert not (root / "escaped").exists() and not (root.parent / "escaped").exists()
    assert sorted(p.name for p in root.rglob("*")) == sorted(
        ["cifar-10-batches-py", *cifar.LAYOUTS["cifar10"].files]
    )


def test_cifar_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "source")
    archive = tmp_path / "cifar-10-python.tar.gz"
    cifar10_archive(tmp_path / "source", archive, {})
    use_archive(monkeypatch, archive.as_uri(), "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(DataNotFoundError, match="md5 .* expected 0{32}"):
        load_data(DataConfig(dataset="cifar10", root=str(root), download=True))
    assert not root.exists()  # made for the download, and removed with it


@pytest.mark.parametrize(
    ("archive_bytes", "complaint"),
    [
        (lambda source: b"<html>not an archive</html>", "cannot extract"),
        (lambda source: gzip.compress(b"not a tar file" * 100), "cannot extract"),
        (lambda source: cifar10_archive_bytes(source)[:-2000], "cannot extract"),  # cut short
        (lambda source: cifar10_archive_bytes(source, without="cifar-10-batches-py/test_batch"), "has no file"),
    ],
    ids=["not gzip", "not tar", "truncated", "a member missing"],
)
def test_a_bad_archive_leaves_the_data_root_as_it_was(tmp_path, monkeypatch, archive_bytes, complaint):
    write_cifar10(tmp_path / "source")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive_bytes(tmp_path / "source"))
    use_archive(monkeypatch, archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest())
    root = tmp_path / "root"
    (root / "notes").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=complaint) as caught:
        load_data(DataConfig(dataset="cifar10", root=str(root), download=True))
    assert str(caught.value).startswith("data.download: ") and "\n" not in str(caught.value)
    assert list(root.rglob("*")) == [root / "notes"]


def cifar10_archive_bytes(source_root: Path, without: str | None = None) -> bytes:
    """A tar.gz of the CIFAR-10 folder under ``source_root``, less the member ``without``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source_root / "cifar-10-batches-py", arcname="cifar-10-batches-py",
                filter=lambda member: None if member.name == without else member)
    return buffer.getvalue()


def test_failed_download_is_one_line_naming_the_url(tmp_path, monkeypatch):
    url = (tmp_path / "nowhere.tar.gz").as_uri()
    use_archive(monkeypatch, url, "0" * 32)
    with pytest.raises(DataNotFoundError) as caught:
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path / "root"), download=True))
    message = str(caught.value)
    assert message.startswith(f"data.download: could not download {url}") and "\n" not in message
    assert not (tmp_path / "root").exists()


def test_a_failed_mnist_download_leaves_no_empty_folder(tmp_path, monkeypatch):
    spec = dataclasses.replace(mnist.DATASETS["mnist"], base_url=(tmp_path / "nowhere").as_uri() + "/")
    monkeypatch.setitem(mnist.DATASETS, "mnist", spec)
    (tmp_path / "root").mkdir()
    with pytest.raises(DataNotFoundError, match="could not download"):
        load_data(DataConfig(dataset="mnist", root=str(tmp_path / "root"), download=True))
    assert list((tmp_path / "root").iterdir()) == []


def test_unwritable_root_is_a_user_error(tmp_path, monkeypatch):
    use_archive(monkeypatch, (tmp_path / "any.tar.gz").as_uri(), "0" * 32)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataNotFoundError, match="data.root: cannot write to"):
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path / "file"), download=True))


# ---------------------------------------------------------------- idx (MNIST-style)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 28, 27), dtype=np.uint8)
    path = write_idx(tmp_path / "images-idx3-ubyte", array, gz)
    parsed = read_idx(path)
    assert parsed.shape == (5, 28, 27) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize(
    "content, complaint",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">i", 2) + b"ab", "0x00 0x00"),
        (b"\x00\x00\x0d\x01" + struct.pack(">i", 2) + b"ab", "dtype code 0x0d"),
        (b"\x00\x00\x08\x01" + struct.pack(">i", 3) + b"ab", r"shape \(3,\) \(3 bytes\) but 2"),
        (b"\x00\x00\x08\x01" + struct.pack(">i", 1) + b"ab", r"shape \(1,\) \(1 bytes\) but 2"),
        (b"\x00\x00\x08\x03" + struct.pack(">i", 3), "cut short"),
        (b"\x00\x00", "0x00 0x00"),
    ],
)
def test_corrupt_idx_is_a_user_error_naming_the_file(tmp_path, content, complaint):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match=complaint) as caught:
        read_idx(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_truncated_gzip_is_a_user_error_naming_the_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(100)))[:-10])
    with pytest.raises(UserError, match="gzip") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def write_mnist_files(folder: Path, gz: bool, train: int = 12, test: int = 5) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        mnist.TRAIN_IMAGES: rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        mnist.TRAIN_LABELS: np.arange(train, dtype=np.uint8) % 10,
        mnist.TEST_IMAGES: rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        mnist.TEST_LABELS: (np.arange(test, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


@pytest.mark.parametrize("subfolder, gz", [("mnist", False), ("mnist/raw", True)])
def test_mnist_reader(tmp_path, subfolder, gz):
    arrays = write_mnist_files(tmp_path / subfolder, gz)
    splits = load_data(no_val("mnist", tmp_path))
    assert splits.train.images.shape == (12, 1, 28, 28)
    assert splits.test.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), arrays[mnist.TRAIN_IMAGES])
    np.testing.assert_array_equal(splits.test.labels.numpy(), arrays[mnist.TEST_LABELS])
    assert splits.train.labels.dtype == torch.int64
    assert splits.class_names == [str(d) for d in range(10)]


def test_mnist_prefers_the_dataset_folder_over_raw(tmp_path):
    write_mnist_files(tmp_path / "mnist" / "raw", gz=True, train=20)
    write_mnist_files(tmp_path / "mnist", gz=False, train=12)
    assert len(load_data(no_val("mnist", tmp_path)).train) == 12


def test_mnist_label_count_mismatch_names_the_labels_file(tmp_path):
    write_mnist_files(tmp_path / "mnist", gz=False)
    labels = write_idx(tmp_path / "mnist" / mnist.TEST_LABELS, np.zeros(4), gz=False)
    with pytest.raises(UserError, match="expected 5 labels") as caught:
        load_data(no_val("mnist", tmp_path))
    assert str(labels) in str(caught.value)


def test_missing_mnist_lists_the_searched_folders(tmp_path):
    with pytest.raises(DataNotFoundError) as caught:
        load_data(DataConfig(dataset="mnist", root=str(tmp_path)))
    message = str(caught.value)
    for folder in (tmp_path / "mnist", tmp_path / "mnist" / "raw"):
        assert str(folder) in message
    assert "train-images-idx3-ubyte[.gz]" in message and "data.download: true" in message


def test_mnist_download_fetches_only_missing_files(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    arrays = write_mnist_files(mirror, gz=True)
    md5s = tuple(
        hashlib.md5((mirror / f"{name}.gz").read_bytes()).hexdigest() for name in mnist.FILE_NAMES
    )
    spec = dataclasses.replace(
        mnist.DATASETS["mnist"], base_url=mirror.as_uri() + "/", gz_md5s=md5s
    )
    monkeypatch.setitem(mnist.DATASETS, "mnist", spec)
    root = tmp_path / "root"
    write_idx(root / "mnist" / mnist.TEST_LABELS, arrays[mnist.TEST_LABELS], gz=False)
    splits = load_data(DataConfig(dataset="mnist", root=str(root), download=True, val_size=0))
    np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), arrays[mnist.TRAIN_IMAGES])
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(
        [mnist.TEST_LABELS, *(f"{n}.gz" for n in mnist.FILE_NAMES if n != mnist.TEST_LABELS)]
    )


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM.is_dir(), reason="Debian dataset-fashion-mnist absent")
def test_real_fashion_mnist_from_the_system_folder(tmp_path):
    splits = load_data(no_val("fashion_mnist", tmp_path))
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.labels.unique().tolist() == list(range(10))
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"
    assert 0.2 < splits.mean[0] < 0.4 and 0.3 < splits.std[0] < 0.4  # about 0.286 and 0.353


# ---------------------------------------------------------------- splits


def indexed_source(class_sizes: list[int]) -> Source:
    """Train images that encode their own index (two bytes), labels in contiguous class blocks."""
    n = sum(class_sizes)
    index = torch.arange(n)
    images = torch.stack([index // 256, index % 256], dim=1).to(torch.uint8).view(n, 2, 1, 1)
    labels = torch.repeat_interleave(torch.arange(len(class_sizes)), torch.tensor(class_sizes))
    test = Split(torch.zeros(3, 2, 1, 1, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    return Source(Split(images, labels), test, [f"c{i}" for i in range(len(class_sizes))])


def image_ids(split: Split) -> list[int]:
    return (split.images[:, 0, 0, 0].long() * 256 + split.images[:, 1, 0, 0].long()).tolist()


@pytest.fixture
def fake_source(monkeypatch):
    source = indexed_source([500, 300, 200])
    monkeypatch.setattr(data_module, "read_source", lambda cfg: source)
    return source


def split_cfg(**overrides) -> DataConfig:
    return DataConfig(dataset="synthetic", **overrides)


def test_val_is_stratified_disjoint_and_covers_train(fake_source):
    splits = load_data(split_cfg(val_size=0.1, split_seed=3))
    train_ids, val_ids = image_ids(splits.train), image_ids(splits.val)
    assert len(val_ids) == 100 and len(train_ids) == 900
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted(train_ids + val_ids) == list(range(1000))
    assert torch.bincount(splits.val.labels).tolist() == [50, 30, 20]
    assert torch.equal(splits.val.labels, fake_source.train.labels[val_ids])
    assert splits.test is fake_source.test


def test_val_size_as_a_count_keeps_class_shares_within_one(fake_source):
    splits = load_data(split_cfg(val_size=7))
    counts = torch.bincount(splits.val.labels, minlength=3)
    assert counts.sum() == 7
    assert all(
        abs(c - 7 * share) < 1 for c, share in zip(counts.tolist(), (0.5, 0.3, 0.2), strict=True)
    )


def test_splits_are_deterministic_per_seed(fake_source):
    first, again = load_data(split_cfg(split_seed=1)), load_data(split_cfg(split_seed=1))
    other = load_data(split_cfg(split_seed=2))
    assert torch.equal(first.val.images, again.val.images)
    assert torch.equal(first.train.images, again.train.images)
    assert image_ids(first.val) != image_ids(other.val)


def test_train_subset_samples_the_remaining_train_images(fake_source):
    full = load_data(split_cfg(split_seed=5))
    subset = load_data(split_cfg(split_seed=5, train_subset=90))
    assert image_ids(subset.val) == image_ids(full.val)
    assert len(subset.train) == 90 and set(image_ids(subset.train)) <= set(image_ids(full.train))
    assert torch.bincount(subset.train.labels).tolist() == [45, 27, 18]
    images = subset.train.images.double() / 255
    assert subset.mean == pytest.approx(images.mean(dim=(0, 2, 3)).tolist())
    assert subset.std == pytest.approx(images.std(dim=(0, 2, 3), unbiased=False).tolist())


def test_train_subset_beyond_what_is_left_is_a_user_error(fake_source):
    with pytest.raises(UserError, match="data.train_subset: 901 is more than the 900"):
        load_data(split_cfg(train_subset=901))


def test_val_size_zero_means_no_val_and_too_many_is_an_error(fake_source):
    assert load_data(split_cfg(val_size=0)).val is None
    with pytest.raises(UserError, match="data.val_size"):
        load_data(split_cfg(val_size=1000))


@pytest.mark.parametrize(
    "fields",
    [
        {"val_size": 0.5},
        {"val_size": 2.5},
        {"val_size": -1},
        {"train_subset": 0},
        {"bogus": 1},
        {"dataset": "imagenet"},
        {"augment": {"crop_padding": -1}},
        {"synthetic": {"image_size": 30, "cell_size": 4}},
        {"synthetic": {"channels": 2}},
        {"synthetic": {"signal_fraction": 0}},
        {"synthetic": {"cell_size": 1, "channels": 1}},
    ],
)
def test_schema_rejects_bad_values(fields):
    with pytest.raises(pydantic.ValidationError):
        DataConfig.model_validate({"dataset": "synthetic", **fields})


# ---------------------------------------------------------------- synthetic


def small_synthetic(**overrides) -> SyntheticConfig:
    fields = {"image_size": 16, "cell_size": 4, "train_size": 200, "test_size": 1000} | overrides
    return SyntheticConfig(**fields)


def test_synthetic_is_deterministic_balanced_and_shaped():
    cfg = small_synthetic(channels=1, num_classes=4)
    first, again = generate(cfg), generate(cfg)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test.labels, again.test.labels)
    assert first.train.images.shape == (200, 1, 16, 16) and first.train.images.dtype == torch.uint8
    assert torch.bincount(first.train.labels).tolist() == [50] * 4
    assert first.class_names == ["class0", "class1", "class2", "class3"]
    other = generate(small_synthetic(channels=1, num_classes=4, seed=1))
    assert not torch.equal(first.train.images, other.train.images)
    bigger_train = generate(small_synthetic(channels=1, num_classes=4, train_size=300))
    assert torch.equal(first.test.images, bigger_train.test.images)


def matched_filter_accuracy(cfg: SyntheticConfig) -> tuple[float, float]:
    """Accuracy of classifying by each prototype's correlation pooled over cells: (max, mean)."""
    test = generate(cfg).test
    prototypes = class_prototypes(cfg).reshape(cfg.num_classes, -1)
    x = (test.images.float() - 128) / 24
    n, c, side, cell = *x.shape[:3], cfg.cell_size
    grid = side // cell
    cells = x.view(n, c, grid, cell, grid, cell).permute(0, 2, 4, 1, 3, 5).reshape(n, grid**2, -1)
    correlation = cells @ prototypes.T  # (n, cells, classes)
    by_max = (correlation.amax(dim=1).argmax(dim=1) == test.labels).float().mean().item()
    by_mean = (correlation.mean(dim=1).argmax(dim=1) == test.labels).float().mean().item()
    return by_max, by_mean


def test_synthetic_sparse_signal_favours_max_and_dense_favours_mean():
    # 16 cells: measured accuracies are about (max 0.998, mean 0.51) and (max 0.81, mean 1.0)
    sparse_max, sparse_mean = matched_filter_accuracy(small_synthetic(signal_fraction=1 / 16))
    dense_max, dense_mean = matched_filter_accuracy(small_synthetic(signal_fraction=1.0))
    assert sparse_max > 0.95 and sparse_mean < 0.7
    assert dense_mean > 0.95 and dense_max < 0.9


# ---------------------------------------------------------------- loader


def numbered_split(n: int = 10, channels: int = 3, side: int = 6) -> Split:
    """Random images with no zero pixel (so zero padding is visible); label i is image i."""
    images = torch.randint(
        1, 256, (n, channels, side, side), generator=torch.Generator().manual_seed(0)
    )
    return Split(images.to(torch.uint8), torch.arange(n))


def make_loader(split: Split, batch_size: int = 4, **options) -> BatchLoader:
    channels = split.images.shape[1]
    return BatchLoader(
        split,
        batch_size,
        device=torch.device("cpu"),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        **options,
    )


def test_loader_batches_are_normalised_float_in_order():
    split = numbered_split()
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    loader = BatchLoader(split, 4, device=torch.device("cpu"), mean=mean, std=std)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([x for x, _ in batches])
    assert x.dtype == torch.float32 and x.shape == (10, 3, 6, 6)
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close((x * s + m) * 255, split.images.float(), atol=1e-3, rtol=0)


def test_drop_last_and_channels_last():
    loader = make_loader(numbered_split(), drop_last=True, channels_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)


def test_shuffle_visits_every_image_once_and_replays_from_generator_state():
    generator = torch.Generator().manual_seed(0)
    loader = make_loader(
        numbered_split(),
        shuffle=True,
        generator=generator,
        augment=AugmentConfig(crop_padding=2, flip=True),
    )
    state = generator.get_state()
    first = list(loader)
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(10))
    second = list(loader)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in second]))
    generator.set_state(state)
    replay = list(loader)
    for (x1, y1), (x2, y2) in zip(first, replay, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo make_loader's normalisation."""
    return ((x * 0.25 + 0.5) * 255).round().to(torch.uint8)


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    split, padding = numbered_split(n=40), 2
    loader = make_loader(
        split,
        batch_size=40,
        generator=torch.Generator().manual_seed(1),
        augment=AugmentConfig(crop_padding=padding, flip=False),
    )
    x, y = next(iter(loader))
    crops = to_uint8(x)
    padded = torch.nn.functional.pad(split.images, (padding,) * 4)
    offsets = set()
    for crop, label in zip(crops, y.tolist(), strict=True):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(crop, padded[label, :, dy : dy + 6, dx : dx + 6])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # each image draws its own offset


def test_flip_mirrors_some_images_and_keeps_the_rest():
    split = numbered_split(n=40)
    loader = make_loader(
        split,
        batch_size=40,
        generator=torch.Generator().manual_seed(2),
        augment=AugmentConfig(crop_padding=0, flip=True),
    )
    images = to_uint8(next(iter(loader))[0])
    flipped = [
        torch.equal(out, original.flip(2))
        for out, original in zip(images, split.images, strict=True)
    ]
    kept = [torch.equal(out, original) for out, original in zip(images, split.images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 5 < sum(flipped) < 35


def test_crop_and_flip_together_give_a_window_or_its_mirror():
    split, padding = numbered_split(n=40), 1
    loader = make_loader(
        split,
        batch_size=40,
        generator=torch.Generator().manual_seed(3),
        augment=AugmentConfig(crop_padding=padding, flip=True),
    )
    x, y = next(iter(loader))
    padded = torch.nn.functional.pad(split.images, (padding,) * 4)
    mirrored = 0
    for crop, label in zip(to_uint8(x), y.tolist(), strict=True):
        windows = [padded[label, :, dy : dy + 6, dx : dx + 6] for dy in range(3) for dx in range(3)]
        plain = any(torch.equal(crop, w) for w in windows)
        flipped = any(torch.equal(crop, w.flip(2)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert 5 < mirrored < 35


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_epoch_never_synchronises_with_the_host():
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    loader = BatchLoader(
        numbered_split(n=100),
        16,
        device=device,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        shuffle=True,
        generator=generator,
        augment=AugmentConfig(),
        channels_last=True,
    )
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(loader)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(x.device.type == "cuda" and y.device.type == "cuda" for x, y in batches)
