"""What a person sees of a sweep: lines for a log and live bars on a terminal while it runs
(``SweepDisplay``), and the tables of ``run --dry-run``, the end of a sweep and
``pooling-lab status``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from pooling_lab.experiment import Plan, RunSpec
from pooling_lab.experiment.labels import format_value

RUN_ENDS = ("done", "failed", "diverged", "skipped")  # sweep events that settle a run


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class Bars:
    """Live bars on a terminal: one for the sweep (runs) and one per run in training (steps),
    each with the time elapsed, the ETA and the epoch in training.  The run's numbers are not on
    its row (at 80 columns they would push the bar off it): they are ``SweepDisplay``'s lines."""

    def __init__(self, console: Console, total_runs: int):
        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10)),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[epoch]}"),
            console=console, expand=True, redirect_stdout=False,  # stdout may be a log
        )
        self.sweep = self.progress.add_task("sweep", total=total_runs, epoch="")
        self.runs: dict[str, TaskID] = {}
        self.epochs: dict[str, int] = {}

    def run_started(self, run: str, total_steps: int, done_steps: int, epochs: int) -> None:
        self.epochs[run] = epochs
        in_training = done_steps * epochs // max(total_steps, 1)
        self.runs[run] = self.progress.add_task(f"  {run}", total=total_steps, completed=done_steps,
                                                epoch=self._epoch(run, in_training))
        self.progress.refresh()

    def update(self, run: str, completed: int) -> None:
        if run in self.runs:
            self.progress.update(self.runs[run], completed=completed)

    def epoch(self, run: str, row: dict[str, Any]) -> None:
        if run in self.runs:
            self.progress.update(self.runs[run], completed=row["step"], epoch=self._epoch(run, row["epoch"]))
            self.progress.refresh()

    def run_finished(self, run: str) -> None:
        if run in self.runs:
            self.progress.remove_task(self.runs.pop(run))
            self.progress.refresh()

    def run_ended(self) -> None:
        self.progress.advance(self.sweep)

    def _epoch(self, run: str, finished: int) -> str:
        """The epoch in training, after ``finished`` epochs."""
        return f"epoch {min(finished + 1, self.epochs[run])}/{self.epochs[run]}"


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  loss {_fmt(row['train_loss'])}  "
        f"acc {_fmt(row['train_accuracy'])}  val {_fmt(row['val_accuracy'])}  p {_fmt(row['p'])}"
    )


