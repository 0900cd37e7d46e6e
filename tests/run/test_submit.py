"""`pooling-lab submit` through submitit's LocalExecutor (real task processes, no Slurm): tasks
divide the runs, a time-limit signal checkpoints the run and requeues its task, which resumes;
bad input is refused before anything is submitted."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from tiny_sweeps import experiment, frames, run_cli, run_dir_of, run_dirs, status_of

import pooling_lab.run
from pooling_lab.run import submit as cluster

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)  # in /proc/<pid>/status signal masks


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def only_child(pid: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if found := children(pid):
            [child] = found
            return child
        time.sleep(0.01)
    raise AssertionError(f"process {pid} started no child within a minute")


def pending_signals(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within two minutes"
        time.sleep(0.003)


def test_two_local_tasks_train_every_run_exactly_once(tmp_path: Path) -> None:
    path = experiment(tmp_path, sweep={"seeds": [0, 1, 2]})
    out = tmp_path / "results"
    result = run_cli("submit", path, "--executor", "local", "--array", "2", "--out", out, "--wait")
    assert result.exit_code == 0, result.output
    runs = run_dirs(out / "tiny")
    assert len(runs) == 3
    for run in runs:
        assert (status_of(run)["status"], status_of(run)["attempts"]) == ("done", 1)
        params, metrics = frames(run)
        assert not params.duplicated(["step", "module", "param", "stat"]).any()
        assert metrics["epoch"].tolist() == [1, 2, 3]
    logs = sorted((out / "tiny" / "submitit").glob("*_log.out"))
    assert len(logs) == 2 and all("Job completed successfully" in log.read_text() for log in logs)
    table = pd.read_csv(out / "tiny" / "runs.csv")
    assert table["status"].tolist() == ["done"] * 3


def test_a_time_limit_signal_checkpoints_the_run_and_requeues_the_task(tmp_path: Path) -> None:
    path = experiment(tmp_path, train={"epochs": 10})
    out = tmp_path / "results"
    # the test sends the signal that the job's controller sends 30 s before the 5-minute limit
    submitted = cluster.submit(path, out, [], "local", 1, cluster.Resources(time_min=5))
    [job] = submitted.jobs
    task = only_child(int(job.job_id))  # the job's controller starts the task
    run = only_child(task)  # which starts `pooling-lab run`
    checkpoint = run_dir_of(out, path, 0) / "checkpoint.pt"
    wait_for(checkpoint.exists, "checkpoint")
    os.kill(run, signal.SIGSTOP)  # mid-training, so that the signal cannot come after the end
    # as Slurm does near the time limit: the signal reaches every process of the job step
    os.kill(run, cluster.requeue_signal())
    os.kill(task, cluster.requeue_signal())
    wait_for(lambda: pending_signals(run) & SIGTERM_BIT, "SIGTERM from the task")
    os.kill(run, signal.SIGCONT)
    assert job.result() == 0
    run_dir = run_dir_of(out, path, 0)
    assert (status_of(run_dir)["status"], status_of(run_dir)["attempts"]) == ("done", 2)
    [log] = (out / "tiny" / "submitit").glob("*_log.err")
    assert "this job is timed-out" in log.read_text()
    assert "interrupted by SIGTERM: checkpointed" in log.read_text()  # not killed by the signal itself
    assert "resumed from step" in log.with_suffix(".out").read_text()
    assert run_cli("run", path, "--out", tmp_path / "straight").exit_code == 0
    for resumed, straight in zip(frames(run_dir), frames(run_dir_of(tmp_path / "straight", path, 0)), strict=True):
        pd.testing.assert_frame_equal(resumed, straight)


def test_waiting_names_a_task_whose_run_ended_badly(tmp_path: Path) -> None:
    path = experiment(tmp_path)
    submitted = cluster.submit(path, tmp_path / "results", [], "local", 1, cluster.Resources())
    path.unlink()  # before the task reads it
    statuses, failures = cluster.wait(submitted)
    [job] = submitted.jobs
    assert failures == [f"task {job.job_id}: pooling-lab run exited with code 2: see {job.paths.stderr}"]
    assert job.paths.stderr.read_text().splitlines()[-1].startswith(f"error: {path}: ")
    assert [status["status"] for status in statuses] == ["pending"]


def test_without_submitit_one_line_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now fails
    monkeypatch.delitem(sys.modules, "pooling_lab.run.submit")
    monkeypatch.delattr(pooling_lab.run, "submit")
    result = run_cli("submit", experiment(tmp_path), "--executor", "local", "--out", tmp_path / "results")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ["error: pooling-lab submit needs submitit: pip install pooling-lab[slurm]"]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("options", "expected"), [
    (("--set", "train.epochs=0"), r"error: \S+tiny\.yaml:\d+: train\.epochs: Input should be greater than or equal to 1 \(got 0\)"),
    (("--set", "data.dataset=mnist", "--set", "data.root=nothing", "--set", "data.download=false"),
     r"error: \S+tiny\.yaml: data\.root: mnist is not there: .*"),  # found by the checks of `run` on the data
    (("--partition", "gpu"), r"error: --partition: only with --executor slurm"),
    (("--executor", "slurm"), r"error: --time: give each task's time limit in minutes \(with --executor slurm\)"),
    (("--executor", "pbs"), r"error: --executor: 'pbs' is not one of slurm, local"),
])
def test_bad_input_is_refused_before_anything_is_submitted(tmp_path: Path, options: tuple[str, ...],
                                                           expected: str) -> None:
    out = tmp_path / "results"
    executor = () if "--executor" in options else ("--executor", "local")
    result = run_cli("submit", experiment(tmp_path), *executor, "--array", "2", "--out", out, *options)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert re.fullmatch(expected, line), line
    assert not out.exists()


def test_slurm_options_reach_the_sbatch_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/sbatch.sh\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = experiment(tmp_path)
    result = run_cli("submit", path, "--executor", "slurm", "--array", "3", "--out", tmp_path / "results",
                     "--time", "120", "--signal-delay", "300", "--partition", "gpu", "--gpus-per-task", "1",
                     "--cpus-per-task", "8", "--mem", "32", "--account", "lab")
    assert result.exit_code == 0, result.output
    assert "submitted 3 task(s): 4242_0, 4242_1, 4242_2" in result.stdout
    sbatch = set((tmp_path / "sbatch.sh").read_text().splitlines())
    assert {"#SBATCH --array=0-2%3", "#SBATCH --time=120", "#SBATCH --signal=USR2@300", "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --account=lab",
            "#SBATCH --job-name=tiny"} <= sbatch
