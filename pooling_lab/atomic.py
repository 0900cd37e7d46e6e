"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A reader (or a resumed run) therefore sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _write_atomic(path: Path, writer: Callable[[IO[Any]], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda handle: handle.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda handle: handle.write(data), "wb")


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` straight into the temporary file (no in-memory copy of a large tensor)."""
    import torch

    _write_atomic(path, lambda handle: torch.save(obj, handle), "wb")
