"""Reader for the idx format of MNIST-style data sets, plain or gzipped.

Layout: magic bytes ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian int32 sizes,
then the values in row-major order. Only dtype 0x08 (unsigned byte) occurs in these data sets.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from pooling_lab.errors import UserError

UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the idx file ``path`` (gzip-compressed when it ends in ``.gz``)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UserError(f"not a readable gzip file ({error})", source=str(path)) from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError("not an idx file: it must start with the bytes 0x00 0x00", source=str(path))
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != UNSIGNED_BYTE:
        raise UserError(
            f"idx dtype code 0x{dtype_code:02x} is not supported (expected 0x08, unsigned byte)",
            source=str(path),
        )
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise UserError(f"idx header for {ndim} dimensions is cut short", source=str(path))
    shape = struct.unpack(f">{ndim}i", raw[4:header_bytes])
    expected = int(np.prod(shape, dtype=np.int64))
    if min(shape, default=0) < 0 or len(raw) - header_bytes != expected:
        raise UserError(
            f"idx header says shape {shape} ({expected} bytes) but {len(raw) - header_bytes} "
            "bytes follow it",
            source=str(path),
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape).copy()
