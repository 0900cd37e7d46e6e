"""`pooling-lab status`: every run's state (a run whose process died shows as stopped, one a live
process holds as running), progress, final p, accuracy and error, as a table and as JSON."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from tiny_sweeps import experiment, run_cli

from pooling_lab.experiment import load_plan
from pooling_lab.run import claims


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Four runs: done, stopped (killed, by the look of it), failed, and pending."""
    tmp = tmp_path_factory.mktemp("status")
    path = experiment(tmp, train={"epochs": 1}, sweep={"grid": {"optim.lr": [0.05, 0.1]}, "seeds": [0, 1]})
    out = tmp / "results"
    assert run_cli("run", path, "--out", out, "-q").exit_code == 0
    root = out / "tiny"
    names = [spec.dir_name for spec in load_plan(path).runs]
    edit_status(root / names[1], status="running", epoch=0, step=7)
    edit_status(root / names[2], status="failed", error="RuntimeError: boom", traceback="traceback.txt")
    shutil.rmtree(root / names[3])
    return root, names


def edit_status(run_dir: Path, **fields: object) -> None:
    path = run_dir / "status.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def test_json_gives_each_runs_state_progress_and_outcome(sweep: tuple[Path, list[str]]) -> None:
    root, names = sweep
    result = run_cli("status", root, "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["experiment"] == "tiny" and view["swept"] == ["optim.lr"]
    runs = {run["run"]: run for run in view["runs"]}
    assert [runs[name]["state"] for name in names] == ["done", "stopped", "failed", "pending"]
    done, stopped, failed, pending = (runs[name] for name in names)
    assert (done["epoch"], done["epochs"], done["step"], done["total_steps"]) == (1, 1, 22, 22)
    assert done["optim.lr"] == 0.05 and done["seed"] == 0 and done["attempts"] == 1
    assert 0 <= done["test_accuracy"] <= 1 and done["p_final"] > 0 and done["error"] is None
    assert (stopped["epoch"], stopped["step"]) == (0, 7)
    assert failed["error"] == "RuntimeError: boom" and failed["traceback"] == str(root / names[2] / "traceback.txt")
    assert pending["step"] is None and pending["p_final"] is None  # null, not NaN: plain JSON


def test_a_run_a_live_process_holds_is_running(sweep: tuple[Path, list[str]]) -> None:
    root, names = sweep
    claim = root / names[1] / "claim.0.json"
    claim.write_text(json.dumps({"host": claims.HOST, "pid": os.getppid(), "token": "t", "heartbeat": time.time()}))
    try:
        [run] = [r for r in json.loads(run_cli("status", root, "--json").stdout)["runs"] if r["run"] == names[1]]
    finally:
        claim.unlink()
    assert run["state"] == "running" and run["held_by"] == f"{claims.HOST}:{os.getppid()}"


def test_the_table_shows_states_progress_and_errors(sweep: tuple[Path, list[str]]) -> None:
    root, names = sweep
    result = run_cli("status", root)
    assert result.exit_code == 0, result.output
    rows = {name: next(line for line in result.stdout.splitlines() if name in line) for name in names}
    assert "done" in rows[names[0]] and "1/1" in rows[names[0]] and "22/22" in rows[names[0]]
    assert "stopped" in rows[names[1]] and "0/1" in rows[names[1]] and "7/22" in rows[names[1]]
    assert "failed" in rows[names[2]] and "pending" in rows[names[3]]
    assert f"{names[2]}: failed: RuntimeError: boom ({root / names[2] / 'traceback.txt'})" in result.stdout.splitlines()


def test_a_directory_that_is_not_a_results_directory_is_one_line(tmp_path: Path) -> None:
    result = run_cli("status", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {tmp_path}: not a results directory: {tmp_path / 'runs.csv'} is missing"]
