"""A tiny ArcFace model with a GeM at p = 3.37 and batches on the CPU, for the evaluation tests."""

from __future__ import annotations

import torch

from pooling_lab.data import BatchLoader, Split
from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import Classifier, build_model

LEARNED_P = 3.37


def tiny_model(seed: int = 0) -> Classifier:
    """small_cnn -> GeM (p = LEARNED_P) -> 16-d embedding -> ArcFace over 4 classes."""
    torch.manual_seed(seed)
    config = ExperimentConfig.model_validate({
        "name": "t", "data": {"dataset": "synthetic"},
        "model": {"backbone": {"name": "small_cnn", "width": 8, "depth": 2}, "pool": {"name": "gem", "p": 2.7},
                  "embedding_dim": 16},
        "head": {"name": "arcface"},
    })
    model = build_model(config, in_channels=3, num_classes=4)
    with torch.no_grad():
        model.pool.p.fill_(LEARNED_P)
    return model


def batches_of(images: torch.Tensor, labels: torch.Tensor) -> BatchLoader:
    return BatchLoader(Split(images, labels), 16, device=torch.device("cpu"), mean=(0.5,) * 3, std=(0.25,) * 3)
