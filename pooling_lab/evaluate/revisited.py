"""The revisited Oxford and Paris evaluation (Radenović, Iscen, Tolias, Avrithis and Chum,
"Revisiting Oxford and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018).

Each query's ground truth lists database images as ``easy``, ``hard`` or ``junk``.  Three
protocols choose the positives and the images taken out of the ranking before scoring:

    easy    positives easy            ignored junk and hard
    medium  positives easy and hard   ignored junk
    hard    positives hard            ignored junk and easy

Average precision is the protocol's own, the area under the precision-recall curve by
trapezoids: the k-th positive (k from 0) at place r (from 0, ignored images removed) adds
(P0 + P1) / 2 / (number of positives), with P0 = k / r (1 when r = 0) and P1 = (k + 1) / (r + 1).
mP@k is the protocol's precision at k: with r_last the 1-based place of a query's last positive,
the positives among its first min(k, r_last) places divided by min(k, r_last), so a query with
fewer than k positives can still score 1.  A query without positives under a protocol is left
out of that protocol's means (all its numbers are NaN when every query is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pooling_lab.data.revisited import ground_truth_problem

PRECISION_AT = (1, 5, 10)  # the k of mP@k the papers report
PROTOCOLS = {  # name: (positive lists, ignored lists)
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def revisited_map(scores: Any, gnd: Sequence[Mapping[str, Any]], ks: Sequence[int] = PRECISION_AT) -> dict[str, float]:
    """mAP and mP@k of the three protocols (module docstring) as fractions in [0, 1] (the
    papers print percentages): ``{"easy": mAP, "medium": mAP, "hard": mAP, "easy_mp@1": ...}``.

    ``scores`` is a (queries, database) similarity array, numpy or torch, higher = more similar;
    each query ranks the whole database by it, ties broken by database index.  ``gnd`` is the
    ``gnd`` list of an official ground-truth file, one dict per query with index lists
    ``easy``, ``hard`` and ``junk`` (disjoint, as in the official files; other keys are
    ignored)."""
    similarity = _as_array(scores)
    if len(gnd) != len(similarity):
        raise ValueError(f"{len(gnd)} ground-truth entries for {len(similarity)} queries")
    problem = ground_truth_problem(gnd, similarity.shape[1])
    if problem:
        raise ValueError(problem)
    order = np.argsort(-similarity, axis=1, kind="stable")
    maps, precisions = {}, {}
    for name, (positive_lists, ignored_lists) in PROTOCOLS.items():
        positive = np.take_along_axis(_membership(gnd, positive_lists, similarity.shape), order, axis=1)
        ignored = np.take_along_axis(_membership(gnd, ignored_lists, similarity.shape), order, axis=1)
        maps[name], precision_at = _protocol_scores(positive, ~ignored, ks)
        precisions |= {f"{name}_mp@{k}": value for k, value in zip(ks, precision_at, strict=True)}
    return maps | precisions


def _as_array(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"scores must be a (queries, database) array, got shape {array.shape}")
    return array


def _membership(gnd: Sequence[Mapping[str, Any]], lists: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
    """(queries, database) bool: the image is in one of the query's ``lists``."""
    member = np.zeros(shape, dtype=bool)
    for query, entry in enumerate(gnd):
        for name in lists:
            member[query, np.asarray(entry[name], dtype=np.int64).ravel()] = True
    return member


def _protocol_scores(positive: np.ndarray, kept: np.ndarray, ks: Sequence[int]) -> tuple[float, list[float]]:
    """mAP and mP@k over the queries with positives, from the ranked positive and kept
    (not ignored) masks; a positive is never ignored."""
    queries = len(positive)
    count = positive.sum(axis=1)
    answerable = count > 0
    if not answerable.any():
        return float("nan"), [float("nan")] * len(ks)
    rows = np.nonzero(positive)[0]  # one entry per positive, in ranked order within a query
    place = (np.cumsum(kept, axis=1) - 1)[positive]  # from 0, among the kept images
    found = (np.cumsum(positive, axis=1) - 1)[positive]  # positives ranked before this one
    before = np.where(place > 0, found / np.maximum(place, 1), 1.0)
    trapezoids = (before + (found + 1) / (place + 1)) / 2
    average_precision = np.bincount(rows, trapezoids, queries)[answerable] / count[answerable]
    last = np.zeros(queries, dtype=np.int64)
    np.maximum.at(last, rows, place + 1)  # 1-based place of each query's last positive
    precision_at = []
    for k in ks:
        cut = np.minimum(last, k)
        hits = np.bincount(rows, place + 1 <= cut[rows], queries)
        precision_at.append(float(np.mean(hits[answerable] / cut[answerable])))
    return float(np.mean(average_precision)), precision_at
