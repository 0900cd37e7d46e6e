"""Claim files: which process is running a run, so that processes sharing a results directory
(on one machine or on several that mount it) divide the runs and never run one twice.

A claim is ``<run>/claim.<n>.json`` holding host, pid, a random token, the start time and a
heartbeat that a background thread refreshes every ``HEARTBEAT_S`` seconds.  The claim with the
highest ``n`` is the current one.  It is created whole and exclusively (``atomic.create_text``),
so two processes can never both create generation ``n``.  A claim is stale when its process is
gone (same host, pid not alive) or its heartbeat is older than ``STALE_AFTER_S``; a stale claim
is taken over by creating generation ``n + 1``, which again only one process can do.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pooling_lab import atomic

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
HOST = socket.gethostname()
_NAME = re.compile(r"^claim\.(\d+)\.json$")


def _generations(run_dir: Path) -> list[tuple[int, Path]]:
    """The claim files of a run directory, lowest generation first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in run_dir.iterdir() if (m := _NAME.match(path.name))]
    return sorted(found)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it takes signals, and is not a zombie (a process that died,
    of SIGKILL say, answers until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc on this system
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # the state follows the parenthesised name


def is_live(owner: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether the process that wrote ``owner`` still holds it.  A claim naming this very process
    is a leftover of an earlier process that had the same pid, so it is not live."""
    if owner is None:
        return False
    pid = owner.get("pid")
    if owner.get("host") == HOST and (pid == os.getpid() or not (isinstance(pid, int) and pid > 0 and _pid_alive(pid))):
        return False
    return (now or time.time()) - float(owner.get("heartbeat", 0.0)) < STALE_AFTER_S


def holder(run_dir: Path) -> dict[str, Any] | None:
    """The live owner of a run, or None when nobody holds it."""
    generations = _generations(run_dir)
    if not generations:
        return None
    owner = _read(generations[-1][1])
    return owner if is_live(owner) else None


class Claim:
    """A held claim; as a context manager it keeps the heartbeat going and releases at the end."""

    def __init__(self, path: Path, owner: dict[str, Any]):
        self.path = path
        self.owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"heartbeat {path}", daemon=True)

    def __enter__(self) -> Claim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.release()

    def beat(self) -> None:
        """Refresh the heartbeat, unless the claim was taken over meanwhile."""
        current = _read(self.path)
        if current is None or current.get("token") != self.owner["token"]:
            return
        self.owner = self.owner | {"heartbeat": time.time()}
        atomic.write_text(self.path, json.dumps(self.owner))

    def release(self) -> None:
        current = _read(self.path)
        if current is not None and current.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except OSError:  # a passing hiccup of a shared file system: try again next time
                continue


def try_claim(run_dir: Path) -> Claim | None:
    """Claim the run in ``run_dir`` for this process; None when a live process holds it or
    another process won the race for it."""
    generations = _generations(run_dir)
    if generations and is_live(_read(generations[-1][1])):
        return None
    generation = generations[-1][0] + 1 if generations else 0
    owner = {
        "host": HOST, "pid": os.getpid(), "token": uuid.uuid4().hex,
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "heartbeat": time.time(),
    }
    path = run_dir / f"claim.{generation}.json"
    try:
        atomic.create_text(path, json.dumps(owner))
    except FileExistsError:
        return None
    for older, stale in generations:
        if older < generation:
            stale.unlink(missing_ok=True)
    return Claim(path, owner)
