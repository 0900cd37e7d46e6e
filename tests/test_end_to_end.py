"""A real `pooling-lab run` of a tiny experiment, read back through `results.load`."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pooling_lab import results
from pooling_lab.cli import app

TINY = {
    "name": "tiny",
    "data": {
        "dataset": "synthetic",
        "val_size": 0.1,
        "augment": {"crop_padding": 0, "flip": False},
        "synthetic": {"image_size": 16, "cell_size": 4, "train_size": 600, "test_size": 200, "signal_fraction": 0.0625},
    },
    "model": {"backbone": {"name": "small_cnn", "width": 8, "depth": 2}, "pool": {"name": "gem", "p": 3.0}},
    "head": {"name": "arcface", "scale": 16.0, "margin": 0.1},
    "optim": {"lr": 0.05, "pool_params": {"lr_mult": 20.0}},
    "train": {"epochs": 2, "batch_size": 64},
    "record": {"every_steps": 3},
    "sweep": {"grid": {"head.margin": [0.0, 0.3]}, "seeds": [0, 1]},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("e2e")
    experiment = root / "tiny.yaml"
    experiment.write_text(yaml.safe_dump(TINY))
    out = root / "results"
    result = CliRunner().invoke(app, ["run", str(experiment), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return experiment, out / "tiny", result.output


def test_run_directory_is_complete(finished: tuple[Path, Path, str]) -> None:
    _, root, _ = finished
    assert (root / "experiment.yaml").exists() and (root / "runs.csv").exists()
    loaded = results.load(root)
    assert len(loaded.runs) == 4
    assert set(loaded.runs["status"]) == {"done"}
    assert sorted(loaded.runs["head.margin"].unique()) == [0.0, 0.3]
    assert sorted(loaded.runs["seed"].unique()) == [0, 1]
    for run_dir in loaded.runs["run_dir"]:
        files = results.RunFiles(root / run_dir)
        for path in (files.config, files.status, files.metrics, files.params, files.checkpoint):
            assert path.exists(), path
        config = yaml.safe_load(files.config.read_text())
        assert config["head"]["name"] == "arcface" and "sweep" not in config
    assert not list(root.rglob("*.tmp")), "a temporary file was left behind"


def test_trace_moves_and_ends_at_the_final_p(finished: tuple[Path, Path, str]) -> None:
    _, root, _ = finished
    loaded = results.load(root)
    trace = loaded.params[(loaded.params["param"] == "p") & (loaded.params["stat"] == "value")]
    steps_per_epoch = math.floor(540 / 64)  # 600 images minus the 10% validation split
    for run_id, run in trace.groupby("run_id"):
        run = run.sort_values("step")
        assert run["value"].iloc[0] == pytest.approx(3.0)
        assert run["step"].iloc[0] == 0 and run["step"].iloc[-1] == 2 * steps_per_epoch
        assert abs(run["value"].iloc[-1] - 3.0) > 0.01, "p did not move"
        p_final = loaded.runs.set_index("run_id").loc[run_id, "p_final"]
        assert run["value"].iloc[-1] == pytest.approx(p_final, rel=1e-6)
    metrics = loaded.metrics
    assert list(metrics.groupby("run_id")["epoch"].max().unique()) == [2]
    assert metrics["test_accuracy"].between(0, 1).all()


def test_rerun_skips_finished_runs(finished: tuple[Path, Path, str]) -> None:
    experiment, root, _ = finished
    before = {p: p.stat().st_mtime_ns for p in root.rglob("metrics.csv")}
    result = CliRunner().invoke(app, ["run", str(experiment), "--out", str(root.parent), "-q"])
    assert result.exit_code == 0
    assert result.output.count("already done") == 4
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("metrics.csv")}


def test_plot_writes_figures(finished: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, root, _ = finished
    result = CliRunner().invoke(app, ["plot", str(root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    png = tmp_path / "p_trajectory.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "p_final.pdf").read_bytes()[:4] == b"%PDF"


def test_console_script_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = dict(TINY, model={"pool": {"name": "gemm"}})
    experiment = tmp_path / "bad.yaml"
    experiment.write_text(yaml.safe_dump(bad))
    out = tmp_path / "results"
    process = subprocess.run(
        [sys.executable, "-m", "pooling_lab", "run", str(experiment), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in process.stderr
    assert "bad.yaml" in lines[0] and "model.pool" in lines[0] and "'gemm'" in lines[0] and "'gem'" in lines[0]
    assert not out.exists()
