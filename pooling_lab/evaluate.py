"""Evaluation of a trained classifier: accuracy, retrieval metrics, and the test-time p probe.

Retrieval: every item of a split queries all the others by cosine similarity of its
L2-normalised embedding; an item is relevant when it has the query's class.  Ties in similarity
are broken by item index (a stable sort), so the numbers are deterministic.  Queries whose class
has no other member are left out of the means.  Work is done in chunks of queries, on the
embeddings' device, so a 50k x 50k similarity matrix never exists at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pooling_lab.models.classifier import Classifier

QUERY_CHUNK = 1024


@dataclass(frozen=True)
class Outputs:
    """What one pass over a split gives: predictions of the head and the embeddings."""

    predictions: torch.Tensor
    embeddings: torch.Tensor
    labels: torch.Tensor


@torch.inference_mode()
def infer(model: Classifier, batches: Iterable, autocast: contextlib.AbstractContextManager | None = None) -> Outputs:
    was_training = model.training
    model.eval()
    predictions, embeddings, labels = [], [], []
    for images, batch_labels in batches:
        with autocast or contextlib.nullcontext():
            embedded = model.embed(images)
            logits = model.head(embedded)
        predictions.append(logits.argmax(dim=1))
        embeddings.append(embedded.float())
        labels.append(batch_labels)
    model.train(was_training)
    return Outputs(torch.cat(predictions), torch.cat(embeddings), torch.cat(labels))


def accuracy_of(outputs: Outputs) -> float:
    return (outputs.predictions == outputs.labels).float().mean().item()


def accuracy(model: Classifier, batches: Iterable, autocast: contextlib.AbstractContextManager | None = None) -> float:
    """Top-1 accuracy of the head's plain logits (no margin: labels are not given)."""
    return accuracy_of(infer(model, batches, autocast))


def _ranked_relevance(embeddings: torch.Tensor, labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk of queries: relevance (bool) of every other item in ranked order, and the
    number of relevant items of each query."""
    normalised = F.normalize(embeddings.float(), dim=1)
    count = len(labels)
    for start in range(0, count, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, count)
        similarity = normalised[start:stop] @ normalised.T
        rows = torch.arange(stop - start, device=similarity.device)
        similarity[rows, rows + start] = -float("inf")  # the query itself ranks last ...
        order = similarity.argsort(dim=1, descending=True, stable=True)[:, :-1]  # ... and is dropped
        relevant = labels[order] == labels[start:stop, None]
        yield relevant, relevant.sum(dim=1)


def retrieval_map(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean average precision over the full ranking (see the module docstring for the rules)."""
    total = torch.zeros((), dtype=torch.float64, device=embeddings.device)
    queries = torch.zeros((), dtype=torch.long, device=embeddings.device)
    for relevant, positives in _ranked_relevance(embeddings, labels):
        ranks = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=torch.float64)
        precision = relevant.double().cumsum(dim=1) / ranks
        average_precision = (precision * relevant).sum(dim=1) / positives.clamp_min(1)
        total += average_precision[positives > 0].sum()
        queries += (positives > 0).sum()
    return (total / queries).item() if queries.item() else float("nan")


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of queries with at least one relevant item among their k nearest others."""
    hits = torch.zeros((), dtype=torch.long, device=embeddings.device)
    queries = torch.zeros((), dtype=torch.long, device=embeddings.device)
    for relevant, positives in _ranked_relevance(embeddings, labels):
        hits += (relevant[:, :k].any(dim=1) & (positives > 0)).sum()
        queries += (positives > 0).sum()
    return hits.item() / queries.item() if queries.item() else float("nan")
