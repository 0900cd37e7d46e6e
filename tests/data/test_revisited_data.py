"""Revisited Oxford and Paris on disk: the reader (query boxes applied, ground truth checked),
the download (offline, from file:// URLs), and the refusal to train on them."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from revisited_files import (
    BLUE,
    BOXES,
    DATABASE,
    QUERIES,
    RED,
    ground_truth,
    write_images,
    write_pickle,
    write_roxford,
)
from tiny_sweeps import experiment, run_cli

from pooling_lab.data import revisited
from pooling_lab.data.image_cache import decode_image
from pooling_lab.errors import DataNotFoundError, UserError

SIZE = 16


def load(root: Path, cache: Path, name: str = "roxford5k", download: bool = False) -> revisited.RevisitedData:
    return revisited.load_revisited(name, root, download, SIZE, cache)


def test_reader_returns_database_cropped_queries_and_ground_truth(tmp_path: Path) -> None:
    folder = write_roxford(tmp_path / "data")
    data = load(tmp_path / "data", tmp_path / "cache")
    assert data.database.images.shape == (len(DATABASE), 3, SIZE, SIZE)
    assert data.queries.images.shape == (len(QUERIES), 3, SIZE, SIZE)
    for index, name in enumerate(DATABASE):
        expected = decode_image(folder / "jpg" / f"{name}.jpg", SIZE).transpose(2, 0, 1)
        assert torch.equal(data.database.images[index], torch.tensor(expected))
    # each query holds only its box's half: all blue for query 0, all red for query 1
    for index, colour in enumerate((BLUE, RED)):
        mean = data.queries.images[index].float().mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor(colour, dtype=torch.float32), atol=12), (index, mean)
    uncropped = decode_image(folder / "jpg" / f"{QUERIES[0]}.jpg", SIZE).reshape(-1, 3).mean(axis=0)
    assert abs(uncropped[0] - uncropped[2]) < 40  # the whole query image is half red, half blue
    assert data.gnd == [
        {"bbx": BOXES[0], "easy": [0, 1], "hard": [2, 5], "junk": [3]},
        {"bbx": BOXES[1], "easy": [4, 6], "hard": [7], "junk": []},
    ]


def test_query_boxes_are_part_of_the_cache_key(tmp_path: Path) -> None:
    folder = write_roxford(tmp_path / "data")
    first = load(tmp_path / "data", tmp_path / "cache")
    content = ground_truth()
    content["gnd"][0]["bbx"] = [0.0, 0.0, 20.0, 30.0]  # now the red half
    write_pickle(folder / "gnd_roxford5k.pkl", content)
    again = load(tmp_path / "data", tmp_path / "cache")
    assert torch.equal(again.database.images, first.database.images)
    assert torch.equal(again.queries.images[0], first.queries.images[1])  # both red halves
    assert len(list((tmp_path / "cache").glob("roxford5k-queries-*.pt"))) == 2


def test_a_missing_data_set_names_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as error:
        load(tmp_path, tmp_path / "cache")
    folder = tmp_path / "roxford5k"
    assert error.value.one_line() == (
        f"--root: roxford5k is not there: expected {folder}/gnd_roxford5k.pkl and {folder}/jpg/<image>.jpg "
        "for every image it names (the revisitop layout). Give --download to download it (needs internet) "
        "or place the files there yourself"
    )
    assert not folder.exists()


def test_an_image_missing_from_the_folder_is_named(tmp_path: Path) -> None:
    folder = write_roxford(tmp_path / "data")
    (folder / "jpg" / f"{DATABASE[3]}.jpg").unlink()
    with pytest.raises(UserError) as error:
        load(tmp_path / "data", tmp_path / "cache")
    assert error.value.one_line() == (
        f"{folder / 'jpg'}: 1 image(s) the ground truth names are not there, e.g. {DATABASE[3]}.jpg; "
        "remove the folder to download it again"
    )


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def _changed(change) -> dict:
    content = ground_truth()
    change(content)
    return content


@pytest.mark.parametrize(("content", "message"), [
    (_RunsCode(), f"not a readable ground-truth pickle (it refers to {os.getcwd.__module__}.getcwd, which a "
                  "ground-truth file does not hold)"),
    ([1, 2], "expected a dict with keys imlist, qimlist, gnd"),
    (_changed(lambda c: c["imlist"].__setitem__(2, "../../etc/passwd")), "imlist: '../../etc/passwd' is not an image name"),
    (_changed(lambda c: c["gnd"].pop()), "gnd must hold one entry per query of qimlist (2)"),
    (_changed(lambda c: c["gnd"][1].__setitem__("junk", [4])), "gnd: query 1: image 4 is in both 'easy' and 'junk'"),
    (_changed(lambda c: c["gnd"][0].__setitem__("hard", [8])),
     "gnd: query 0: 'hard' index 8 is outside the 8 database images"),
    (_changed(lambda c: c["gnd"][0].__setitem__("bbx", [5, 0, 5, 30])),
     "gnd: query 0: bbx must be [left, upper, right, lower] with left < right and upper < lower"),
])
def test_a_bad_ground_truth_is_one_line_naming_the_file(tmp_path: Path, content, message: str) -> None:
    path = write_pickle(tmp_path / "gnd_roxford5k.pkl", content)
    with pytest.raises(UserError) as error:
        revisited.read_ground_truth(path)
    assert error.value.one_line() == f"{path}: {message}"


def test_a_damaged_ground_truth_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps(ground_truth())[:100])
    with pytest.raises(UserError, match=f"^{path}: not a readable ground-truth pickle"):
        revisited.read_ground_truth(path)


def test_training_on_an_evaluation_only_data_set_is_refused(tmp_path: Path) -> None:
    path = experiment(tmp_path, data={"dataset": "rparis6k"})
    result = run_cli("validate", path)
    assert result.exit_code == 2
    assert "data.dataset" in result.output
    assert ("rparis6k is for evaluation only (it has no training split): train on another data set, then "
            "evaluate the run with `pooling-lab evaluate RUN_DIR --data rparis6k`") in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- the download


def _tar(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path.as_uri()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """rparis6k served from file:// URLs: the ground truth and two archives whose images sit in
    sub-folders (one named with ../), beside files the ground truth does not name."""
    server = tmp_path / "server"
    files = {name: path.read_bytes() for name, path in write_images(server / "images").items()}
    write_pickle(server / "rparis6k" / "gnd_rparis6k.pkl", ground_truth())
    monkeypatch.setattr(revisited, "GROUND_TRUTH_URL", server.as_uri() + "/{name}/gnd_{name}.pkl")
    names = list(files)
    first = {f"paris/defense/{name}.jpg": files[name] for name in names[:5]} | {"paris/defense/extra.jpg": b"x"}
    second = {f"paris/louvre/{name}.jpg": files[name] for name in names[5:-1]}
    second |= {f"../../outside/{names[-1]}.jpg": files[names[-1]], f"paris/louvre/{names[0]}.txt": b"x"}
    archives = (_tar(server / "paris_1-v1.tgz", first), _tar(server / "paris_2-v1.tgz", second))
    monkeypatch.setitem(revisited.IMAGE_ARCHIVES, "rparis6k", archives)
    return server


def test_download_places_the_revisitop_layout(tmp_path: Path, remote: Path) -> None:
    data = load(tmp_path / "data", tmp_path / "cache", "rparis6k", download=True)
    folder = tmp_path / "data" / "rparis6k"
    assert sorted(path.name for path in folder.iterdir()) == ["gnd_rparis6k.pkl", "jpg"]
    assert sorted(path.stem for path in (folder / "jpg").iterdir()) == sorted(DATABASE + QUERIES)
    for name in DATABASE + QUERIES:
        assert (folder / "jpg" / f"{name}.jpg").read_bytes() == (remote / "images" / f"{name}.jpg").read_bytes()
    assert not list(tmp_path.rglob("outside"))
    assert data.database.images.shape[0] == len(DATABASE) and data.gnd[1]["easy"] == [4, 6]


def test_an_archive_without_an_image_leaves_no_image_folder(tmp_path: Path, remote: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first_only = revisited.IMAGE_ARCHIVES["rparis6k"][:1]
    monkeypatch.setitem(revisited.IMAGE_ARCHIVES, "rparis6k", first_only)
    with pytest.raises(DataNotFoundError, match=r"--download: the archives .* lack 5 of the 10 images the ground truth names"):
        load(tmp_path / "data", tmp_path / "cache", "rparis6k", download=True)
    folder = tmp_path / "data" / "rparis6k"
    assert sorted(path.name for path in folder.iterdir()) == ["gnd_rparis6k.pkl"]  # checked, kept


def test_a_download_that_is_not_a_ground_truth_is_not_kept(tmp_path: Path, remote: Path) -> None:
    (remote / "rparis6k" / "gnd_rparis6k.pkl").write_bytes(b"<html>moved</html>")
    with pytest.raises(DataNotFoundError, match="--download: .*gnd_rparis6k.pkl is not a revisitop ground-truth file"):
        load(tmp_path / "data", tmp_path / "cache", "rparis6k", download=True)
    assert not (tmp_path / "data").exists()


def test_numpy_arrays_in_the_ground_truth_are_read(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "gnd.pkl", ground_truth())
    truth = revisited.read_ground_truth(path)
    assert truth.gnd[1]["hard"] == [7] and isinstance(truth.gnd[1]["hard"][0], int)
    assert np.allclose(truth.gnd[1]["bbx"], BOXES[1])
