"""The fast evaluation gives the numbers of a straightforward one: retrieval metrics from the
ranks of the relevant items against a full numpy ranking of every row, the probe's rows against
whole new passes with the pool at each p, and the backbone run a few CPU images at a time
against one call per batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pooling_lab import evaluate
from pooling_lab.evaluate import passes, retrieval
from pooling_lab.pooling.exponent import probe_pool

from .tiny_model import batches_of, tiny_model

KS = (1, 4, 50)


def full_ranking_metrics(embeddings: np.ndarray, labels: np.ndarray, ks=KS) -> dict[str, float]:
    """Every query ranks all the others by cosine similarity rounded to TIE_RESOLUTION, ties
    by index (one lexsort of the whole row); the metrics from the ranked relevance, numpy only."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = np.round(unit @ unit.T / retrieval.TIE_RESOLUTION)
    count = len(labels)
    per_query: dict[str, list[float]] = {}
    for query in range(count):
        others = np.delete(np.arange(count), query)
        ranked = others[np.lexsort((others, -similarity[query, others]))]
        relevant = labels[ranked] == labels[query]
        r = int(relevant.sum())
        if r == 0:
            continue
        precision = np.cumsum(relevant) / np.arange(1, count)
        values = {
            "map": precision[relevant].sum() / r,
            "map@r": precision[:r][relevant[:r]].sum() / r,
            "r_precision": relevant[:r].sum() / r,
            **{f"recall@{k}": float(relevant[:k].any()) for k in ks},
        }
        for name, value in values.items():
            per_query.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in per_query.items()}


def clustered(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings near their class's centre, many of them exact copies (ties); classes of very
    different sizes with labels that are not 0..C-1, and two classes of one (left out)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([-3, 0, 7, 1000, 12, 5]), size=count, p=[0.4, 0.3, 0.15, 0.1, 0.04, 0.01])
    labels[:2] = [41, 42]
    centres = {label: rng.normal(size=8) for label in np.unique(labels)}
    embeddings = np.stack([centres[label] for label in labels]) + rng.normal(size=(count, 8))
    copies = rng.integers(0, count, size=count // 3)
    embeddings[rng.integers(0, count, size=count // 3)] = embeddings[copies]
    return embeddings, labels


@pytest.mark.parametrize("chunk_queries", [1, 7, None])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_a_full_ranking_of_every_row(seed: int, chunk_queries: int | None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    embeddings, labels = clustered(seed, 240)
    if chunk_queries is not None:  # one query a chunk, or classes split over several chunks
        monkeypatch.setattr(retrieval, "CPU_CHUNK_ELEMENTS", chunk_queries * len(labels))
    got = evaluate.retrieval_metrics(torch.tensor(embeddings), torch.tensor(labels), KS)
    expected = full_ranking_metrics(embeddings, labels)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_probe_rows_equal_evaluations_with_the_pool_at_each_p() -> None:
    """The probe reuses one pass's backbone maps for every p: each row is what a whole new pass
    gives with the model's pool replaced by the probe's pool at that p."""
    images = torch.randint(0, 256, (60, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    batches = batches_of(images, torch.arange(60) % 4)
    metrics = ["accuracy", "map", "map@r", "recall@1"]
    grid = [1.0, 2.5, 6.0, 24.0, math.inf]
    table = evaluate.probe(evaluate.SplitPass(tiny_model(), batches, keep_maps=True), grid, metrics).set_index("p")
    for p in grid:
        model = tiny_model()
        model.pool = probe_pool(p, model.pool.eps)
        direct = evaluate.split_metrics(evaluate.SplitPass(model, batches).outputs(), metrics)
        assert table.loc[p, metrics].to_dict() == pytest.approx(direct, abs=1e-12), p
    assert table["map"].nunique() == len(table)  # the p values gave different rankings


def test_the_backbone_runs_on_a_few_cpu_images_at_a_time_with_the_same_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of 16 with parts of 7: the backbone sees 7, 7 and 2 images, and every output is
    what the whole batch gives in one call."""
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    batches = batches_of(images, torch.arange(40) % 4)
    model = tiny_model()
    whole = evaluate.SplitPass(model, batches).outputs()
    seen: list[int] = []
    model.backbone.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    monkeypatch.setattr(passes, "CPU_BACKBONE_BATCH", 7)
    parts = evaluate.SplitPass(model, batches).outputs()
    assert seen == [7, 7, 2, 7, 7, 2, 7, 1]  # batches of 16, 16 and 8
    torch.testing.assert_close(parts.embeddings, whole.embeddings, rtol=1e-6, atol=1e-6)
    assert torch.equal(parts.predictions, whole.predictions) and torch.equal(parts.labels, whole.labels)
