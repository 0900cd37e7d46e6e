"""``pooling-lab submit``: a sweep as K tasks on a Slurm cluster (a job array) or on this machine,
through submitit (the ``slurm`` extra).

Every task runs ``pooling-lab run`` on the same results folder, whose claim files (``claims``)
divide the runs between the tasks.  Near its time limit, or when preempted, submitit signals the
task (SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` names another); the task then stops its
``pooling-lab run`` with SIGTERM, which checkpoints and exits (``signals``), and submitit requeues
the task, whose new ``pooling-lab run`` resumes the interrupted run from that checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from pooling_lab.errors import UserError
from pooling_lab.experiment import load_plan
from pooling_lab.run.sweep import Prepared, final_statuses, prepare

LOG_FOLDER = "submitit"  # under the experiment's results folder
EXECUTORS = ("slurm", "local")
NO_TIME_LIMIT_MIN = 60 * 24 * 365  # a local task without --time


class SweepTask(submitit.helpers.Checkpointable):
    """One task: ``pooling-lab run EXPERIMENT --out OUT --set ...`` as a child process started in
    ``cwd`` (where the command was submitted); its result is that process's exit code."""

    def __init__(self, experiment: Path, out: Path, overrides: list[str], cwd: Path):
        self.experiment = experiment
        self.out = out
        self.overrides = list(overrides)
        self.cwd = cwd
        self._child: subprocess.Popen | None = None

    def command(self) -> list[str]:
        sets = [arg for override in self.overrides for arg in ("--set", override)]
        return [sys.executable, "-m", "pooling_lab", "run", str(self.experiment), "--out", str(self.out), *sets]

    def __call__(self) -> int:
        self._child = _start_shielded(self.command(), self.cwd, requeue_signal())
        return self._child.wait()

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit in this task when the time-limit or preemption signal arrives: stop
        the run (it checkpoints on SIGTERM) and wait for it, then requeue this task as it is."""
        if self._child is not None:
            self._child.send_signal(signal.SIGTERM)
            _reap(self._child.pid)
        return super().checkpoint()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_child": None}


def requeue_signal() -> signal.Signals:
    """The signal submitit sends a task near its time limit or on preemption."""
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


def _start_shielded(command: list[str], cwd: Path, shielded: signal.Signals) -> subprocess.Popen:
    """Start ``command`` with ``shielded`` blocked: Slurm sends the time-limit signal to every
    process of the job step, and its default action would kill ``pooling-lab run`` before its
    task asks it to checkpoint.  (A child inherits the signal mask.)"""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {shielded})
    try:
        return subprocess.Popen(command, cwd=cwd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _reap(pid: int) -> None:
    """Wait for a child to end.  ``os.waitpid``, not ``Popen.wait``: this runs in a signal handler
    that may have interrupted ``Popen.wait``, which holds a lock ``Popen.wait`` takes again."""
    with contextlib.suppress(ChildProcessError):  # already reaped
        os.waitpid(pid, 0)


@dataclass(frozen=True)
class Resources:
    """What each task asks for; None leaves it to the executor (or to the cluster)."""

    time_min: int | None = None
    signal_delay_s: int | None = None
    gpus_per_task: int | None = None
    partition: str | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    account: str | None = None


SLURM_ONLY = {"partition": "--partition", "cpus_per_task": "--cpus-per-task", "mem_gb": "--mem",
              "account": "--account"}


def executor_parameters(executor: str, resources: Resources, job_name: str) -> dict[str, Any]:
    """submitit's parameters for ``executor`` (slurm: sbatch options; local: time limit, signal
    delay and GPUs); an option the local executor cannot honour is refused."""
    if executor not in EXECUTORS:
        raise UserError(f"{executor!r} is not one of {', '.join(EXECUTORS)}", field="--executor")
    given = {key: value for key, value in asdict(resources).items() if value is not None}
    if executor == "slurm":
        if resources.time_min is None:  # submitit would ask for 5 minutes
            raise UserError("give each task's time limit in minutes (with --executor slurm)", field="--time")
        names = {"time_min": "time", "mem_gb": "mem"}
        parameters = {names.get(key, key): value for key, value in given.items()}
        if "mem" in parameters:
            parameters["mem"] = f"{parameters['mem']}G"  # sbatch reads a bare number as megabytes
        return {"job_name": job_name} | parameters
    unsupported = [option for key, option in SLURM_ONLY.items() if key in given]
    if unsupported:
        raise UserError("only with --executor slurm", field=unsupported[0])
    names = {"time_min": "timeout_min", "gpus_per_task": "gpus_per_node"}
    return {"timeout_min": NO_TIME_LIMIT_MIN} | {names.get(key, key): value for key, value in given.items()}


def make_executor(executor: str, folder: Path, parameters: dict[str, Any]) -> submitit.Executor:
    """The executor, its parameters checked (submitit's own message, first line: where no
    Slurm is found, say)."""
    try:
        made = submitit.SlurmExecutor(folder) if executor == "slurm" else submitit.LocalExecutor(folder)
        made.update_parameters(**parameters)
    except (RuntimeError, ValueError) as error:
        raise UserError(str(error).splitlines()[0], field=f"--executor {executor}") from None
    return made


@dataclass(frozen=True)
class Submitted:
    prepared: Prepared
    jobs: list[submitit.Job]

    @property
    def log_folder(self) -> Path:
        return self.prepared.root / LOG_FOLDER


def submit(
    experiment: Path, out: Path, overrides: list[str], executor: str, tasks: int, resources: Resources
) -> Submitted:
    """Check the plan and its results folder as ``pooling-lab run`` does, then submit ``tasks``
    tasks that each run it; nothing is submitted when a check fails."""
    plan = load_plan(experiment, overrides)
    parameters = executor_parameters(executor, resources, plan.experiment.name)
    prepared = prepare(plan, out)
    made = make_executor(executor, prepared.root / LOG_FOLDER, parameters)
    task = SweepTask(experiment.resolve(), Path(out).resolve(), overrides, Path.cwd())
    return Submitted(prepared, made.submit_array([task] * tasks))


def wait(submitted: Submitted) -> tuple[list[dict[str, Any]], list[str]]:
    """Wait for every task; every run's final status, and one line per task that failed or whose
    ``pooling-lab run`` did not end with exit code 0."""
    failures = []
    for job in submitted.jobs:
        job.wait()
        if job.exception() is not None:
            failures.append(f"task {job.job_id} failed: see {job.paths.stderr}")
        elif (code := job.result()) != 0:
            failures.append(f"task {job.job_id}: pooling-lab run exited with code {code}: see {job.paths.stderr}")
    return final_statuses(submitted.prepared), failures
