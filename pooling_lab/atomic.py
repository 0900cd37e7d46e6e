"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A reader (or a resumed run) therefore sees either the old file or the new one, never half of one.
A new file gets the mode the umask leaves (as ``open`` gives it) and a replaced file keeps its
mode, so collaborators sharing a results folder can read what is written there.  A failed write
raises an ``OSError`` naming the file that was being written (a full disk's error names none).
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _write_atomic(
    path: Path, writer: Callable[[IO[Any]], None], mode: str, publish: Callable[[Path, Path], None] = os.replace
) -> None:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)  # an error here names the folder
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # less the umask
        with os.fdopen(fd, mode) as handle:
            _keep_mode(handle.fileno(), path)
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        publish(temporary, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        with contextlib.suppress(OSError):  # gone (renamed), never made, or past saving
            temporary.unlink()


def _keep_mode(fd: int, path: Path) -> None:
    """Give the open temporary file the mode of the file it will replace, if there is one."""
    with contextlib.suppress(FileNotFoundError):
        os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))


def write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda handle: handle.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda handle: handle.write(data), "wb")


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` straight into the temporary file (no in-memory copy of a large tensor)."""
    import torch

    _write_atomic(path, lambda handle: torch.save(obj, handle), "wb")


def create_text(path: Path, text: str) -> None:
    """Write ``path`` whole, only if nothing has that name yet (else ``FileExistsError``): the
    finished temporary file is hard-linked to the name, which fails if the name exists, also
    over NFS, so of processes racing for one name exactly one creates it."""
    _write_atomic(path, lambda handle: handle.write(text), "w", publish=os.link)
