"""Fetching official data files: stream to a temporary file, check the md5, then publish atomically.

A ``Remote`` without an md5 is not checksummed; its reader must check what it extracts instead.

Every failure (no network, an HTTP error, a wrong checksum, a damaged archive, a member missing)
becomes a one-line ``DataNotFoundError``; temporary files and the folders made for the download
are removed, and extracted files are moved into place only when all were read, so a failed
download leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pooling_lab.errors import DataNotFoundError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)  # a damaged or cut-short tar.gz


@dataclass(frozen=True)
class Remote:
    url: str
    md5: str | None  # None: not checked here (see the reader for what it checks)


def not_found(dataset: str, folders: list[Path], files: list[str]) -> DataNotFoundError:
    where = str(folders[0]) if len(folders) == 1 else "one of " + ", ".join(map(str, folders))
    return DataNotFoundError(
        f"{dataset} is not there: expected {', '.join(files)} in {where}. Set data.download: "
        f"true to download it (needs internet) or place the extracted files there yourself",
        field="data.root",
    )


def _stream(url: str, out: BinaryIO) -> str:
    """Copy ``url`` into the open binary file ``out``; returns the md5 of what was copied."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        while chunk := response.read(CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


@contextmanager
def downloaded(remote: Remote, folder: Path) -> Iterator[Path]:
    """Download ``remote`` into a temporary file in ``folder`` and verify it; removed on exit."""
    with _part_file(folder) as (fd, part):
        try:
            with os.fdopen(fd, "wb") as out:
                md5 = _stream(remote.url, out)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise DataNotFoundError(
                f"could not download {remote.url}: {reason}", field="data.download"
            ) from error
        if remote.md5 is not None and md5 != remote.md5:
            raise DataNotFoundError(
                f"download of {remote.url} is damaged: md5 {md5}, expected {remote.md5}",
                field="data.download",
            )
        yield part


@contextmanager
def _part_file(folder: Path) -> Iterator[tuple[int, Path]]:
    """A new temporary file in ``folder`` (descriptor and path), removed on exit.  ``folder`` and
    its missing parents are made for it, and removed again (those still empty) when the block
    fails, so a failed download leaves no empty folder behind."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=folder)
    except OSError as error:
        _remove_empty(made)
        raise DataNotFoundError(f"cannot write to {folder}: {error}", field="data.root") from error
    succeeded = False
    try:
        yield fd, Path(name)
        succeeded = True
    finally:
        Path(name).unlink(missing_ok=True)
        if not succeeded:
            _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextmanager
def staging_folder(destination: Path) -> Iterator[Path]:
    """A new temporary folder beside ``destination`` (so that renaming moves its contents there
    whole), removed on exit with whatever is still in it."""
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", suffix=".partial", dir=destination.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_file(remote: Remote, destination: Path) -> None:
    with downloaded(remote, destination.parent) as part:
        os.replace(part, destination)


def download_members(remote: Remote, members: Mapping[str, Path]) -> None:
    """Download the tar archive ``remote`` and write the named members to their destinations,
    files of one folder: they are extracted into a temporary folder beside it and moved into
    place only when all were read, so a damaged archive leaves nothing behind.

    Only the listed members are read and their destinations are chosen by the caller, so no path
    stored in the archive is ever used: a member cannot escape the data folder.
    """
    folder = next(iter(members.values())).parent
    with downloaded(remote, folder.parent) as archive, staging_folder(folder) as staging:
        staged = {name: staging / destination.name for name, destination in members.items()}
        try:
            _extract_members(remote, archive, staged)
        except ARCHIVE_ERRORS as error:
            raise DataNotFoundError(f"cannot extract {remote.url}: {error}", field="data.download") from error
        folder.mkdir(exist_ok=True)
        for name, destination in members.items():
            os.replace(staged[name], destination)


def _extract_members(remote: Remote, archive: Path, members: Mapping[str, Path]) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member_name, destination in members.items():
            try:
                member = tar.getmember(member_name)
            except KeyError:
                raise DataNotFoundError(
                    f"archive {remote.url} has no file {member_name}", field="data.download"
                ) from None
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                raise DataNotFoundError(
                    f"{member_name} in {remote.url} is not a regular file", field="data.download"
                )
            with handle, destination.open("wb") as out:
                shutil.copyfileobj(handle, out)
                out.flush()
                os.fsync(out.fileno())  # whole on disk before it is moved into place
