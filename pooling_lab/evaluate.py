"""Evaluation of a trained classifier: accuracy, retrieval metrics, and the test-time p probe.

Retrieval: every item of a split queries all the others by cosine similarity of its
L2-normalised embedding (after pooling and projection); an item is relevant when it has the
query's class.  Similarities are rounded to multiples of ``TIE_RESOLUTION`` (2^-20, about 1e-6)
before ranking, so values equal up to floating-point noise (which depends on how the matrix
product was blocked) count as ties; ties are broken by item index (a stable sort).  Queries whose class has no other member are left out of the means.  Work is done
in chunks of queries on the embeddings' device, so a 50k x 50k similarity matrix never exists.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pooling_lab.models.classifier import Classifier
from pooling_lab.pooling import build_pool

QUERY_CHUNK = 1024
TIE_RESOLUTION = 2.0**-20
CACHE_BYTES = 2**30  # a split's backbone maps are kept for the probe when they fit in this


@dataclass(frozen=True)
class Outputs:
    """One pass over a split: the head's predictions (no margin) and the embeddings."""

    predictions: torch.Tensor
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
                    maps = [self.model.backbone(resized(images, scale)) for scale in self.scales]
                yield maps, labels

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
                    logits = model.head(embedded)
                predictions.append(logits.argmax(dim=1))
                embeddings.append(embedded.float())
                labels.append(batch_labels)
        return Outputs(torch.cat(predictions), torch.cat(embeddings), torch.cat(labels))


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
    return (outputs.predictions == outputs.labels).float().mean().item()


def split_metrics(outputs: Outputs, metrics: list[str]) -> dict[str, float]:
    """The named metrics (``accuracy``, ``map``, ``recall@K``) of one pass over a split; the
    retrieval metrics share one ranking."""
    ks = [int(m.removeprefix("recall@")) for m in metrics if m.startswith("recall@")]
    retrieval = retrieval_metrics(outputs.embeddings, outputs.labels, ks) if "map" in metrics or ks else {}
    return {m: accuracy_of(outputs) if m == "accuracy" else retrieval[m] for m in metrics}


def probe(split: SplitPass, p_values: list[float], metrics: list[str]) -> pd.DataFrame:
    """Metrics of the trained model with its pool replaced by a fixed, shared GeM at each p
    (same eps), without retraining: the test-time p sweep."""
    pool = split.model.pool
    device = next(split.model.parameters()).device
    eps = getattr(pool, "eps", 1e-6)
    rows = []
    for p in p_values:
        stand_in = build_pool("gem", 1, p=p, learnable=False, mode="shared", eps=eps).to(device)
        rows.append({"p": p, **split_metrics(split.outputs(stand_in), metrics)})
    return pd.DataFrame(rows, columns=["p", *metrics])


def best_p(table: pd.DataFrame) -> float:
    """The probe's best p: highest mAP (accuracy if mAP was not measured); ties -> smaller p."""
    column = "map" if "map" in table else "accuracy"
    ordered = table[table[column].map(math.isfinite)].sort_values("p")
    if ordered.empty:
        return float("nan")
    return float(ordered.loc[ordered[column].idxmax(), "p"])


# A finished run is flagged when its test accuracy is within reach of chance (1 / classes): at most
# CHANCE_RATIO x chance (telling for many classes) and at most CHANCE_GAIN of the way from chance
# to 1 (telling for few classes, where 1.5 x chance is already a fair accuracy) ...
CHANCE_RATIO = 1.5
CHANCE_GAIN = 0.1
# ... or when its pooling exponent p ends outside this range (no pooling is served by such a p).
SENSIBLE_P = (0.5, 1000.0)


def run_flags(final: dict[str, Any], num_classes: int) -> list[str]:
    """What makes a finished run's numbers suspect, one line each (none for a healthy run):
    chance accuracy, a p outside ``SENSIBLE_P``; read from ``test_accuracy`` and ``p_final``."""
    flags = []
    accuracy, p = final.get("test_accuracy", math.nan), final.get("p_final", math.nan)
    chance = 1 / num_classes
    ceiling = min(CHANCE_RATIO * chance, chance + CHANCE_GAIN * (1 - chance))
    if accuracy <= ceiling:
        flags.append(f"chance accuracy: test accuracy {accuracy:.3g} <= {ceiling:.3g} "
                     f"(chance {chance:.3g} with {num_classes} classes)")
    low, high = SENSIBLE_P
    if not math.isnan(p) and not low <= p <= high:
        flags.append(f"p out of range: p = {p:.6g} outside [{low:g}, {high:g}]")
    return flags


def _ranked_relevance(embeddings: torch.Tensor, labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk of queries: relevance (bool) of every other item in ranked order, and the
    number of relevant items of each query.

    The ranking sorts one int64 key per item, ``round(similarity / TIE_RESOLUTION) * n - index``:
    descending, it orders by similarity and breaks ties by the smaller index, without the cost of
    a stable sort."""
    normalised = F.normalize(embeddings if embeddings.is_floating_point() else embeddings.float(), dim=1)
    count = len(labels)
    index = torch.arange(count, device=embeddings.device)
    for start in range(0, count, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, count)
        key = torch.round(normalised[start:stop] @ normalised.T / TIE_RESOLUTION).long() * count - index
        rows = torch.arange(stop - start, device=key.device)
        key[rows, rows + start] = torch.iinfo(torch.long).min  # the query itself ranks last ...
        order = key.argsort(dim=1, descending=True)[:, :-1]  # ... and is dropped
        relevant = labels[order] == labels[start:stop, None]
        yield relevant, relevant.sum(dim=1)


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ()) -> dict[str, float]:
    """``map`` (mean average precision over the full ranking) and ``recall@K`` for each K, from
    one ranking of every query (rules in the module docstring)."""
    device = embeddings.device
    ap_total = torch.zeros((), dtype=torch.float64, device=device)
    hits = {k: torch.zeros((), dtype=torch.long, device=device) for k in ks}
    queries = torch.zeros((), dtype=torch.long, device=device)
    for relevant, positives in _ranked_relevance(embeddings, labels):
        ranks = torch.arange(1, relevant.shape[1] + 1, device=device, dtype=torch.float64)
        precision = relevant.double().cumsum(dim=1) / ranks
        average_precision = (precision * relevant).sum(dim=1) / positives.clamp_min(1)
        answerable = positives > 0
        ap_total += average_precision[answerable].sum()
        queries += answerable.sum()
        for k in ks:
            hits[k] += (relevant[:, :k].any(dim=1) & answerable).sum()
    count = queries.item()
    if not count:
        return {"map": float("nan"), **{f"recall@{k}": float("nan") for k in ks}}
    return {"map": ap_total.item() / count, **{f"recall@{k}": hits[k].item() / count for k in ks}}


def retrieval_map(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean average precision over the full ranking (rules in the module docstring)."""
    return retrieval_metrics(embeddings, labels)["map"]


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of queries with at least one relevant item among their k nearest others."""
    return retrieval_metrics(embeddings, labels, [k])[f"recall@{k}"]
