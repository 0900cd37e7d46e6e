"""Image-file data sets on trees written here with Pillow: decoding, class mapping, class subsets,
the decoded-image cache, random-resized crop, the Imagenette download, and a real CLI run."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from pooling_lab.cli import app
from pooling_lab.data import BatchLoader, DataConfig, image_cache, imagenette, load_data
from pooling_lab.data.augment import random_resized_crop
from pooling_lab.data.image_cache import decode_image
from pooling_lab.data.spec import AugmentConfig
from pooling_lab.errors import DataNotFoundError, UserError

COLOURS = {"owl": (50, 60, 210), "cat": (220, 40, 40), "dog": (40, 200, 60)}  # classes: sorted
SIZES = [(24, 16), (16, 30), (21, 21), (40, 18)]


def write_image(path: Path, colour: tuple[int, ...], size: tuple[int, int] = (24, 16), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def write_tree(root: Path, train: int = 4, val: int = 2, colours: dict = COLOURS) -> Path:
    """``root/{train,val}/<class>/`` of flat-coloured JPEGs and PNGs of varied sizes, plus files
    that are not images (ignored)."""
    for split, count in (("train", train), ("val", val)):
        for c, (name, colour) in enumerate(colours.items()):
            for i in range(count):
                suffix = ".png" if (i + c) % 2 else ".JPEG"
                write_image(root / split / name / f"img{i}{suffix}", colour, SIZES[(i + c) % len(SIZES)])
    first = root / "train" / next(iter(colours))
    (first / "notes.txt").write_text("not an image")
    write_image(first / ".hidden.jpg", (0, 0, 0))
    return root


def folder_cfg(root: Path, tmp: Path, **fields) -> DataConfig:
    defaults = {"dataset": "imagefolder", "root": str(root), "cache_root": str(tmp / "cache"),
                "image_size": 16, "val_size": 0}
    return DataConfig.model_validate(defaults | fields)


def mean_colours(images: torch.Tensor) -> torch.Tensor:
    """(N, 3) mean colour of the centre 8x8 of each image (away from resampled borders)."""
    side = images.shape[-1]
    low = (side - 8) // 2
    return images[:, :, low : low + 8, low : low + 8].double().mean(dim=(2, 3))


# ---------------------------------------------------------------- decoding


def test_decode_resizes_the_shorter_side_and_keeps_the_centre_square(tmp_path):
    stripes = np.zeros((20, 60, 3), np.uint8)
    stripes[:, :20], stripes[:, 20:40], stripes[:, 40:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    image = decode_image(tmp_path / "wide.png", 10)
    assert image.shape == (10, 10, 3) and image.dtype == np.uint8
    assert (image[:, 1:9] == (0, 255, 0)).all()  # the middle third only; edges are resampled
    tall = write_image(tmp_path / "tall.jpg", (10, 20, 200), size=(30, 90))
    assert decode_image(tall, 12).shape == (12, 12, 3)


def test_decode_converts_grey_cmyk_and_transparency_to_rgb(tmp_path):
    grey = decode_image(write_image(tmp_path / "grey.jpg", 140, mode="L"), 8)
    assert grey.shape == (8, 8, 3) and (grey == grey[..., :1]).all()
    assert abs(int(grey[4, 4, 0]) - 140) <= 2
    cmyk = decode_image(write_image(tmp_path / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK"), 8)
    assert (np.abs(cmyk.astype(int) - (255, 0, 0)) <= 3).all()  # pure red
    rgba = Image.new("RGBA", (16, 16), (200, 100, 50, 255))
    rgba.paste((200, 100, 50, 0), (0, 0, 16, 8))  # top half fully transparent
    rgba.save(tmp_path / "alpha.png")
    decoded = decode_image(tmp_path / "alpha.png", 16)
    assert (decoded[:7] == 0).all() and (decoded[9:] == (200, 100, 50)).all()
    palette = Image.new("P", (8, 8), 3)
    palette.info["transparency"] = 3
    palette.save(tmp_path / "palette.png")
    assert (decode_image(tmp_path / "palette.png", 8) == 0).all()


def test_unreadable_image_is_a_user_error_naming_it(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match="cannot read this image") as caught:
        decode_image(bad, 8)
    assert str(caught.value).startswith(str(bad))


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_maps_sorted_class_folders_and_reads_val_as_test(tmp_path):
    root = write_tree(tmp_path / "tree")
    splits = load_data(folder_cfg(root, tmp_path))
    assert splits.class_names == ["cat", "dog", "owl"] and splits.num_classes == 3
    assert splits.train.images.shape == (12, 3, 16, 16) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (6, 3, 16, 16)
    assert splits.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for split in (splits.train, splits.test):
        expected = torch.tensor([COLOURS[splits.class_names[y]] for y in split.labels.tolist()])
        assert (mean_colours(split.images) - expected).abs().max() < 4  # JPEG is lossy


def test_imagefolder_holds_validation_out_of_train(tmp_path):
    root = write_tree(tmp_path / "tree", train=6)
    splits = load_data(folder_cfg(root, tmp_path, val_size=3))
    assert len(splits.train) == 15 and len(splits.val) == 3 and len(splits.test) == 6
    assert sorted(splits.val.labels.tolist()) == [0, 1, 2]  # stratified


def test_missing_tree_names_the_expected_layout(tmp_path):
    with pytest.raises(DataNotFoundError) as caught:
        load_data(folder_cfg(tmp_path / "none", tmp_path))
    message = str(caught.value)
    assert message.startswith("data.root: imagefolder is not there")
    assert f"{tmp_path / 'none'}/train/<class>/<image>" in message and "\n" not in message


def test_malformed_trees_are_user_errors(tmp_path):
    root = write_tree(tmp_path / "tree")
    write_image(root / "val" / "emu" / "x.png", (1, 2, 3))
    with pytest.raises(UserError, match="val class folder.*'emu'"):
        load_data(folder_cfg(root, tmp_path))
    flat = write_tree(tmp_path / "flat", val=0)
    write_image(flat / "val" / "ILSVRC2012_val_00000001.JPEG", (1, 2, 3))
    with pytest.raises(UserError, match="val holds images directly"):
        load_data(folder_cfg(flat, tmp_path))
    empty = write_tree(tmp_path / "empty")
    (empty / "train" / "yak").mkdir()
    with pytest.raises(UserError, match="a train class folder without images") as caught:
        load_data(folder_cfg(empty, tmp_path))
    assert str(empty / "train" / "yak") in str(caught.value)


# ---------------------------------------------------------------- imagenet_subset

WNIDS = [f"n0{i}000000" for i in range(1, 8)]


@pytest.fixture
def imagenet_tree(tmp_path: Path) -> Path:
    colours = {wnid: (30 * i, 255 - 30 * i, 100) for i, wnid in enumerate(WNIDS)}
    return write_tree(tmp_path / "imagenet", train=2, val=1, colours=colours)


def chosen_classes(root: Path, tmp: Path, **fields) -> list[str]:
    return load_data(folder_cfg(root, tmp, dataset="imagenet_subset", **fields)).class_names


def test_subset_by_count_is_fixed_by_the_class_seed(imagenet_tree, tmp_path):
    first = chosen_classes(imagenet_tree, tmp_path, num_classes=3, class_seed=0)
    assert len(first) == 3 and first == sorted(first) and set(first) <= set(WNIDS)
    assert chosen_classes(imagenet_tree, tmp_path, num_classes=3, class_seed=0) == first
    assert chosen_classes(imagenet_tree, tmp_path, num_classes=3) == first  # class_seed 0 is the default
    assert chosen_classes(imagenet_tree, tmp_path, num_classes=3, class_seed=1) != first


def test_subset_by_list_labels_the_classes_in_sorted_order(imagenet_tree, tmp_path):
    cfg = folder_cfg(imagenet_tree, tmp_path, dataset="imagenet_subset", classes=[WNIDS[5], WNIDS[2]])
    splits = load_data(cfg)
    assert splits.class_names == [WNIDS[2], WNIDS[5]]
    assert splits.train.labels.tolist() == [0, 0, 1, 1] and splits.test.labels.tolist() == [0, 1]
    expected = torch.tensor([[60, 195, 100]] * 2 + [[150, 105, 100]] * 2)
    assert (mean_colours(splits.train.images) - expected).abs().max() < 4


def test_subset_of_absent_or_too_many_classes_is_a_user_error(imagenet_tree, tmp_path):
    with pytest.raises(UserError, match=r"data.classes: 1 class\(es\) have no train folder, e.g. 'n09999999'"):
        chosen_classes(imagenet_tree, tmp_path, classes=[WNIDS[0], "n09999999"])
    with pytest.raises(UserError, match="data.num_classes: 8 classes asked for, the train folder has 7"):
        chosen_classes(imagenet_tree, tmp_path, num_classes=8)


# ---------------------------------------------------------------- the cache


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Every path decode_image is called with."""
    seen: list[Path] = []
    real = image_cache.decode_image

    def counting(path: Path, size: int, box: image_cache.Box | None = None) -> np.ndarray:
        seen.append(path)
        return real(path, size, box)

    monkeypatch.setattr(image_cache, "decode_image", counting)
    return seen


