"""Revisited Oxford 5k and Paris 6k (Radenović, Iscen, Tolias, Avrithis and Chum, CVPR 2018):
landmark retrieval benchmarks, for evaluation only (they have no training split);
``pooling-lab evaluate RUN_DIR --data roxford5k`` evaluates a trained run on them.

The layout is the one the revisitop repository's download code makes (``root`` is its
``data/datasets`` folder), ``<name>`` being ``roxford5k`` or ``rparis6k``::

    <root>/<name>/gnd_<name>.pkl     the ground truth
    <root>/<name>/jpg/<image>.jpg    every image it names

The ground truth is a pickled dict: ``imlist`` (the database images, by name without suffix),
``qimlist`` (the query images, not part of the database) and ``gnd``, per query its box ``bbx``
(left, upper, right, lower, in pixels) and the ``easy``, ``hard`` and ``junk`` index lists into
``imlist``.  As the protocol requires, a query image is cropped to its box before anything
else; then every image is decoded, resized and cached like the image-folder data sets
(``image_cache``: shorter side to the image size, centred square).

Downloads: the images from the Oxford VGG pages (one archive for Oxford, two for Paris, whose
images sit in sub-folders; all land in ``jpg/``), the ground truth from the revisitop site.  No
checksum of these files is published, so none is pinned; what arrives is checked by its
structure instead: the ground truth is unpickled as plain data only (containers, numbers,
strings, numpy arrays: a file from the network cannot run code) and validated before it is
kept, and the images are extracted into a temporary folder that is renamed into place only once
it holds every image the ground truth names.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from pooling_lab.data.download import ARCHIVE_ERRORS, Remote, downloaded, staging_folder
from pooling_lab.data.image_cache import Box, cached_split
from pooling_lab.data.splits import Split
from pooling_lab.errors import DataNotFoundError, UserError

GROUND_TRUTH_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl"
IMAGE_ARCHIVES = {
    "roxford5k": ("https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz",),
    "rparis6k": (
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz",
    ),
}
IMAGE_SUFFIX = ".jpg"
GROUND_TRUTH_LISTS = ("easy", "hard", "junk")
# what unpickling a damaged or foreign file can raise
UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError)


@dataclass(frozen=True)
class GroundTruth:
    database: list[str]  # imlist
    queries: list[str]  # qimlist
    gnd: list[dict[str, Any]]  # per query: bbx (4 floats), easy, hard, junk (lists of ints)


@dataclass(frozen=True)
class RevisitedData:
    """Decoded images (labels unused, all 0) and the per-query ground truth."""

    name: str
    database: Split
    queries: Split  # cropped to their boxes
    gnd: list[dict[str, Any]]


def load_revisited(name: str, root: Path, download: bool, size: int, cache_dir: Path) -> RevisitedData:
    """``roxford5k`` or ``rparis6k`` under ``root`` (downloaded first when missing and
    ``download``), images at ``size`` pixels, cached in ``cache_dir``."""
    folder = root / name
    truth_file, images = ground_truth_file(folder, name), folder / "jpg"
    if not (truth_file.is_file() and images.is_dir()):
        if not download:
            raise DataNotFoundError(
                f"{name} is not there: expected {truth_file} and {images}/<image>{IMAGE_SUFFIX} for "
                f"every image it names (the revisitop layout). Give --download to download it "
                f"(needs internet) or place the files there yourself",
                field="--root",
            )
        fetch(name, folder)
    truth = read_ground_truth(truth_file)
    database, queries = ([images / f"{image}{IMAGE_SUFFIX}" for image in names] for names in (truth.database, truth.queries))
    absent = [path for path in (*database, *queries) if not path.is_file()]
    if absent:
        raise UserError(
            f"{len(absent)} image(s) the ground truth names are not there, e.g. {absent[0].name}; "
            f"remove the folder to download it again",
            source=str(images),
        )
    boxes = [entry["bbx"] for entry in truth.gnd]
    return RevisitedData(
        name,
        cached_split(f"{name}-database", images, database, [0] * len(database), [], size, cache_dir),
        cached_split(f"{name}-queries", images, queries, [0] * len(queries), [], size, cache_dir, boxes),
        truth.gnd,
    )


def ground_truth_file(folder: Path, name: str) -> Path:
    return folder / f"gnd_{name}.pkl"


# ---------------------------------------------------------------- the ground truth


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers, strings and numpy arrays, nothing that could run code."""

    ALLOWED = frozenset(
        (module, name)
        for core in ("numpy.core", "numpy._core")
        for module, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                             (f"{core}.numeric", "_frombuffer"))
    ) | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a ground-truth file does not hold")
        return super().find_class(module, name)


def read_ground_truth(path: Path) -> GroundTruth:
    """The ground truth at ``path``, checked (one-line ``UserError`` naming the file)."""
    try:
        with path.open("rb") as handle:
            content = _unpickle(handle)
    except UNPICKLING_ERRORS as error:
        raise UserError(f"not a readable ground-truth pickle ({error})", source=str(path)) from error
    try:
        return _ground_truth(content)
    except ValueError as error:
        raise UserError(str(error), source=str(path)) from None


def _unpickle(handle: BinaryIO) -> Any:
    return _PlainUnpickler(handle, encoding="latin1").load()  # latin1: numpy arrays pickled by Python 2


