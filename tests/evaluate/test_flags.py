"""A run that ends `done` with chance accuracy or a pooling p far outside any sensible range is
flagged: in status.json, runs.csv, `pooling-lab status` and the end-of-run summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from tiny_sweeps import experiment, run_cli

from pooling_lab.evaluate import run_flags

# lr = 1e6 blows p up and leaves chance accuracy, yet the loss stays finite for these 4 steps
BROKEN = {
    "optim": {"lr": 1e6, "weight_decay": 5e-4, "warmup_epochs": 0.5,
              "pool_params": {"lr_mult": 20.0, "clamp": [1.0, None]}},
    "head": {"name": "arcface", "scale": 30.0, "margin": 0.2},
    "train": {"epochs": 2, "batch_size": 128},
}


@pytest.mark.parametrize(("accuracy", "classes", "p", "flags"), [
    (0.1, 10, 770288.0, ["chance accuracy: test accuracy 0.1 <= 0.15 (chance 0.1 with 10 classes)",
                         "p out of range: p = 770288 outside [0.5, 1000]"]),
    (0.16, 10, 22.0, []),
    (0.54, 2, 3.0, ["chance accuracy: test accuracy 0.54 <= 0.55 (chance 0.5 with 2 classes)"]),
    (0.56, 2, 0.5, []),
    (0.0012, 1000, 1000.0, ["chance accuracy: test accuracy 0.0012 <= 0.0015 (chance 0.001 with 1000 classes)"]),
    (0.08, 1000, 0.3, ["p out of range: p = 0.3 outside [0.5, 1000]"]),
    (0.9, 10, math.nan, []),  # a pool without p
])
def test_flags_name_what_is_wrong(accuracy: float, classes: int, p: float, flags: list[str]) -> None:
    assert run_flags({"test_accuracy": accuracy, "p_final": p}, classes) == flags


def _run(directory: Path, **sections: object) -> tuple[Path, str]:
    """One run of the tiny experiment with a wide terminal, so the summary table is one line per run."""
    directory.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "250")
        result = run_cli("run", experiment(directory, **sections), "--out", directory / "results")
    assert result.exit_code == 0, result.output
    return next((directory / "results" / "tiny").glob("*/status.json")).parent, result.stdout


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _run(tmp_path_factory.mktemp("flags") / "broken", **BROKEN)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _run(tmp_path_factory.mktemp("flags") / "healthy")


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _line_of(run: Path, output: str) -> str:
    return next(line for line in output.splitlines() if run.name in line)


def test_a_run_at_chance_with_a_huge_p_is_flagged_everywhere(broken: tuple[Path, str]) -> None:
    run, output = broken
    status = _status(run)
    assert status["status"] == "done"
    assert status["flags"] == [
        f"chance accuracy: test accuracy {status['test_accuracy']:.3g} <= 0.325 (chance 0.25 with 4 classes)",
        f"p out of range: p = {status['p_final']:.6g} outside [0.5, 1000]",
    ]
    runs = pd.read_csv(run.parent / "runs.csv")
    assert list(runs["flags"]) == ["; ".join(status["flags"])]
    assert "chance accuracy, p out of range" in _line_of(run, output.split("summary", 1)[1])
    table = run_cli("status", run.parent).stdout
    assert "done*" in _line_of(run, table) and "* flagged: see below" in table
    assert table.splitlines()[-2:] == [f"{run.name}: flagged: {flag}" for flag in status["flags"]]
    [listed] = json.loads(run_cli("status", run.parent, "--json").stdout)["runs"]
    assert listed["flags"] == status["flags"]


def test_a_healthy_run_has_no_flag(healthy: tuple[Path, str]) -> None:
    run, output = healthy
    status = _status(run)
    assert status["status"] == "done" and status["flags"] == []
    assert pd.read_csv(run.parent / "runs.csv")["flags"].isna().all()
    table = run_cli("status", run.parent).stdout
    assert "flagged" not in table and "done*" not in table and "flagged" not in output
    assert "flags" not in next(line for line in output.splitlines() if "time (s)" in line)
