"""``pooling-lab run --jobs N``: N worker processes train one plan at once.

Each worker is ``python -m pooling_lab.run.parallel JOB`` and runs the ordinary sweep, so the workers
divide the runs through the claim files exactly as separate ``pooling-lab run`` processes do.
Each gets ``cores // N`` CPU threads, or one GPU when several are visible.  Workers report their
runs' progress and the sweep's events as JSON lines on stdout; the parent shows them (a line or a
bar per run) and forwards SIGINT / SIGTERM (the workers run in their own sessions, so a Ctrl-C
reaches them once, through the parent).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from pooling_lab.errors import UserError, file_system_fault
from pooling_lab.run import signals
from pooling_lab.run.claims import HOST
from pooling_lab.run.progress import SweepDisplay, TrainerProgress
from pooling_lab.run.sweep import UNSUCCESSFUL

POLL_S = 0.2
UPDATE_S = 0.5  # a worker reports a run's step count at most this often
DISPLAY_CALLS = ("run_started", "update", "epoch", "run_finished")  # SweepDisplay's, by name


@dataclass(frozen=True)
class Job:
    """What a worker needs to rebuild the plan and its share of the machine."""

    experiment: str
    out: str
    overrides: list[str] = field(default_factory=list)
    threads: int = 1
    fail_fast: bool = False
    session: str = ""


def run_parallel(job: Job, jobs: int, report: SweepDisplay) -> int | None:
    """Run ``jobs`` workers to the end; return the signal that stopped them, if one did."""
    gpus = _visible_gpus()
    workers = []
    for index in range(jobs):
        env = dict(os.environ)
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "pooling_lab.run.parallel", json.dumps(asdict(job))],
            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
        ))
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    for worker in workers:
        threading.Thread(target=_read_lines, args=(worker.stdout, events), daemon=True).start()
    siblings = {f"{HOST}:{worker.pid}" for worker in workers}
    told: set[str] = set()  # runs the user has heard of; a sibling's run is not news to them
    stopped_by: int | None = None
    open_streams = len(workers)
    while open_streams:
        for worker in workers:
            worker.poll()  # reap a worker that died, so its claims are seen to be dead
        signum = signals.requested()
        if signum is not None and stopped_by is None:
            stopped_by = signum
            _send(workers, signum)
        try:
            event = events.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if event is None:
            open_streams -= 1
        elif event["kind"] in DISPLAY_CALLS:
            getattr(report, event.pop("kind"))(**event)
        elif event["kind"] in ("skipped", "busy"):
            if event["run"] not in told and event["status"].get("held_by") not in siblings:
                report(event["kind"], event["run"], event["status"])
            told.add(event["run"])
        else:
            told.add(event["run"])
            report(event["kind"], event["run"], event["status"])
            if job.fail_fast and event["kind"] in UNSUCCESSFUL:
                _send(workers, signal.SIGTERM)
    for worker in workers:
        worker.wait()
    return stopped_by


def _visible_gpus() -> list[str]:
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return listed.split(",")[:count] if listed else [str(index) for index in range(count)]


def _read_lines(stream: IO[str], events: queue.Queue) -> None:
    for line in stream:
        events.put(json.loads(line))
    events.put(None)


def _send(workers: list[subprocess.Popen], signum: int) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signum)


# --- the worker ------------------------------------------------------------------------------------


class JsonLines:
    """A worker's ``SweepDisplay``: each call, and each ``sweep.Event``, as one JSON line on
    stdout for the parent to show; a run's step count at most every ``UPDATE_S``."""

    def __init__(self) -> None:
        self.last_update = 0.0

    def emit(self, **event: Any) -> None:
        print(json.dumps(event, default=str), flush=True)

    def __call__(self, kind: str, run: str, status: dict[str, Any]) -> None:
        self.emit(kind=kind, run=run, status=status)

    def run_started(self, run: str, total_steps: int, done_steps: int, epochs: int) -> None:
        self.emit(kind="run_started", run=run, total_steps=total_steps, done_steps=done_steps, epochs=epochs)

    def update(self, run: str, completed: int) -> None:
        now = time.monotonic()
        if now - self.last_update >= UPDATE_S:
            self.last_update = now
            self.emit(kind="update", run=run, completed=completed)

    def epoch(self, run: str, row: dict[str, Any]) -> None:
        self.emit(kind="epoch", run=run, row=row)

    def run_finished(self, run: str) -> None:
        self.emit(kind="run_finished", run=run)


def worker(job: Job) -> int:
    import torch

    from pooling_lab.experiment import load_plan
    from pooling_lab.run.sweep import prepare, run_plan

    torch.set_num_threads(job.threads)
    lines = JsonLines()
    with signals.catching():
        try:
            prepared = prepare(load_plan(job.experiment, job.overrides), Path(job.out))
            run_plan(prepared, progress=TrainerProgress(lines), on_event=lines, fail_fast=job.fail_fast,
                     session=job.session)
        except signals.Interrupted as error:
            return error.exit_code
        except (UserError, OSError) as error:
            fault = error if isinstance(error, UserError) else file_system_fault(error)
            print(f"error: {fault.one_line()}", file=sys.stderr)
            return fault.exit_code
    return 0


def new_job(experiment: Path, out: Path, overrides: list[str], jobs: int, fail_fast: bool) -> Job:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return Job(str(experiment), str(out), list(overrides), threads, fail_fast, uuid.uuid4().hex)


if __name__ == "__main__":
    sys.exit(worker(Job(**json.loads(sys.argv[1]))))
