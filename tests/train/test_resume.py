"""Resuming: a `pooling-lab run` killed (SIGKILL) inside an epoch, or stopped by SIGINT / SIGTERM,
and run again ends exactly like a run never interrupted: the same p trace row for row, the same
metrics and accuracy, bit for bit (a CPU run with a fixed seed and thread count is deterministic).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_sweeps import (
    STEPS_PER_EPOCH,
    experiment,
    frames,
    pause_at_checkpoint,
    run_cli,
    run_dirs,
    start,
)

from pooling_lab.experiment import load_plan

TOTAL_STEPS = 3 * STEPS_PER_EPOCH
RECORD = {"every_steps": 2, "gradient_split": True}  # grad_split.csv must resume exactly too


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    result = run_cli("run", experiment(root, record=RECORD), "--out", root / "results", "-q")
    assert result.exit_code == 0, result.output
    [run_dir] = run_dirs(root / "results" / "tiny")
    return run_dir


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def assert_same_run(resumed: Path, reference: Path) -> None:
    params, metrics = frames(resumed)
    expected_params, expected_metrics = frames(reference)
    pd.testing.assert_frame_equal(params, expected_params, check_exact=True)  # bit for bit, on a CPU
    pd.testing.assert_frame_equal(metrics, expected_metrics, check_exact=True)
    assert not params.duplicated(["step", "module", "param", "stat"]).any()
    assert params["step"].tolist() == list(range(0, TOTAL_STEPS + 1, 2))
    split, expected_split = (pd.read_csv(run_dir / "grad_split.csv") for run_dir in (resumed, reference))
    pd.testing.assert_frame_equal(split, expected_split, check_exact=True)
    assert split["step"].tolist() == [step for step in range(2, TOTAL_STEPS + 1, 2) for _ in ("target", "non_target")]
    got, want = status_of(resumed), status_of(reference)
    for key in ("p_final", "test_accuracy", "val_accuracy", "test_map"):
        assert got[key] == want[key], key


def test_the_reference_run_learns(reference: Path) -> None:
    """Otherwise comparing with it would prove little."""
    status = status_of(reference)
    assert status["status"] == "done" and status["attempts"] == 1 and status["resumed_from_step"] is None
    assert status["test_accuracy"] > 0.4  # four classes: chance is 0.25
    assert abs(status["p_final"] - 3.0) > 0.1


def test_sigkill_inside_an_epoch_then_resume_matches_the_uninterrupted_run(tmp_path: Path, reference: Path) -> None:
    path, out = experiment(tmp_path, record=RECORD), tmp_path / "results"
    [spec] = load_plan(path).runs
    run_dir = out / "tiny" / spec.dir_name
    process = start("run", path, "--out", out, "-q")
    state = pause_at_checkpoint(process, run_dir / "checkpoint.pt", lambda s: s["epoch"] >= 1 and s["batch"] > 0)
    process.kill()
    process.wait()
    killed_at = state["step"]
    assert killed_at % STEPS_PER_EPOCH > 0 and status_of(run_dir)["status"] == "running"
    assert run_cli("status", out / "tiny", "--json").stdout.count('"state": "stopped"') == 1
    (run_dir / ".checkpoint.pt.cut.tmp").write_bytes(b"half a checkpoint")  # as a kill while saving leaves

    result = run_cli("run", path, "--out", out, "-q")

    assert result.exit_code == 0, result.output
    status = status_of(run_dir)
    assert status["status"] == "done" and status["attempts"] == 2 and status["resumed_from_step"] == killed_at
    assert_same_run(run_dir, reference)
    assert not list(run_dir.glob("claim.*")) and not list(run_dir.glob("*.tmp"))


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_the_current_step_and_exits(tmp_path: Path, reference: Path, signum: int, exit_code: int) -> None:
    path, out = experiment(tmp_path, record=RECORD), tmp_path / "results"
    [spec] = load_plan(path).runs
    run_dir = out / "tiny" / spec.dir_name
    process = start("run", path, "--out", out, "-q")
    pause_at_checkpoint(process, run_dir / "checkpoint.pt")
    process.send_signal(signum)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == exit_code, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
    status = status_of(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert status["status"] == "interrupted" and status["step"] == checkpoint["step"] < TOTAL_STEPS
    assert pd.read_csv(run_dir / "params.csv")["step"].max() <= checkpoint["step"]

    result = run_cli("run", path, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert status_of(run_dir)["resumed_from_step"] == checkpoint["step"]
    assert_same_run(run_dir, reference)


def test_how_often_a_run_checkpoints_and_what_it_records_beside_are_not_part_of_its_id(tmp_path: Path) -> None:
    path = experiment(tmp_path)

    def run_id(*overrides: str) -> str:
        return load_plan(path, overrides).runs[0].run_id

    assert run_id("train.checkpoint_every_steps=50") == run_id("train.checkpoint_every_steps=null") == run_id()
    assert run_id("record.gradient_split=true") == run_id() == run_id("train.sync_batchnorm=true")
    assert run_id("train.on_nonfinite=skip_step") != run_id() != run_id("record.every_steps=3")



def path_of_experiment(out: Path) -> Path:
    [root] = [child for child in out.iterdir() if child.is_dir()]
    return root


def test_compile_falls_back_to_eager_when_compilation_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.compile with a compiler that fails: the run trains eagerly, status.json says why,
    and the results equal those of a run without compile."""

    def broken_compile(function: object) -> object:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    path = experiment(tmp_path, sweep=None, train={"epochs": 1, "compile": True})
    assert run_cli("run", path, "--out", tmp_path / "compiled", "-q").exit_code == 0
    assert run_cli("run", path, "--out", tmp_path / "eager", "-q", "--set", "train.compile=false").exit_code == 0
    [compiled] = run_dirs(path_of_experiment(tmp_path / "compiled"))
    [eager] = run_dirs(path_of_experiment(tmp_path / "eager"))
    compiled_status = json.loads((compiled / "status.json").read_text())
    assert compiled_status["status"] == "done"
    assert compiled_status["compile_error"] == "RuntimeError: no compiler here"
    assert "compile_error" not in json.loads((eager / "status.json").read_text())
    assert (compiled / "params.csv").read_text() == (eager / "params.csv").read_text()
