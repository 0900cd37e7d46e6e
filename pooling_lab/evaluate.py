"""Evaluation of a trained classifier on a split."""

from __future__ import annotations

import contextlib

import torch

from pooling_lab.models.classifier import Classifier


@torch.inference_mode()
def accuracy(model: Classifier, batches, autocast: contextlib.AbstractContextManager | None = None) -> float:
    """Top-1 accuracy, with the head's plain logits (no margin: labels are not given)."""
    was_training = model.training
    model.eval()
    correct = total = None
    for images, labels in batches:
        with autocast or contextlib.nullcontext():
            logits = model(images)
        hits = (logits.argmax(dim=1) == labels).sum()
        correct = hits if correct is None else correct + hits
        total = labels.numel() + (total or 0)
    model.train(was_training)
    if correct is None:
        return float("nan")
    return correct.item() / total
