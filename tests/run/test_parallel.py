"""A --jobs worker reports a fault of the file system as the CLI does: one line, exit code 2."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from tiny_sweeps import experiment

from pooling_lab.run import parallel, sweep


def test_a_worker_reports_a_full_disk_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "results" / "tiny" / "run" / "metrics.csv"

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(metrics))

    monkeypatch.setattr(sweep, "run_plan", full_disk)
    job = parallel.new_job(experiment(tmp_path), tmp_path / "results", [], jobs=1, fail_fast=False)
    assert parallel.worker(job) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {metrics}: No space left on device"]