def _ground_truth(content: Any) -> GroundTruth:
    """``content`` as a ``GroundTruth``; a ``ValueError`` says what is wrong with it."""
    if not isinstance(content, Mapping) or not all(key in content for key in ("imlist", "qimlist", "gnd")):
        raise ValueError("expected a dict with keys imlist, qimlist, gnd")
    database, queries, gnd = content["imlist"], content["qimlist"], content["gnd"]
    for key, names in (("imlist", database), ("qimlist", queries)):
        if not isinstance(names, list | tuple):
            raise ValueError(f"{key} must be a list of image names")
        bad = [name for name in names if not _plain_name(name)]
        if bad:
            raise ValueError(f"{key}: {bad[0]!r} is not an image name")
    if not isinstance(gnd, list | tuple) or len(gnd) != len(queries):
        raise ValueError(f"gnd must hold one entry per query of qimlist ({len(queries)})")
    problem = ground_truth_problem(gnd, len(database))
    if problem:
        raise ValueError(f"gnd: {problem}")
    entries = []
    for query, entry in enumerate(gnd):
        box = _box(entry.get("bbx"))
        if box is None:
            raise ValueError(f"gnd: query {query}: bbx must be [left, upper, right, lower] with left < right and upper < lower")
        entries.append({"bbx": box, **{name: _indices(entry[name]) for name in GROUND_TRUTH_LISTS}})
    return GroundTruth(list(database), list(queries), entries)


def _plain_name(name: Any) -> bool:
    """A file name without a folder part (so it cannot point outside the image folder)."""
    return isinstance(name, str) and bool(name) and not name.startswith(".") and not any(c in name for c in "/\\\0")


def _box(value: Any) -> Box | None:
    try:
        left, upper, right, lower = (float(corner) for corner in np.asarray(value, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        return None
    return (left, upper, right, lower) if left < right and upper < lower else None


def ground_truth_problem(gnd: Sequence[Any], database_size: int) -> str | None:
    """What is wrong with the per-query ``easy``, ``hard``, ``junk`` lists of ``gnd`` for a
    database of ``database_size`` images (each a list of indices, the three disjoint), or None."""
    for query, entry in enumerate(gnd):
        if not isinstance(entry, Mapping) or not all(name in entry for name in GROUND_TRUTH_LISTS):
            return f"query {query}: expected a dict with index lists {', '.join(GROUND_TRUTH_LISTS)}"
        seen: dict[int, str] = {}
        for name in GROUND_TRUTH_LISTS:
            indices = _indices(entry[name])
            if indices is None:
                return f"query {query}: {name!r} is not a list of image indices"
            for index in indices:
                if not 0 <= index < database_size:
                    return f"query {query}: {name!r} index {index} is outside the {database_size} database images"
                if index in seen:
                    return f"query {query}: image {index} is in both {seen[index]!r} and {name!r}"
                seen[index] = name
    return None


def _indices(value: Any) -> list[int] | None:
    """A flat list of whole numbers as ints, else None."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim > 1 or not np.all(array == np.round(array)):
        return None
    return array.astype(np.int64).ravel().tolist()


# ---------------------------------------------------------------- the download


def fetch(name: str, folder: Path) -> None:
    """Download what is missing of ``name`` into ``folder``: the ground truth, then the images
    it names."""
    truth_file = ground_truth_file(folder, name)
    if not truth_file.is_file():
        remote = Remote(GROUND_TRUTH_URL.format(name=name), md5=None)
        with downloaded(remote, folder) as part:
            try:
                read_ground_truth(part)
            except UserError as error:
                raise DataNotFoundError(
                    f"{remote.url} is not a revisitop ground-truth file: {error.detail}", field="--download"
                ) from None
            os.replace(part, truth_file)
    images = folder / "jpg"
    if not images.is_dir():
        truth = read_ground_truth(truth_file)
        download_images(IMAGE_ARCHIVES[name], {*truth.database, *truth.queries}, images)


def download_images(urls: Sequence[str], names: set[str], destination: Path) -> None:
    """Extract the images ``<name>.jpg`` for ``names`` from the tar archives at ``urls``,
    wherever they sit in them, into ``destination`` (which must not exist yet)."""
    with staging_folder(destination) as staging:
        for url in urls:
            with downloaded(Remote(url, md5=None), destination.parent) as archive:
                try:
                    _extract_images(archive, names, staging)
                except ARCHIVE_ERRORS as error:
                    raise DataNotFoundError(f"cannot extract {url}: {error}", field="--download") from error
        missing = sorted(names - {path.stem for path in staging.iterdir()})
        if missing:
            raise DataNotFoundError(
                f"the archives {', '.join(urls)} lack {len(missing)} of the {len(names)} images the "
                f"ground truth names, e.g. {missing[0]}",
                field="--download",
            )
        os.replace(staging, destination)


def _extract_images(archive: Path, names: set[str], staging: Path) -> None:
    """Write the archive's regular files ``.../<name>.jpg`` with ``name`` in ``names`` to
    ``staging/<name>.jpg`` (paths built here: nothing in the archive can write elsewhere)."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if not (member.isfile() and path.suffix == IMAGE_SUFFIX and path.stem in names):
                continue
            source = tar.extractfile(member)
            assert source is not None  # a regular file has content
            with source, (staging / path.name).open("wb") as out:
                shutil.copyfileobj(source, out)