def test_cache_is_built_once_then_reused(tmp_path, decodes):
    root = write_tree(tmp_path / "tree")
    first = load_data(folder_cfg(root, tmp_path))
    assert len(decodes) == 18
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # one file per split
    again = load_data(folder_cfg(root, tmp_path))
    assert len(decodes) == 18, "the second load decoded images"
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test.labels, again.test.labels)


def test_cache_is_rebuilt_when_the_source_or_size_changes(tmp_path, decodes):
    root = write_tree(tmp_path / "tree")
    load_data(folder_cfg(root, tmp_path))
    assert len(decodes) == 18
    assert load_data(folder_cfg(root, tmp_path, image_size=20)).train.images.shape[-1] == 20
    assert len(decodes) == 36
    write_image(root / "train" / "dog" / "new.png", (0, 0, 0))
    assert len(load_data(folder_cfg(root, tmp_path)).train) == 13
    assert len(decodes) == 36 + 13, "only the changed split is decoded again"
    replaced = root / "val" / "owl" / "img0.JPEG"
    write_image(replaced, (255, 255, 255), size=(20, 20))
    os.utime(replaced, ns=(1, 1))
    test = load_data(folder_cfg(root, tmp_path)).test
    assert len(decodes) == 36 + 13 + 6
    assert (test.images[4] > 250).all()
    before = len(decodes)
    load_data(folder_cfg(root, tmp_path, classes=["cat", "dog"]))
    assert len(decodes) == before + 9 + 4, "another class list is another cache"


