"""Ctrl-C and SIGTERM as a request to stop cleanly.

Inside ``catching()``, the first SIGINT or SIGTERM only records itself; the training loop looks
at ``requested()`` (a plain Python read, no device work) after each step, checkpoints and raises
``Interrupted``.  A second Ctrl-C raises ``KeyboardInterrupt`` at once, for the impatient.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

CAUGHT = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None


class Interrupted(Exception):
    """The run stopped because a signal asked it to; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> int | None:
    """The signal received since ``catching()`` began, if any."""
    return _requested


def raise_if_requested() -> None:
    if _requested is not None:
        raise Interrupted(_requested)


def _record(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt
    _requested = signum


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """Record SIGINT and SIGTERM instead of dying of them; restore the old handlers after."""
    global _requested
    _requested = None
    previous = {signum: signal.signal(signum, _record) for signum in CAUGHT}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested = None
