"""Several processes on one experiment: each run runs once (claims, --jobs workers), claims of
dead processes are taken over, a heartbeat keeps a live claim fresh."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_sweeps import experiment, run_cli, start, status_of

from pooling_lab.experiment import load_plan
from pooling_lab.results import RunFiles, remove_partial_writes
from pooling_lab.run import claims

SHORT = {"epochs": 1}





# --- several processes ------------------------------------------------------------------------------


def test_two_processes_on_one_experiment_run_each_run_once(tmp_path: Path) -> None:
    path = experiment(tmp_path, train={"epochs": 2, "threads": 1}, sweep={"grid": {"optim.lr": [0.05, 0.1]}, "seeds": [0, 1]})
    out = tmp_path / "results"
    processes = [start("run", path, "--out", out, "-q") for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    stdout = "".join(stdout for stdout, _ in outputs)
    for spec in load_plan(path).runs:
        run_dir = out / "tiny" / spec.dir_name
        assert status_of(run_dir)["status"] == "done" and status_of(run_dir)["attempts"] == 1
        assert stdout.count(f"{spec.dir_name}: started") == 1 and stdout.count(f"{spec.dir_name}: done") == 1
        assert not list(run_dir.glob("claim.*"))


def test_jobs_runs_the_runs_in_worker_processes(tmp_path: Path) -> None:
    path = experiment(tmp_path, train=SHORT, sweep={"grid": {"optim.lr": [0.05, 0.1]}, "seeds": [0, 1]})
    out = tmp_path / "results"
    result = run_cli("run", path, "--out", out, "--jobs", "2")

    assert result.exit_code == 0, result.output
    assert "being run by" not in result.output and "already" not in result.output  # siblings are not news
    for spec in load_plan(path).runs:
        status = status_of(out / "tiny" / spec.dir_name)
        assert status["status"] == "done" and status["attempts"] == 1 and status["pid"] != os.getpid()
        assert result.output.count(f"{spec.dir_name}: done") == 1


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    ("host", "alive", "silent_s", "live"),
    [
        (claims.HOST, True, 0, True),
        (claims.HOST, False, 0, False),  # its process died
        ("elsewhere", True, 10, True),
        ("elsewhere", True, claims.STALE_AFTER_S + 1, False),  # its heartbeat stopped
    ],
)
def test_a_claim_is_respected_while_live_and_taken_over_when_stale(
    tmp_path: Path, host: str, alive: bool, silent_s: float, live: bool
) -> None:
    old = tmp_path / "claim.4.json"
    pid = os.getppid() if alive else dead_pid()
    old.write_text(json.dumps({"host": host, "pid": pid, "token": "x", "heartbeat": time.time() - silent_s}))
    claim = claims.try_claim(tmp_path)
    assert (claim is None) is live
    assert (claims.holder(tmp_path) is not None) is live
    if not live:
        assert claim.path.name == "claim.5.json" and not old.exists()
        claim.release()
        assert not list(tmp_path.glob("claim.*"))


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "HEARTBEAT_S", 0.02)
    claim = claims.try_claim(tmp_path)
    first = claim.owner["heartbeat"]
    with claim:
        time.sleep(0.2)
        assert json.loads(claim.path.read_text())["heartbeat"] > first
    assert not claim.path.exists()


def _claim_in_child(run_dir: str, ready, done, results) -> None:  # noqa: ANN001
    ready.wait()
    results.put(claims.try_claim(Path(run_dir)) is not None)
    done.wait()  # stay alive, so that no sibling sees a dead owner


def test_only_one_of_many_racing_processes_gets_a_claim(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    count = 6
    ready, done, results = context.Barrier(count), context.Barrier(count), context.Queue()
    children = [context.Process(target=_claim_in_child, args=(str(tmp_path), ready, done, results)) for _ in range(count)]
    for child in children:
        child.start()
    won = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert sum(won) == 1 and len(list(tmp_path.glob("claim.*.json"))) == 1


def test_the_owner_cleaning_its_run_folder_spares_a_rival_claim_in_the_making(tmp_path: Path) -> None:
    """A process that lost the race for ``claim.0.json`` may still be between writing its
    temporary file and linking it; the winner's clean-up must not pull that file away (it did,
    and the loser failed with "claim.0.json: No such file or directory")."""
    rival = tmp_path / ".claim.0.json.0123456789ab.tmp"
    cut_short = tmp_path / ".status.json.0123456789ab.tmp"
    for leftover in (rival, cut_short):
        leftover.write_text("{}")
    remove_partial_writes(RunFiles(tmp_path))
    assert rival.exists() and not cut_short.exists()
