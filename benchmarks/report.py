"""Printing a benchmark's rows as an aligned table, and its command line."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).rjust(w) for c, w in zip(columns, widths, strict=True)))


def main_for(run: Callable[[bool], list[dict]]) -> None:
    """A benchmark module's command line: ``python -m benchmarks.NAME [--quick]``."""
    rows = run("--quick" in sys.argv[1:])
    if rows:
        print_table(rows)


def interleaved_medians(contenders: dict[str, Callable[[], float]], warmup: int, repeats: int) -> dict[str, float]:
    """The median of each contender's times over ``repeats`` rounds after ``warmup`` rounds, the
    contenders taking turns within a round, so that a busy machine slows them all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(warmup + repeats):
        for name, time_one in contenders.items():
            elapsed = time_one()
            if repeat >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}