class SweepDisplay:
    """What a person sees of a sweep, fed by the runs (``run_started``, ``update``, ``epoch``,
    ``run_finished``: see ``TrainerProgress``) and by the sweep's events (``sweep.Event``).

    Lines go to ``out``, one per run start (or resume, with its step), per epoch and per run end,
    printed as they happen, so a log fills while the runs go; a failed or diverged run is one line
    on ``errors`` with where the details are.  When ``errors`` is a terminal (one that can redraw
    a line), ``Bars`` are drawn there too, and the lines are printed above them when ``out`` is
    that terminal as well.
    ``quiet``: no bars and no epoch lines, only the runs' starts and ends and the failures.
    """

    def __init__(self, out: Console, errors: Console, root: Path, total_runs: int, quiet: bool = False):
        self.errors, self.root, self.quiet = errors, root, quiet
        drawable = errors.is_terminal and not errors.is_dumb_terminal
        self.bars = Bars(errors, total_runs) if drawable and not quiet else None
        self.out = errors if self.bars and out.is_terminal else out
        self.epochs: dict[str, int] = {}

    def __enter__(self) -> SweepDisplay:
        if self.bars:
            self.bars.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars:
            self.bars.progress.stop()

    def run_started(self, run: str, total_steps: int, done_steps: int, epochs: int) -> None:
        self.epochs[run] = epochs
        self._line(run, f"resumed from step {done_steps} of {total_steps}" if done_steps
                   else f"started ({total_steps} steps)")
        if self.bars:
            self.bars.run_started(run, total_steps, done_steps, epochs)

    def update(self, run: str, completed: int) -> None:
        if self.bars:
            self.bars.update(run, completed)

    def epoch(self, run: str, row: dict[str, Any]) -> None:
        if not self.quiet:
            self._line(run, epoch_line(row, self.epochs.get(run, 0)))
        if self.bars:
            self.bars.epoch(run, row)

    def run_finished(self, run: str) -> None:
        if self.bars:
            self.bars.run_finished(run)

    def __call__(self, kind: str, run: str, status: dict[str, Any]) -> None:
        """A ``sweep.Event``; its ``started`` is left to ``run_started``, which knows the step."""
        if kind in ("failed", "diverged"):
            where = self.root / run / (status.get("traceback") or "status.json")
            self.errors.print(f"[red]{escape(run)}: {kind}[/]: {escape(str(status.get('error', '')))} ({where})",
                              highlight=False, soft_wrap=True)
        elif kind != "started":
            self._line(run, self.describe(kind, status))
        if self.bars and kind in RUN_ENDS:
            self.bars.run_ended()

    def _line(self, run: str, text: str) -> None:
        self.out.print(f"{run}: {text}", markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def describe(kind: str, status: dict[str, Any]) -> str:
        if kind == "skipped":
            return f"already {status.get('status')}"
        if kind == "busy":
            return f"being run by {status.get('held_by')}"
        if kind == "done":
            flagged = "".join(f"; flagged: {flag}" for flag in status.get("flags") or [])
            return f"done, p={_fmt(status.get('p_final'), 4)}, test accuracy={_fmt(status.get('test_accuracy'), 4)}{flagged}"
        if kind == "interrupted":
            return f"interrupted at step {status.get('step')}, checkpointed"
        return kind


class TrainerProgress:
    """The ``ProgressSink`` of a run trained in this process: tells ``display`` (a
    ``SweepDisplay``, or a worker's ``parallel.JsonLines``) by the run's name."""

    def __init__(self, display: Any):
        self.display, self.run, self.done = display, "", 0

    def run_started(self, spec: RunSpec, total_steps: int, done_steps: int) -> None:
        self.run, self.done = spec.dir_name, done_steps
        self.display.run_started(self.run, total_steps, done_steps, spec.config.train.epochs)

    def step(self) -> None:
        self.done += 1
        self.display.update(self.run, self.done)

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.display.epoch(self.run, row)

    def run_finished(self, spec: RunSpec, status: dict[str, Any]) -> None:
        self.display.run_finished(self.run)


def plan_table(plan: Plan, states: dict[str, str]) -> Table:
    table = Table(title=f"{plan.experiment.name}: {len(plan.runs)} runs")
    for column in ["#", "run", *plan.swept_keys, "seed", "run id", "status"]:
        table.add_column(column)
    for index, spec in enumerate(plan.runs):
        swept = [format_value(spec.swept[key]) for key in plan.swept_keys]
        table.add_row(str(index), spec.dir_name, *swept, str(spec.config.train.seed), spec.run_id,
                      states.get(spec.run_id, "pending"))
    return table


def summary_table(plan: Plan, statuses: list[dict[str, Any]]) -> Table:
    """The end of ``pooling-lab run``: each run's outcome, with a ``flags`` column when some run
    is flagged (``evaluate.run_flags``)."""
    flagged = any(status.get("flags") for status in statuses)
    table = Table(title="summary")
    for column in ["run", "status", "p final", "val acc", "test acc", "time (s)", *(["flags"] if flagged else [])]:
        table.add_column(column)
    for spec, status in zip(plan.runs, statuses, strict=True):
        table.add_row(
            spec.dir_name, status.get("status", "?"), _fmt(status.get("p_final")),
            _fmt(status.get("val_accuracy"), 4), _fmt(status.get("test_accuracy"), 4),
            _fmt(status.get("wall_time_s"), 1), *([flag_names(status.get("flags"))] if flagged else []),
        )
    return table


def status_table(title: str, rows: list[dict[str, Any]]) -> Table:
    """``pooling-lab status``: each run's state, progress, final p and accuracy (the run's name
    holds its swept values and seed); the errors and flags follow as ``error_lines``.  A
    flagged run's state is starred (a flags column would squeeze the run names)."""
    caption = "* flagged: see below" if any(row.get("flags") for row in rows) else None
    table = Table(title=title, caption=caption)
    table.add_column("run", overflow="fold")
    for column in ["state", "epoch", "step", "p", "test acc", "tries"]:
        table.add_column(column, no_wrap=True, min_width=len(column))
    for row in rows:
        state = row["state"] + ("*" if row.get("flags") else "") + (f" ({row['held_by']})" if row.get("held_by") else "")
        table.add_row(
            row["run"], state,
            _progress(row.get("epoch"), row.get("epochs")), _progress(row.get("step"), row.get("total_steps")),
            _fmt(row.get("p_final"), 4), _fmt(row.get("test_accuracy"), 4), _fmt(row.get("attempts")),
        )
    return table


def flag_names(flags: list[str] | None) -> str:
    """A run's flags (``evaluate.run_flags``) by name: ``chance accuracy, p out of range``."""
    return ", ".join(flag.split(":", 1)[0] for flag in flags or []) or "-"


def error_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run with an error: run, state, error and where the traceback is; then one
    line per flag of a run."""
    return [
        f"{row['run']}: {row['state']}: {row['error']}" + (f" ({row['traceback']})" if row.get("traceback") else "")
        for row in rows if row.get("error")
    ] + [f"{row['run']}: flagged: {flag}" for row in rows for flag in row.get("flags") or []]


def _progress(done: Any, total: Any) -> str:
    return "-" if done is None else f"{done}/{total if total is not None else '?'}"
