"""The open-set class split: seen and unseen classes apart, the head sized to the seen ones, the
probe's validation images and the test images disjoint and of unseen classes only; every
source; bad input in one line; no effect on the run ids of configs that leave it unset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from tiny_sweeps import TINY, experiment, run_cli

from pooling_lab.data import DataConfig, OpenSetConfig, load_data, read_source
from pooling_lab.errors import UserError
from pooling_lab.experiment import load_plan

from .test_data import write_cifar100

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def synthetic(classes: int, unseen: dict, **data) -> DataConfig:
    return DataConfig.model_validate({
        "dataset": "synthetic", "open_set": unseen, "val_size": 0.1, **data,
        "synthetic": {"num_classes": classes, "image_size": 8, "cell_size": 4, "train_size": 20 * classes,
                      "test_size": 6 * classes},
    })


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_the_last_classes_are_unseen_and_the_splits_keep_them_apart() -> None:
    config = synthetic(100, {"unseen_classes": 50})
    data, source = load_data(config), read_source(config)
    assert data.num_classes == 50 and data.class_names == source.class_names[:50]
    assert list(data.unseen_class_names) == source.class_names[50:]
    for split in (data.train, data.val, data.test):
        assert set(split.labels.tolist()) == set(range(50))
    for split in (data.unseen_val, data.unseen_test):
        assert set(split.labels.tolist()) == set(range(50, 100))
    # the probe's validation images come from the official train split, the test images are the
    # official test split's unseen-class images, all of them: no image is in both
    official_train_unseen = source.train.images[source.train.labels >= 50]
    official_test_unseen = source.test.images[source.test.labels >= 50]
    assert rows(data.unseen_val.images) <= rows(official_train_unseen)
    assert torch.equal(data.unseen_test.images, official_test_unseen)
    assert not rows(data.unseen_val.images) & rows(data.unseen_test.images)
    assert not rows(data.unseen_val.images) & rows(data.train.images)
    assert len(data.unseen_val) == round(0.1 * len(official_train_unseen))  # val_size applies to each side
    assert len(data.val) == round(0.1 * int((source.train.labels < 50).sum()))


def test_explicit_unseen_classes_are_renumbered_after_the_seen_ones() -> None:
    config = synthetic(6, {"unseen": [4, 1]})
    data, source = load_data(config), read_source(config)
    assert data.class_names == ["class0", "class2", "class3", "class5"]
    assert data.unseen_class_names == ("class1", "class4")
    seen_test = source.test.labels[torch.isin(source.test.labels, torch.tensor([0, 2, 3, 5]))]
    assert data.test.labels.tolist() == [{0: 0, 2: 1, 3: 2, 5: 3}[label] for label in seen_test.tolist()]
    unseen_test = source.test.labels[torch.isin(source.test.labels, torch.tensor([1, 4]))]
    assert data.unseen_test.labels.tolist() == [{1: 4, 4: 5}[label] for label in unseen_test.tolist()]


def test_cifar100_splits_50_50(tmp_path: Path) -> None:
    write_cifar100(tmp_path)  # train labels 99, 0, 42, 7; test labels 5, 6, 7
    data = load_data(DataConfig(dataset="cifar100", root=str(tmp_path), val_size=0,
                                open_set=OpenSetConfig(unseen_classes=50)))
    assert data.num_classes == 50 and data.class_names[-1] == "fine49"
    assert data.unseen_class_names[0] == "fine50" and len(data.unseen_class_names) == 50
    assert data.train.labels.tolist() == [0, 42, 7] and data.test.labels.tolist() == [5, 6, 7]
    assert data.unseen_test.labels.tolist() == [] and data.unseen_val is None


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_splits_6_4() -> None:
    data = load_data(DataConfig(dataset="fashion_mnist", root=str(FASHION_MNIST), val_size=2500,
                                open_set=OpenSetConfig(unseen_classes=4)))
    assert data.num_classes == 6
    assert len(data.unseen_class_names) == 4 and len(data.unseen_test) == 4000 and len(data.test) == 6000
    assert len(data.unseen_val) == 2500 and len(data.val) == 2500
    assert len(data.train) == 36000 - 2500


def test_the_head_has_the_seen_classes_and_runs_record_the_protocol(tmp_path: Path) -> None:
    path = experiment(tmp_path, train={"epochs": 1}, eval={"probe_p": [2]},
                      data={**TINY["data"], "open_set": {"unseen_classes": 2},
                            "synthetic": {**TINY["data"]["synthetic"], "num_classes": 6}})
    result = run_cli("run", path, "--out", tmp_path / "results", "-q")
    assert result.exit_code == 0, result.output
    root = tmp_path / "results" / "tiny"
    (run,) = [folder.parent for folder in root.glob("*/status.json")]
    head = torch.load(run / "checkpoint.pt", weights_only=False)["model"]["head.weight"]
    assert head.shape[0] == 4
    assert yaml.safe_load((run / "status.json").read_text())["protocol"] == "open"
    assert (root / "runs.csv").read_text().splitlines()[1].split(",")[3] == "open"
    probe_columns = (run / "probe.csv").read_text().splitlines()[0]
    assert probe_columns == "p,map,recall@1,on_grid"  # no accuracy on classes the head does not have


@pytest.mark.parametrize(("open_set", "message"), [
    ({"unseen": [1, 9]}, "data.open_set.unseen: class 9 does not exist: the data set has classes 0..5"),
    ({"unseen_classes": 5}, "data.open_set.unseen_classes: 5 unseen classes leave 1 of the 6 to train on; "
                            "at least 2 are needed"),
])
def test_unseen_classes_the_data_set_cannot_give_are_one_line(tmp_path: Path, open_set: dict, message: str) -> None:
    path = experiment(tmp_path, data={**TINY["data"], "open_set": open_set,
                                      "synthetic": {**TINY["data"]["synthetic"], "num_classes": 6}})
    result = run_cli("run", path, "--out", tmp_path / "results")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {path}: {message}"]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("open_set", [{}, {"unseen_classes": 2, "unseen": [0, 1]}, {"unseen": [1, 1, 2]},
                                      {"unseen_classes": 1}])
def test_an_open_set_names_its_unseen_classes_one_way(open_set: dict) -> None:
    with pytest.raises(ValidationError):
        OpenSetConfig.model_validate(open_set)


def test_an_open_set_needs_a_retrieval_metric(tmp_path: Path) -> None:
    path = experiment(tmp_path, eval={"metrics": ["accuracy"]},
                      data={**TINY["data"], "open_set": {"unseen_classes": 2}})
    with pytest.raises(UserError, match="list a retrieval metric"):
        load_plan(path)


def test_an_unset_open_set_leaves_dumps_and_run_ids_as_they_were(tmp_path: Path) -> None:
    closed = load_plan(experiment(tmp_path)).runs[0]
    assert "open_set" not in closed.config.data.model_dump() and closed.config.data.protocol == "closed"
    assert "plateau_tolerance" not in closed.config.eval.model_dump()
    opened = load_plan(experiment(tmp_path, data={**TINY["data"], "open_set": {"unseen_classes": 2}})).runs[0]
    assert opened.config.data.model_dump(mode="json")["open_set"] == {"unseen_classes": 2}
    assert opened.run_id != closed.run_id and opened.config.data.protocol == "open"
