"""One pass of a trained model over a split: predictions and embeddings, with the backbone
maps kept for passes with another pool (the probe), at one or several test-time scales."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pooling_lab.evaluate.retrieval import retrieval_metrics
from pooling_lab.models.classifier import Classifier

CACHE_BYTES = 2**30  # a split's backbone maps are kept for the probe when they fit in this
CPU_BACKBONE_BATCH = 64  # images per backbone call on the CPU (see SplitPass._backbone)


@dataclass(frozen=True)
class Outputs:
    """One pass over a split: the head's predictions (no margin; None for a head without a
    classifier) and the embeddings."""

    predictions: torch.Tensor | None
    embeddings: torch.Tensor
    labels: torch.Tensor


class SplitPass:
    """Runs a model over a split.  The backbone maps do not depend on the pool, so with
    ``keep_maps`` they are computed once (when they fit in ``CACHE_BYTES``) and every further
    pass, e.g. with another p, only reruns pool, embedding and head.

    With ``scales`` other than ``(1.0,)`` the input is also resized by each factor (test-time
    multi-scale); the per-scale descriptors are L2-normalised and combined by ``combine``
    (``mean`` or ``max``) into one embedding, which the head then classifies.
    """

    def __init__(self, model: Classifier, batches: Iterable, autocast: contextlib.AbstractContextManager | None = None,
                 keep_maps: bool = False, scales: Sequence[float] = (1.0,), combine: str = "mean"):
        self.model, self.batches = model, batches
        self.autocast = autocast or contextlib.nullcontext()
        self.scales, self.combine = tuple(scales), combine
        self.kept: list[tuple[list[torch.Tensor], torch.Tensor]] | None = None
        if keep_maps:
            kept, size = [], 0
            for maps, labels in self._compute():
                kept.append((maps, labels))
                size += sum(m.numel() * m.element_size() for m in maps)
                if size > CACHE_BYTES:
                    break
            else:
                self.kept = kept

    def _compute(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        with evaluation_mode(self.model):
            for images, labels in self.batches:
                with self.autocast:
                    maps = [self._backbone(resized(images, scale)) for scale in self.scales]
                yield maps, labels

    def _backbone(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's maps of a batch.  On the CPU a few images at a time: the activations
        then stay in cache, which halves the time of a 1,024-image batch of Fashion-MNIST
        (benchmarks/evaluation.py); in eval mode each image's map does not depend on the others."""
        if images.device.type != "cpu" or len(images) <= CPU_BACKBONE_BATCH:
            return self.model.backbone(images)
        return torch.cat([self.model.backbone(part) for part in images.split(CPU_BACKBONE_BATCH)])

    def _embed(self, maps: list[torch.Tensor], pool: nn.Module) -> torch.Tensor:
        embedded = [self.model.embedding(pool(m)) for m in maps]
        if len(embedded) == 1:
            return embedded[0]
        stacked = F.normalize(torch.stack([e.float() for e in embedded]), dim=2)
        return stacked.mean(dim=0) if self.combine == "mean" else stacked.amax(dim=0)

    def outputs(self, pool: nn.Module | None = None) -> Outputs:
        """Predictions and embeddings with the model's own pool, or with ``pool`` instead."""
        model = self.model
        pool = pool or model.pool
        predictions, embeddings, labels = [], [], []
        with evaluation_mode(model):
            for maps, batch_labels in self.kept if self.kept is not None else self._compute():
                with self.autocast:
                    embedded = self._embed(maps, pool)
                    if model.head.classifies:
                        predictions.append(model.head(embedded).argmax(dim=1))
                embeddings.append(embedded.float())
                labels.append(batch_labels)
        return Outputs(torch.cat(predictions) if model.head.classifies else None, torch.cat(embeddings), torch.cat(labels))


def resized(images: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return images
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False, antialias=scale < 1)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def accuracy_of(outputs: Outputs) -> float:
    """The fraction predicted right; NaN for a head without a classifier."""
    if outputs.predictions is None:
        return float("nan")
    return (outputs.predictions == outputs.labels).float().mean().item()


def split_metrics(outputs: Outputs, metrics: list[str]) -> dict[str, float]:
    """The named metrics (``accuracy``, ``map``, ``map@r``, ``r_precision``, ``recall@K``) of one
    pass over a split; the retrieval metrics share one ranking."""
    ks = [int(m.removeprefix("recall@")) for m in metrics if m.startswith("recall@")]
    ranked = any(m != "accuracy" for m in metrics)
    retrieval = retrieval_metrics(outputs.embeddings, outputs.labels, ks) if ranked else {}
    return {m: accuracy_of(outputs) if m == "accuracy" else retrieval[m] for m in metrics}


