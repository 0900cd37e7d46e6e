"""Retrieval metrics from the embeddings of one split.

Every item of a split queries all the others by cosine similarity of its L2-normalised
embedding (after pooling and projection); an item is relevant when it has the query's class.
Similarities are rounded to multiples of ``TIE_RESOLUTION`` (2^-20, about 1e-6) before ranking,
so values equal up to floating-point noise (which depends on how the matrix product was
blocked) count as ties; ties are broken by item index.  Queries whose class has no other member
are left out of the means.  Work is done in chunks of queries on the embeddings' device, so a
50k x 50k similarity matrix never exists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

QUERY_CHUNK = 1024
TIE_RESOLUTION = 2.0**-20


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


def _per_query(relevant: torch.Tensor, positives: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Every metric of each query of a chunk, from its ranked relevance and its number R of
    relevant items (a query with R = 0 gets 0s, to be left out by the caller)."""
    ranks = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=torch.float64)
    hit_precision = relevant.double().cumsum(dim=1) / ranks * relevant  # P(i) rel(i)
    count = positives.clamp_min(1)
    average_precision = hit_precision.sum(dim=1) / count
    first_r = ranks <= positives[:, None]
    hit_precision.masked_fill_(~first_r, 0)
    return {
        "map": average_precision,
        "map@r": hit_precision.sum(dim=1) / count,
        "r_precision": (relevant & first_r).sum(dim=1).double() / count,
        **{f"recall@{k}": relevant[:, :k].any(dim=1).double() for k in ks},
    }


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ()) -> dict[str, float]:
    """From one ranking of every query (rules in the module docstring): ``map`` (mean average
    precision over the full ranking), ``recall@K`` for each K, and, with R a query's number of
    relevant items, ``r_precision`` (the relevant fraction of its first R) and ``map@r``
    (1/R sum over i <= R of P(i) rel(i); Musgrave, Belongie and Lim, "A Metric Learning Reality
    Check", ECCV 2020)."""
    device = embeddings.device
    totals: dict[str, torch.Tensor] = {}
    queries = torch.zeros((), dtype=torch.long, device=device)
    for relevant, positives in _ranked_relevance(embeddings, labels):
        answerable = positives > 0
        queries += answerable.sum()
        for name, values in _per_query(relevant, positives, ks).items():
            totals[name] = totals.get(name, 0) + values[answerable].sum()
    count = queries.item()
    names = ["map", "map@r", "r_precision", *(f"recall@{k}" for k in ks)]
    return {name: totals[name].item() / count if count else float("nan") for name in names}


def retrieval_map(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean average precision over the full ranking (rules in the module docstring)."""
    return retrieval_metrics(embeddings, labels)["map"]


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of queries with at least one relevant item among their k nearest others."""
    return retrieval_metrics(embeddings, labels, [k])[f"recall@{k}"]
