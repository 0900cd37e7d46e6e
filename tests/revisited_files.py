"""A tiny revisited Oxford data set in the exact on-disk format of the revisitop layout:
``<root>/roxford5k/gnd_roxford5k.pkl`` and ``<root>/roxford5k/jpg/<image>.jpg``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DATABASE = [f"oxford_{i:06d}" for i in range(8)]
QUERIES = ["all_souls_000013", "ashmolean_000058"]
# the query images are 40 x 30: the left half red, the right half blue
RED, BLUE = (220, 20, 20), (20, 20, 220)
BOXES = [(20.0, 0.0, 40.0, 30.0), (0.0, 0.0, 20.0, 30.0)]  # query 0: the blue half; query 1: the red half


def ground_truth() -> dict[str, Any]:
    """The pickle's content: plain lists for query 0, numpy arrays for query 1 (both occur)."""
    return {
        "imlist": list(DATABASE),
        "qimlist": list(QUERIES),
        "gnd": [
            {"bbx": list(BOXES[0]), "easy": [0, 1], "hard": [2, 5], "junk": [3]},
            {"bbx": np.array(BOXES[1]), "easy": np.array([4, 6]), "hard": np.array([7], dtype=np.int64),
             "junk": np.array([], dtype=np.int64)},
        ],
    }


def database_image(index: int) -> Image.Image:
    """Blocks of colour, different for every image."""
    rng = np.random.default_rng(index)
    blocks = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 9, 1), dtype=np.uint8)))  # 24 x 36


def query_image() -> Image.Image:
    pixels = np.empty((30, 40, 3), dtype=np.uint8)
    pixels[:, :20], pixels[:, 20:] = RED, BLUE
    return Image.fromarray(pixels)


def write_images(folder: Path) -> dict[str, Path]:
    """Every image, as JPEG files in ``folder``; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, name in enumerate(DATABASE):
        database_image(index).save(folder / f"{name}.jpg", quality=95)
        written[name] = folder / f"{name}.jpg"
    for name in QUERIES:
        query_image().save(folder / f"{name}.jpg", quality=95)
        written[name] = folder / f"{name}.jpg"
    return written


def write_pickle(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))
    return path


def write_roxford(root: Path) -> Path:
    """The data set under ``root`` (the folder to give as --root); returns its folder."""
    folder = root / "roxford5k"
    write_images(folder / "jpg")
    write_pickle(folder / "gnd_roxford5k.pkl", ground_truth())
    return folder
