"""Every run records where its time went: training (with the per-epoch accuracy), the final
evaluation with the probe, and their sum, in status.json and runs.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tiny_sweeps import experiment, run_cli


def test_a_run_records_training_and_evaluation_time(tmp_path: Path) -> None:
    result = run_cli("run", experiment(tmp_path, train={"epochs": 1}), "--out", tmp_path / "results")
    assert result.exit_code == 0, result.output
    [status_file] = (tmp_path / "results" / "tiny").glob("*/status.json")
    status = json.loads(status_file.read_text())
    assert status["train_time_s"] > 0 and status["eval_time_s"] > 0
    assert status["wall_time_s"] == pytest.approx(status["train_time_s"] + status["eval_time_s"], abs=2e-3)
    row = pd.read_csv(tmp_path / "results" / "tiny" / "runs.csv").iloc[0]
    assert [row[key] for key in ("train_time_s", "eval_time_s", "wall_time_s")] == pytest.approx(
        [status["train_time_s"], status["eval_time_s"], status["wall_time_s"]])
    columns = list(row.index)
    assert columns.index("step") < columns.index("train_time_s") < columns.index("eval_time_s") < columns.index("wall_time_s")
