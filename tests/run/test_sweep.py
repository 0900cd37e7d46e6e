"""A sweep survives what goes wrong: a run that fails (the others go on, one line says where to
look, the exit code tells), and bad input refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_sweeps import experiment, keeping_threads, run_cli, run_dir_of, run_dirs, status_of

from pooling_lab.experiment import load_plan
from pooling_lab.run.sweep import prepare, run_plan
from pooling_lab.train.loop import Trainer

SHORT = {"epochs": 1}





# --- failures ---------------------------------------------------------------------------------------


@pytest.fixture
def first_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    step = Trainer._train_step

    def failing(self: Trainer, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.config.optim.lr == 0.05 and self.step == 3:
            raise RuntimeError("boom")
        step(self, images, labels)

    monkeypatch.setattr(Trainer, "_train_step", failing)


@pytest.mark.parametrize("fail_fast", [False, True])
def test_a_failed_run_is_reported_at_once_and_the_sweep_goes_on(tmp_path: Path, first_run_fails: None, fail_fast: bool) -> None:
    path = experiment(tmp_path, train=SHORT, sweep={"grid": {"optim.lr": [0.05, 0.1]}})
    out = tmp_path / "results"
    result = run_cli("run", path, "--out", out, "-q", *(["--fail-fast"] if fail_fast else []))

    assert result.exit_code == 1
    failed, second = run_dir_of(out, path, 0), run_dir_of(out, path, 1)
    line = f"{failed.name}: failed: RuntimeError: boom ({failed / 'traceback.txt'})"
    assert line in result.stderr.splitlines()
    assert "boom" in (failed / "traceback.txt").read_text()
    assert status_of(failed)["status"] == "failed" and status_of(failed)["step"] == 3
    if fail_fast:
        assert not (second / "status.json").exists()
    else:
        assert status_of(second)["status"] == "done"
        assert result.output.index("boom") < result.output.index(f"{second.name}: started")


def test_a_run_that_failed_in_this_session_is_not_retried_in_it(tmp_path: Path, first_run_fails: None) -> None:
    """A ``--jobs`` worker must not retry what a sibling saw fail; a new sweep retries it."""
    prepared = prepare(load_plan(experiment(tmp_path, train=SHORT, sweep={"grid": {"optim.lr": [0.05, 0.1]}})), tmp_path / "out")
    failed, second = (spec.dir_name for spec in prepared.plan.runs)
    events: list[tuple[str, str]] = []

    def sweep(session: str) -> None:
        with keeping_threads():
            run_plan(prepared, on_event=lambda kind, run, status: events.append((kind, run)), session=session)

    sweep("one")
    assert events == [("started", failed), ("failed", failed), ("started", second), ("done", second)]
    events.clear()
    sweep("one")
    assert events == [("skipped", failed), ("skipped", second)]
    events.clear()
    sweep("two")
    assert events == [("started", failed), ("failed", failed), ("skipped", second)]


# --- bad input ---------------------------------------------------------------------------------------


def test_results_of_another_format_are_refused_in_one_line(tmp_path: Path) -> None:
    path, out = experiment(tmp_path, train=SHORT), tmp_path / "results"
    assert run_cli("run", path, "--out", out, "-q").exit_code == 0
    [run_dir] = run_dirs(out / "tiny")
    status = status_of(run_dir)
    (run_dir / "status.json").write_text(json.dumps(status | {"versions": status["versions"] | {"format": "0"}}))
    for args in (["run", path, "--out", out], ["status", out / "tiny"]):
        result = run_cli(*args)
        assert result.exit_code == 2
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {run_dir / 'status.json'}: written in results format 0")


def test_missing_data_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    path = experiment(tmp_path, data={"dataset": "cifar10", "root": str(tmp_path / "nothing"), "download": False})
    out = tmp_path / "results"
    result = run_cli("run", path, "--out", out)
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: data.root: cifar10 is not there")
    assert "data.download: true" in line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = run_cli("run", experiment(tmp_path, train={"device": "cuda"}), "--out", out)
    assert result.exit_code == 2 and "train.device" in result.stderr and not out.exists()
