"""Printing a benchmark's rows as an aligned table, and its command line."""

from __future__ import annotations

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
