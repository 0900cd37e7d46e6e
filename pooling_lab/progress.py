"""Live terminal display of a sweep (rich): one bar for the sweep, one for the current run."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pooling_lab.config import Plan, RunSpec


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
        info = (
            f"epoch {row['epoch']}/{self.epochs}  loss {_fmt(row['train_loss'])}  "
            f"acc {_fmt(row['train_accuracy'])}  val {_fmt(row['val_accuracy'])}  p {_fmt(row['p'])}"
        )
        self.bars.update(self.run_task, info=info)

    def run_finished(self, spec: RunSpec, status: dict[str, Any]) -> None:
        self.bars.advance(self.sweep)

    def skipped(self) -> None:
        self.bars.advance(self.sweep)


def plan_table(plan: Plan, states: dict[str, str]) -> Table:
    table = Table(title=f"{plan.experiment.name}: {len(plan.runs)} runs")
    for column in ["#", "run", *plan.swept_keys, "seed", "run id", "status"]:
        table.add_column(column)
    for index, spec in enumerate(plan.runs):
        swept = [_fmt(spec.swept[key]) for key in plan.swept_keys]
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