def test_damaged_cache_file_is_rebuilt(tmp_path, decodes):
    root = write_tree(tmp_path / "tree")
    load_data(folder_cfg(root, tmp_path))
    for path in (tmp_path / "cache").glob("*.pt"):
        path.write_bytes(b"garbage")
    again = load_data(folder_cfg(root, tmp_path))
    assert len(decodes) == 36 and again.train.images.shape == (12, 3, 16, 16)


# ---------------------------------------------------------------- loader and random-resized crop


def test_loader_batches_of_a_folder_data_set(tmp_path):
    root = write_tree(tmp_path / "tree")
    splits = load_data(folder_cfg(root, tmp_path))
    augment = AugmentConfig(random_resized_crop={})
    loader = BatchLoader(
        splits.train, 5, device=torch.device("cpu"), mean=splits.mean, std=splits.std,
        shuffle=True, drop_last=True, augment=augment, generator=torch.Generator().manual_seed(0),
    )
    batches = list(loader)
    assert len(batches) == 2
    mean, std = torch.tensor(splits.mean).view(1, 3, 1, 1), torch.tensor(splits.std).view(1, 3, 1, 1)
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape == (5, 3, 16, 16) and y.shape == (5,)
        pixels = (x * std + mean) * 255
        assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


def ramps(n: int, side: int) -> torch.Tensor:
    """float (n, 1, side, side) images whose value is the column index."""
    return torch.arange(side, dtype=torch.float32).expand(n, 1, side, side).clone()


