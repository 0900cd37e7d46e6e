"""A sweep survives what goes wrong: a run that diverges or fails (the others go on, one line says
where to look, the exit code tells), non-finite steps skipped on request, two processes on one
experiment (each run runs once), claims of dead processes taken over, and bad input refused in one
line before anything is written."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_sweeps import experiment, keeping_threads, run_cli, run_dirs, start

from pooling_lab.experiment import load_plan
from pooling_lab.results import RunFiles
from pooling_lab.run import claims
from pooling_lab.run.sweep import prepare, run_plan
from pooling_lab.train.loop import SilentProgress, Trainer
from pooling_lab.train.nonfinite import Diverged, NonFiniteWatch, guarded_step

SHORT = {"epochs": 1}


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def run_dir_of(out: Path, path: Path, index: int) -> Path:
    return out / "tiny" / load_plan(path).runs[index].dir_name


# --- divergence ------------------------------------------------------------------------------------


def test_a_diverging_run_keeps_its_trace_and_the_sweep_goes_on(tmp_path: Path) -> None:
    path = experiment(
        tmp_path, train=SHORT, record={"every_steps": 1},
        optim={"pool_params": {"clamp": None}},
        sweep={"grid": {"optim.pool_params.lr_mult": [1e6, 5.0]}},
    )
    out = tmp_path / "results"
    result = run_cli("run", path, "--out", out, "-q")

    assert result.exit_code == 1
    diverged, fine = run_dir_of(out, path, 0), run_dir_of(out, path, 1)
    status = status_of(diverged)
    assert status["status"] == "diverged" and status["error"].startswith("non-finite")
    assert f"{diverged.name}: diverged: non-finite" in result.stderr and str(diverged / "status.json") in result.stderr
    step, last = status["diverged_step"], status["last_finite"]["pool.p"]
    trace = pd.read_csv(diverged / "params.csv").set_index("step")["value"]
    assert trace[0] == 3.0 and math.isfinite(last)
    assert trace[step - 1] == last and not math.isfinite(trace[step])  # kept up to and past the step
    assert status_of(fine)["status"] == "done"

    again = run_cli("run", path, "--out", out, "-q")  # a diverged run is an outcome: not run again
    assert again.exit_code == 1 and f"{diverged.name}: already diverged" in again.stdout
    assert status_of(diverged)["attempts"] == 1


def test_skip_step_leaves_out_the_non_finite_updates(tmp_path: Path) -> None:
    plan = load_plan(experiment(tmp_path, train=SHORT | {"on_nonfinite": "skip_step"}))
    prepared = prepare(plan, tmp_path / "results")
    [spec] = plan.runs
    trainer = Trainer(spec, RunFiles(tmp_path / "run"), next(iter(prepared.data.values())), SilentProgress())
    loss, calls = trainer.model.head.loss, []

    def poisoned(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        value = loss(logits, labels)
        return value * math.nan if len(calls) in (3, 4, 9) else value

    trainer.model.head.loss = poisoned
    with keeping_threads():
        status = trainer.run()
    assert status["status"] == "done" and status["skipped_steps"] == 3
    assert math.isfinite(status["p_final"]) and math.isfinite(status["test_accuracy"])


def test_guarded_step_skips_exactly_like_leaving_the_step_out() -> None:
    """SGD with momentum and AdamW, a non-finite step first and in the middle: parameters and
    optimiser state end as if those steps had never been taken."""
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                 lambda ps: torch.optim.AdamW(ps, lr=0.01)):
        torch.manual_seed(0)
        guarded, plain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        plain.load_state_dict(guarded.state_dict())
        guarded_opt, plain_opt = make(guarded.parameters()), make(plain.parameters())
        inputs = torch.randn(5, 4, 3)
        for index, x in enumerate(inputs):
            bad = index in (0, 2)
            loss = guarded(x).square().mean() * (math.inf if bad else 1.0)
            guarded_opt.zero_grad()
            loss.backward()
            assert bool(guarded_step(guarded_opt, loss.detach())) is not bad
            if not bad:
                plain_opt.zero_grad()
                plain(x).square().mean().backward()
                plain_opt.step()
        for mine, theirs in zip(guarded.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_the_watch_names_the_first_non_finite_step_and_keeps_the_last_finite_values(tmp_path: Path) -> None:
    plan = load_plan(experiment(tmp_path))
    from pooling_lab.models import build_model

    model = build_model(plan.runs[0].config, in_channels=3, num_classes=4)
    watch = NonFiniteWatch(model, torch.device("cpu"))
    finite = torch.tensor(1.0)
    for step, p in enumerate([2.5, 2.25], start=1):
        model.pool.p.data.fill_(p)
        watch.observe(step, finite)
    watch.check()
    model.pool.p.data.fill_(2.0)
    watch.observe(3, torch.tensor(math.nan))
    model.pool.p.data.fill_(math.nan)
    watch.observe(4, finite)
    with pytest.raises(Diverged, match="non-finite loss at step 3") as caught:
        watch.check()
    assert caught.value.step == 3 and caught.value.last_finite == {"pool.p": 2.25}


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
