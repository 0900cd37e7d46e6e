"""Retrieval metrics from the embeddings of one split.

Every item of a split queries all the others by cosine similarity of its L2-normalised
embedding (after pooling and projection); an item is relevant when it has the query's class.
Similarities are rounded to multiples of ``TIE_RESOLUTION`` (2^-20, about 1e-6) before ranking,
so values equal up to floating-point noise (which depends on how the matrix product was
blocked) count as ties; ties are broken by item index.  Queries whose class has no other member
are left out of the means.

One sort of each query's row gives the ranks of its relevant items, and every metric comes from
those ranks.  Queries are taken class by class, in chunks of about ``CPU_CHUNK_ELEMENTS``
similarities on the CPU (cache-sized) or ``DEVICE_CHUNK_ELEMENTS`` elsewhere, on the embeddings'
device: a 50k x 50k similarity matrix never exists, and every query of a chunk has the same
number R of relevant items (the other members of its class).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

CPU_CHUNK_ELEMENTS = 2**20  # similarities per chunk of queries on the CPU: its keys stay in cache
DEVICE_CHUNK_ELEMENTS = 2**25  # elsewhere: few, large chunks (about 1 GiB of temporaries at the peak)
TIE_RESOLUTION = 2.0**-20
LAST = torch.iinfo(torch.long).max


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ()) -> dict[str, float]:
    """From one ranking of every query (rules in the module docstring): ``map`` (mean average
    precision over the full ranking), ``recall@K`` for each K, and, with R a query's number of
    relevant items, ``r_precision`` (the relevant fraction of its first R) and ``map@r``
    (1/R sum over i <= R of P(i) rel(i); Musgrave, Belongie and Lim, "A Metric Learning Reality
    Check", ECCV 2020)."""
    normalised = F.normalize(embeddings if embeddings.is_floating_point() else embeddings.float(), dim=1)
    names = ["map", "map@r", "r_precision", *(f"recall@{k}" for k in ks)]
    totals = torch.zeros(len(names), dtype=torch.float64, device=embeddings.device)
    queries = 0
    for chunk, relevant_count in _query_chunks(labels, _chunk_rows(normalised)):
        totals += _per_query(_relevant_ranks(normalised, labels, chunk, relevant_count), ks).sum(dim=1)
        queries += len(chunk)
    if not queries:
        return dict.fromkeys(names, float("nan"))
    return {name: total / queries for name, total in zip(names, totals.tolist(), strict=True)}


def _chunk_rows(normalised: torch.Tensor) -> int:
    elements = CPU_CHUNK_ELEMENTS if normalised.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    return max(1, elements // max(1, len(normalised)))


def _query_chunks(labels: torch.Tensor, rows: int) -> Iterator[tuple[torch.Tensor, int]]:
    """The queries with something to find, class by class, at most ``rows`` at a time, each
    chunk with its queries' number R of relevant items.  Reading the class sizes is the one
    host sync before the end."""
    by_class = torch.argsort(labels, stable=True)
    sizes = torch.unique_consecutive(labels[by_class], return_counts=True)[1].tolist()
    for members in by_class.split(sizes):
        if len(members) > 1:
            for chunk in members.split(rows):
                yield chunk, len(members) - 1


def _relevant_ranks(normalised: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor,
                    relevant_count: int) -> torch.Tensor:
    """(queries, R): the ranks (from 1) of each query's relevant items, increasing; the queries
    are of one class.

    The ranking sorts one int64 key per item, ascending:
    ``-round(similarity / TIE_RESOLUTION) * 2^(b+1) + 2 index + relevant`` with 2^b above the
    number of items orders by similarity, descending, and breaks ties by the smaller index; its
    low bit carries the relevance through the sort, so no gather by the sorted order follows."""
    count, rows = len(labels), torch.arange(len(queries), device=labels.device)
    tie_break = torch.arange(0, 2 * count, 2, device=labels.device) + (labels == labels[queries[0]])
    key = (normalised[queries] @ normalised.T).div_(TIE_RESOLUTION).round_().long()
    key.mul_(-(2 << count.bit_length())).add_(tie_break)
    key[rows, queries] = LAST  # the query itself ranks last ...
    relevant = _sorted_rows(key)[:, :-1] & 1  # ... and is dropped
    places = torch.nonzero_static(relevant, size=len(queries) * relevant_count)[:, 1]
    return places.view(len(queries), relevant_count) + 1


def _sorted_rows(keys: torch.Tensor) -> torch.Tensor:
    """``keys`` with each row sorted ascending.  On the CPU numpy's sort, in place: vectorised,
    it is about 10x torch's row sort there (benchmarks/evaluation.py)."""
    if keys.device.type == "cpu":
        keys.numpy().sort(axis=1)
        return keys
    return keys.sort(dim=1).values


def _per_query(ranks: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Every metric of each query of a chunk (rows: map, map@r, r_precision, recall@K for each
    K), from the ranks of its R relevant items; P(i) at the k-th of them is k / its rank."""
    relevant_count = ranks.shape[1]
    precision = torch.arange(1, relevant_count + 1, device=ranks.device, dtype=torch.float64) / ranks
    within_r = ranks <= relevant_count
    return torch.stack([
        precision.sum(dim=1) / relevant_count,
        (precision * within_r).sum(dim=1) / relevant_count,
        within_r.sum(dim=1, dtype=torch.float64) / relevant_count,
        *((ranks[:, 0] <= k).double() for k in ks),
    ])


def retrieval_map(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean average precision over the full ranking (rules in the module docstring)."""
    return retrieval_metrics(embeddings, labels)["map"]


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of queries with at least one relevant item among their k nearest others."""
    return retrieval_metrics(embeddings, labels, [k])[f"recall@{k}"]