def test_random_resized_crop_is_a_box_of_the_drawn_size_resized_to_the_image():
    images = ramps(64, 32)
    out = random_resized_crop(images, (0.25, 0.25), (1.0, 1.0), True, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    steps = out[:, 0, :, 1:] - out[:, 0, :, :-1]  # a box half as wide: half a column per pixel
    slopes = steps.mean(dim=(1, 2))
    assert torch.allclose(steps, slopes[:, None, None], atol=1e-4)
    assert torch.allclose(slopes.abs(), torch.tensor(0.5), atol=1e-4)
    mirrored = (slopes < 0).sum().item()
    assert 16 < mirrored < 48  # about half are flipped
    starts = torch.where(slopes > 0, out[:, 0, 0, 0], out[:, 0, 0, -1])
    assert starts.min() >= 0 and starts.max() <= 16 and starts.std() > 2  # anywhere in the image
    assert out.min() >= 0 and out.max() <= 31


def test_random_resized_crop_of_the_whole_image_is_the_image():
    images = torch.rand(4, 3, 12, 12)
    same = random_resized_crop(images, (1.0, 1.0), (1.0, 1.0), False, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, images)


def test_random_resized_crop_is_deterministic_for_a_generator():
    images = torch.rand(8, 3, 20, 20)

    def crop(seed: int) -> torch.Tensor:
        return random_resized_crop(images, (0.35, 1.0), (0.75, 1.333), True, torch.Generator().manual_seed(seed))

    assert torch.equal(crop(3), crop(3))
    assert not torch.equal(crop(3), crop(4))


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"dataset": "cifar10", "image_size": 64}, "data.image_size applies only to dataset imagenette"),
        ({"dataset": "imagefolder", "variant": 160}, "data.variant applies only"),
        ({"dataset": "imagenette", "num_classes": 3}, "data.num_classes applies only"),
        ({"dataset": "imagenet_subset"}, "needs data.classes"),
        ({"dataset": "imagenet_subset", "classes": ["n01440764", "n02102040"], "num_classes": 2}, "not both"),
        ({"dataset": "imagenet_subset", "classes": ["n01440764", "tench"]}, "'tench' is not an ImageNet wnid"),
        ({"dataset": "imagefolder", "classes": ["a", "a", "b"]}, "classes repeated: a"),
        ({"dataset": "imagefolder", "classes": ["a", "../b"]}, "not a class folder name"),
        ({"dataset": "imagefolder", "class_seed": 1}, "set num_classes"),
        ({"dataset": "imagenette", "variant": 224}, "variant"),
        ({"dataset": "imagefolder", "image_size": 8}, "image_size"),
        ({"dataset": "imagefolder", "augment": {"crop_padding": 4, "random_resized_crop": {}}}, "choose one crop"),
        ({"dataset": "imagefolder", "augment": {"random_resized_crop": {"scale": [0.9, 0.5]}}}, "above high"),
    ],
)
def test_image_fields_are_validated(fields, complaint):
    with pytest.raises(pydantic.ValidationError, match=complaint):
        DataConfig.model_validate(fields)


def test_image_defaults_are_filled_where_they_apply_and_absent_elsewhere():
    nette = DataConfig(dataset="imagenette", variant=320)
    assert (nette.variant, nette.image_size, nette.augment.crop_padding) == ("320", 128, 4)
    subset = DataConfig(dataset="imagenet_subset", num_classes=5, augment={"random_resized_crop": {}})
    assert subset.class_seed == 0 and subset.augment.crop_padding == 0
    assert subset.augment.random_resized_crop.scale == (0.35, 1.0)
    # nothing new in the dump of the existing data sets, so their run ids did not change
    dumped = DataConfig(dataset="cifar10").model_dump()
    assert set(dumped) == {"dataset", "root", "download", "train_subset", "val_size", "split_seed", "augment", "synthetic"}
    assert set(dumped["augment"]) == {"crop_padding", "flip"}
    assert DataConfig.model_validate(subset.model_dump()) == subset


# ---------------------------------------------------------------- imagenette


