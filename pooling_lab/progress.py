"""Terminal display of a sweep (rich): a bar for the sweep and one for the current run, one line
per run event (failures at once, on stderr), and the tables of ``run --dry-run``, the end of a
sweep and ``pooling-lab status``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pooling_lab.config import Plan, RunSpec
from pooling_lab.labels import format_value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class RichProgress:
    """A ``ProgressSink`` drawing a sweep bar and a per-run bar with epoch, loss, accuracy, p."""

    def __init__(self, console: Console, total_runs: int):
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
        )
        self.sweep = self.bars.add_task("sweep", total=total_runs, info="")
        self.run_task: Any = None
        self.epochs = 0

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def run_started(self, spec: RunSpec, total_steps: int, done_steps: int) -> None:
        self.epochs = spec.config.train.epochs
        if self.run_task is not None:
            self.bars.remove_task(self.run_task)
        self.run_task = self.bars.add_task(
            f"  {spec.dir_name}", total=total_steps, completed=done_steps, info="epoch 0"
        )

    def step(self) -> None:
        self.bars.advance(self.run_task)

    def epoch_done(self, row: dict[str, Any]) -> None:
        self.bars.update(self.run_task, info=epoch_line(row, self.epochs))

    def run_finished(self, spec: RunSpec, status: dict[str, Any]) -> None:
        self.bars.advance(self.sweep)

    def skipped(self) -> None:
        self.bars.advance(self.sweep)


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}  loss {_fmt(row['train_loss'])}  "
        f"acc {_fmt(row['train_accuracy'])}  val {_fmt(row['val_accuracy'])}  p {_fmt(row['p'])}"
    )


class EventLines:
    """Prints sweep events (``sweep.Event``) as lines: a failed or diverged run at once on
    ``errors`` with its error and where the details are; the others on ``console`` when ``lines``
    (quiet or parallel mode); each epoch's numbers when ``epochs``.  A run skipped as already
    finished advances the sweep bar of ``bars``, if any."""

    def __init__(self, console: Console, errors: Console, root: Path, lines: bool,
                 bars: RichProgress | None = None, epochs: bool = False):
        self.console, self.errors, self.root, self.bars = console, errors, root, bars
        self.lines, self.epochs = lines, epochs

    def __call__(self, kind: str, run: str, status: dict[str, Any]) -> None:
        if kind == "skipped" and self.bars is not None:
            self.bars.skipped()
        if kind in ("failed", "diverged"):
            where = self.root / run / (status.get("traceback") or "status.json")
            self.errors.print(f"[red]{escape(run)}: {kind}[/]: {escape(str(status.get('error', '')))} ({where})",
                              highlight=False, soft_wrap=True)
        elif self.lines:
            self.console.print(f"{run}: {self.describe(kind, status)}", markup=False, highlight=False, soft_wrap=True)

    def epoch(self, run: str, row: dict[str, Any], epochs: int) -> None:
        if self.epochs:
            self.console.print(f"{run}: {epoch_line(row, epochs)}", markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def describe(kind: str, status: dict[str, Any]) -> str:
        if kind == "skipped":
            return f"already {status.get('status')}"
        if kind == "busy":
            return f"being run by {status.get('held_by')}"
        if kind == "done":
            return f"done, p={_fmt(status.get('p_final'), 4)}, test accuracy={_fmt(status.get('test_accuracy'), 4)}"
        if kind == "interrupted":
            return f"interrupted at step {status.get('step')}, checkpointed"
        return kind


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
    table = Table(title="summary")
    for column in ["run", "status", "p final", "val acc", "test acc", "time (s)"]:
        table.add_column(column)
    for spec, status in zip(plan.runs, statuses, strict=True):
        table.add_row(
            spec.dir_name, status.get("status", "?"), _fmt(status.get("p_final")),
            _fmt(status.get("val_accuracy"), 4), _fmt(status.get("test_accuracy"), 4),
            _fmt(status.get("wall_time_s"), 1),
        )
    return table


def status_table(title: str, rows: list[dict[str, Any]]) -> Table:
    """``pooling-lab status``: each run's state, progress, final p and accuracy (the run's name
    holds its swept values and seed); the errors follow as ``error_lines``."""
    table = Table(title=title)
    table.add_column("run", overflow="fold")
    for column in ["state", "epoch", "step", "p", "test acc", "tries"]:
        table.add_column(column, no_wrap=True, min_width=len(column))
    for row in rows:
        table.add_row(
            row["run"], row["state"] + (f" ({row['held_by']})" if row.get("held_by") else ""),
            _progress(row.get("epoch"), row.get("epochs")), _progress(row.get("step"), row.get("total_steps")),
            _fmt(row.get("p_final"), 4), _fmt(row.get("test_accuracy"), 4), _fmt(row.get("attempts")),
        )
    return table


def error_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run with an error: run, state, error and where the traceback is."""
    return [
        f"{row['run']}: {row['state']}: {row['error']}" + (f" ({row['traceback']})" if row.get("traceback") else "")
        for row in rows if row.get("error")
    ]


def _progress(done: Any, total: Any) -> str:
    return "-" if done is None else f"{done}/{total if total is not None else '?'}"
