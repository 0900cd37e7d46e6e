"""Image files decoded once into one uint8 tensor per split, kept in a cache on disk.

Every image goes through one path (``decode_image``): converted to RGB (grey replicated, CMYK
converted, transparency composited over black), cropped to its box if it has one, its
shorter side resized to ``size`` with
Pillow's antialiased bilinear filter and the centred square cut out, both in one ``resize``
with a source box.  A JPEG without a crop box is first decoded at a reduced DCT scale
(``draft``) that still leaves its shorter side at ``size`` or more, which is several times
faster for large photos.

A cache file holds the images of one split, (N, 3, size, size) uint8, and their labels.  Its key
hashes the split folder, the class list, the size, every file's relative path, byte size and
modification time, and the crop boxes of images that have one (revisited Oxford and Paris
queries), so adding, removing or replacing a file, or choosing other classes or another
size, builds a new file next to the old one (stale files are not deleted: another experiment may
still use them).  Decoding runs on a thread pool (Pillow releases the GIL while it decodes and
resizes) and shows a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pooling_lab.atomic import save_torch
from pooling_lab.data.splits import Split
from pooling_lab.errors import UserError

FORMAT_VERSION = 1  # bump when decode_image changes what it produces
MAX_THREADS = 16
# what torch.load and a cache file of unexpected content can raise
UNREADABLE = (
    OSError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    KeyError,
    TypeError,
    ValueError,
)


Box = tuple[float, float, float, float]  # left, upper, right, lower, in the file's pixels


def decode_image(path: Path, size: int, box: Box | None = None) -> np.ndarray:
    """The image at ``path`` as uint8 (size, size, 3): shorter side to ``size``, centre square;
    with ``box``, cropped to that box first (as Pillow's ``crop`` does, corners rounded)."""
    try:
        from PIL import Image
    except ImportError as error:
        raise UserError("image-file data sets need Pillow: pip install pillow") from error
    try:
        with Image.open(path) as image:
            if box is None:  # a box is in full-scale pixels
                image.draft("RGB", (size, size))  # JPEG only: decode at a scale still >= size
            if image.has_transparency_data:
                rgba = image.convert("RGBA")
                black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                rgb = Image.alpha_composite(black, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read this image ({error})", source=str(path)) from error
    if box is not None:
        rgb = rgb.crop(box)
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    square = rgb.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
    )
    return np.asarray(square)


def cache_key(
    folder: Path, files: Sequence[Path], classes: Sequence[str], size: int, boxes: Sequence[Box] | None = None
) -> str:
    """sha256 over what the cached tensors depend on (``files`` lie under ``folder``); crop
    ``boxes`` count only when given, so the keys of uncropped splits stay as they were."""
    listing = []
    for path in files:
        stat = path.stat()
        listing.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    payload = {
        "format": FORMAT_VERSION,
        "folder": str(folder.resolve()),
        "classes": list(classes),
        "size": size,
        "files": listing,
    }
    if boxes is not None:
        payload["boxes"] = [[float(corner) for corner in box] for box in boxes]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def cached_split(
    name: str,
    folder: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    classes: Sequence[str],
    size: int,
    cache_dir: Path,
    boxes: Sequence[Box] | None = None,
) -> Split:
    """The decoded images of ``files`` (under ``folder``) with ``labels``, each cropped to its
    box of ``boxes`` when given, from the cache when it holds them, else decoded now and cached.
    ``name`` (say ``imagenette2-160-train``) only makes the cache file recognisable."""
    key = cache_key(folder, files, classes, size, boxes)
    path = cache_dir / f"{name}-{size}px-{key[:16]}.pt"
    cached = _read(path, key)
    if cached is not None:
        return cached
    images = decode_all(files, size, f"decoding {name} ({len(files)} images)", boxes)
    split = Split(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64))
    try:
        save_torch(path, {"key": key, "images": split.images, "labels": split.labels})
    except OSError as error:
        raise UserError(
            f"cannot write the image cache: {error}", field="data.cache_root"
        ) from error
    return split


def _read(path: Path, key: str) -> Split | None:
    """The split cached at ``path`` if it is there, readable and made for ``key``."""
    if not path.is_file():
        return None
    try:
        content = torch.load(path, weights_only=True)
        if content["key"] != key:
            return None
        return Split(content["images"], content["labels"])
    except UNREADABLE:
        return None  # damaged or from another format: rebuilt and overwritten


def decode_all(
    files: Sequence[Path], size: int, description: str, boxes: Sequence[Box] | None = None
) -> np.ndarray:
    """uint8 (N, 3, size, size) of ``files`` (each cropped to its box of ``boxes`` when
    given), decoded on a thread pool, in order."""
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    pool = ThreadPoolExecutor(min(MAX_THREADS, os.cpu_count() or 1))
    try:
        with bar:
            task = bar.add_task(description, total=len(files))
            decoded = pool.map(
                lambda path, box: decode_image(path, size, box), files, boxes or [None] * len(files)
            )
            for index, image in enumerate(decoded):
                images[index] = image.transpose(2, 0, 1)
                bar.advance(task)
    finally:
        pool.shutdown(cancel_futures=True)  # after a bad file, decode no more
    return images