def nette_cfg(tmp: Path, **fields) -> DataConfig:
    return DataConfig(dataset="imagenette", root=str(tmp / "data"), cache_root=str(tmp / "cache"),
                      image_size=16, val_size=0, **fields)


def imagenette_archive(path: Path, wnids: list[str], extra: dict[str, bytes] | None = None) -> None:
    """A tar.gz laid out like imagenette2-160.tgz (two tiny images per class and split)."""
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (90, 120, 150)).save(buffer, "JPEG")
    members = {f"imagenette2-160/{split}/{wnid}/{wnid}_{i}.JPEG": buffer.getvalue()
               for split in ("train", "val") for wnid in wnids for i in range(2)}
    members["imagenette2-160/noisy_imagenette.csv"] = b"path,noisy_labels_0\n"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in (members | (extra or {})).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo(f"imagenette2-160/train/{wnids[0]}/link.JPEG")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def test_missing_imagenette_says_where_to_put_it(tmp_path):
    with pytest.raises(DataNotFoundError) as caught:
        load_data(nette_cfg(tmp_path))
    message = str(caught.value)
    assert f"{tmp_path / 'data'}/imagenette2-160/{{train,val}}/<wnid>/*.JPEG" in message
    assert "data.download: true" in message and "imagenette2-160.tgz" in message and "\n" not in message


def test_imagenette_download_extracts_only_the_image_tree(tmp_path, monkeypatch):
    wnids = list(imagenette.DATASETS["imagenette"].classes)
    imagenette_archive(tmp_path / "imagenette2-160.tgz", wnids, {"imagenette2-160/train/../../escaped.JPEG": b"x"})
    monkeypatch.setattr(imagenette, "BASE_URL", tmp_path.as_uri() + "/")
    splits = load_data(nette_cfg(tmp_path, download=True))
    assert splits.class_names[:2] == ["tench", "English springer"] and splits.num_classes == 10
    assert len(splits.train) == len(splits.test) == 20
    folder = tmp_path / "data" / "imagenette2-160"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["imagenette2-160"]
    assert sorted(p.name for p in (folder / "train").iterdir()) == wnids
    assert not (folder / "train" / wnids[0] / "link.JPEG").exists()
    assert not list(tmp_path.rglob("escaped.JPEG"))
    load_data(nette_cfg(tmp_path))  # found without download


def test_imagenette_archive_without_a_class_leaves_nothing(tmp_path, monkeypatch):
    wnids = list(imagenette.DATASETS["imagenette"].classes)
    imagenette_archive(tmp_path / "imagenette2-160.tgz", wnids[:-1])
    monkeypatch.setattr(imagenette, "BASE_URL", tmp_path.as_uri() + "/")
    with pytest.raises(DataNotFoundError, match="does not hold imagenette2-160/{train,val}/<wnid>/"):
        load_data(nette_cfg(tmp_path, download=True))
    assert not (tmp_path / "data").exists()  # made for the download, and removed with it


# ---------------------------------------------------------------- a real run


def test_resnet18_trains_on_an_image_tree_through_the_cli(tmp_path):
    root = write_tree(tmp_path / "tree", train=6)
    experiment = {
        "name": "folder_run",
        "data": {"dataset": "imagefolder", "root": str(root), "cache_root": str(tmp_path / "cache"),
                 "image_size": 32, "val_size": 3, "augment": {"random_resized_crop": {}}},
        "model": {"backbone": {"name": "resnet18", "width": 8}, "pool": {"name": "gem", "p": 3.0}},
        "head": {"name": "arcface", "scale": 16.0, "margin": 0.2},
        "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 16, "device": "cpu"},
        "record": {"every_steps": 1},
    }
    path = tmp_path / "folder_run.yaml"
    path.write_text(yaml.safe_dump(experiment))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "results"), "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "results" / "folder_run").iterdir() if p.is_dir()]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    for name in ("config.yaml", "metrics.csv", "params.csv", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["image_size"] == 32 and config["model"]["backbone"]["name"] == "resnet18"
    assert "epoch" in (run_dir / "metrics.csv").read_text().splitlines()[0]
