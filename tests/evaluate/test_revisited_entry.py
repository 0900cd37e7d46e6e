"""``pooling-lab evaluate RUN --data roxford5k``: a trained run evaluated on a tiny revisited
Oxford in the official format, with multi-scale descriptors, without touching what the run
recorded; a missing data set is one line with exit code 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from revisited_files import write_roxford
from tiny_sweeps import experiment, run_cli

from pooling_lab.data import load_data
from pooling_lab.data.revisited import load_revisited
from pooling_lab.evaluate import revisited_map
from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import build_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("revisited")
    result = run_cli("run", experiment(root, train={"epochs": 1}), "--out", root / "results", "-q")
    assert result.exit_code == 0, result.output
    return root / "results" / "tiny"


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained experiment's one run, for one test to change."""
    copy = Path(shutil.copytree(trained, tmp_path / "tiny"))
    return next(path.parent for path in copy.glob("*/config.yaml"))


@pytest.fixture
def roxford(tmp_path: Path) -> Path:
    write_roxford(tmp_path / "datasets")
    return tmp_path / "datasets"


def evaluate(run_dir: Path, root: Path, *extra: str):
    return run_cli("evaluate", run_dir, "--data", "roxford5k", "--root", root,
                   "--cache-root", root.parent / "cache", *extra)


def recorded(run_dir: Path) -> dict[str, bytes]:
    files = [path for path in run_dir.parent.rglob("*") if path.is_file() and not path.name.startswith("revisited_")]
    return {str(path): path.read_bytes() for path in files}


def expected_scores(run_dir: Path, root: Path, size: int) -> dict[str, float]:
    """Independently: the run's model from its checkpoint, each image normalised with the run's
    statistics, its embedding at scales 1, 1/sqrt(2), 1/2 L2-normalised, averaged, normalised."""
    config = ExperimentConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    data = load_data(config.data)
    model = build_model(config, 3, data.num_classes)
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
    model.eval()
    benchmark = load_revisited("roxford5k", root, False, size, root.parent / "cache")
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)

    def descriptors(images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255 - mean) / std
        total = 0
        with torch.no_grad():
            for scale in (1.0, 2**-0.5, 0.5):
                scaled = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True)
                total = total + F.normalize(model.embedding(model.pool(model.backbone(scaled))), dim=1)
        return F.normalize(total, dim=1)

    return revisited_map(descriptors(benchmark.queries.images) @ descriptors(benchmark.database.images).T,
                         benchmark.gnd)


def test_evaluate_writes_the_protocols_beside_the_untouched_record(run_dir: Path, roxford: Path) -> None:
    before = recorded(run_dir)
    result = evaluate(run_dir, roxford)
    assert result.exit_code == 0, result.output
    assert recorded(run_dir) == before
    table = pd.read_csv(run_dir / "revisited_roxford5k.csv")
    assert list(table.columns) == ["protocol", "map", "mp@1", "mp@5", "mp@10", "image_size"]
    assert list(table["protocol"]) == ["easy", "medium", "hard"]
    assert set(table["image_size"]) == {16}  # the run's image size
    expected = expected_scores(run_dir, roxford, 16)
    got = table.set_index("protocol")
    for protocol in ("easy", "medium", "hard"):
        assert got.loc[protocol, "map"] == pytest.approx(expected[protocol], abs=1e-9)
        for k in (1, 5, 10):
            assert got.loc[protocol, f"mp@{k}"] == pytest.approx(expected[f"{protocol}_mp@{k}"], abs=1e-9)
    shown = ", ".join(f"{p} {expected[p]:.4f}" for p in ("easy", "medium", "hard"))
    assert result.stdout.strip() == f"roxford5k: mAP {shown}; wrote {run_dir / 'revisited_roxford5k.csv'}"


def test_an_earlier_evaluation_is_replaced_only_when_asked(run_dir: Path, roxford: Path) -> None:
    assert evaluate(run_dir, roxford).exit_code == 0
    path = run_dir / "revisited_roxford5k.csv"
    first = path.read_bytes()
    again = evaluate(run_dir, roxford, "--image-size", "24")
    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: {path}: already evaluated: give --replace to evaluate again over it"
    assert path.read_bytes() == first
    replaced = evaluate(run_dir, roxford, "--image-size", "24", "--replace")
    assert replaced.exit_code == 0, replaced.output
    table = pd.read_csv(path)
    assert set(table["image_size"]) == {24}
    assert table.set_index("protocol")["map"].to_dict() == pytest.approx(
        {p: v for p, v in expected_scores(run_dir, roxford, 24).items() if "@" not in p}, abs=1e-9)


def test_a_missing_data_set_is_one_line_naming_the_layout(run_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    result = evaluate(run_dir, empty)
    assert result.exit_code == 2
    folder = empty / "roxford5k"
    assert result.stderr.splitlines() == [
        f"error: --root: roxford5k is not there: expected {folder}/gnd_roxford5k.pkl and {folder}/jpg/<image>.jpg "
        "for every image it names (the revisitop layout). Give --download to download it (needs internet) or "
        "place the files there yourself"
    ]
    assert not (run_dir / "revisited_roxford5k.csv").exists()


def test_an_unknown_data_set_is_refused(run_dir: Path, roxford: Path) -> None:
    result = run_cli("evaluate", run_dir, "--data", "oxford5k", "--root", roxford)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --data: 'oxford5k' is not one of roxford5k, rparis6k"
