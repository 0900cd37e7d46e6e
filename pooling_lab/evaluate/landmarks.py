"""Evaluate a trained run on revisited Oxford or Paris (``pooling-lab evaluate RUN_DIR --data
roxford5k``): easy / medium / hard mAP and mP@k into ``revisited_<name>.csv`` in the run
folder, beside what the run recorded, which stays as it is.

Descriptors are multi-scale as in the literature: the embedding (after pooling and projection)
of each image at scales 1, 1/sqrt(2) and 1/2, each L2-normalised, averaged and normalised again;
a query scores the database by cosine similarity.  Images are normalised with the run's own
channel statistics and resized to the run's image size unless another is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from pooling_lab import results
from pooling_lab.data import BatchLoader, Split
from pooling_lab.data.revisited import load_revisited
from pooling_lab.data.spec import DEFAULT_CACHE_ROOT
from pooling_lab.errors import UserError
from pooling_lab.evaluate.passes import SplitPass
from pooling_lab.evaluate.reprobe import trained_model
from pooling_lab.evaluate.revisited import PRECISION_AT, PROTOCOLS, revisited_map
from pooling_lab.results import RunFiles
from pooling_lab.train.context import compute_for

SCALES = (1.0, 2**-0.5, 0.5)


@dataclass(frozen=True)
class LandmarkEvaluation:
    path: Path  # the table written
    scores: dict[str, float]  # revisited_map's


def result_path(run_dir: Path, dataset: str) -> Path:
    return Path(run_dir) / f"revisited_{dataset}.csv"


def evaluate_on_revisited(
    run_dir: Path,
    dataset: str,
    root: Path,
    download: bool = False,
    image_size: int | None = None,
    cache_dir: Path | None = None,
    replace: bool = False,
) -> LandmarkEvaluation:
    """Evaluate the finished run at ``run_dir`` on ``dataset`` (``roxford5k`` or ``rparis6k``)
    under ``root``; an earlier table of the same data set is replaced only with ``replace``."""
    files = RunFiles(Path(run_dir))
    path = result_path(files.root, dataset)
    if path.exists() and not replace:
        raise UserError("already evaluated: give --replace to evaluate again over it", source=str(path))
    config, data, model = trained_model(files)
    channels, size = data.image_shape[0], image_size or data.image_shape[-1]
    if channels != 3:
        raise UserError(f"the run's model takes {channels}-channel images; {dataset} holds colour photos",
                        source=str(files.config))
    benchmark = load_revisited(dataset, Path(root), download, size, cache_dir or Path(DEFAULT_CACHE_ROOT).expanduser())
    compute = compute_for(config.train)
    model = model.to(compute.device)

    def descriptors(split: Split) -> torch.Tensor:
        batches = BatchLoader(split, config.train.eval_batch_size, device=compute.device, mean=data.mean,
                              std=data.std, channels_last=compute.device.type == "cuda")
        combined = SplitPass(model, batches, compute.autocast(), scales=SCALES, combine="mean").outputs().embeddings
        return F.normalize(combined, dim=1)

    scores = revisited_map(descriptors(benchmark.queries) @ descriptors(benchmark.database).T, benchmark.gnd)
    results.write_csv(path, _table(scores, size))
    return LandmarkEvaluation(path, scores)


def _table(scores: dict[str, float], image_size: int) -> pd.DataFrame:
    """One row per protocol: mAP and mP@k as fractions, and the image size used."""
    return pd.DataFrame([
        {"protocol": protocol, "map": scores[protocol],
         **{f"mp@{k}": scores[f"{protocol}_mp@{k}"] for k in PRECISION_AT}, "image_size": image_size}
        for protocol in PROTOCOLS
    ])
