"""Retrieval metrics against a brute-force computation, and the probe against the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pooling_lab import evaluate
from pooling_lab.data import BatchLoader, Split, load_data
from pooling_lab.evaluate import retrieval
from pooling_lab.experiment import ExperimentConfig, RunSpec
from pooling_lab.models import build_model
from pooling_lab.results import RunFiles
from pooling_lab.train.loop import SilentProgress, Trainer

from .tiny_model import LEARNED_P, batches_of, tiny_model


def brute_force_ap(similarity: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[list[bool]]]:
    """Per query: AP over the ranking of all others (ties broken by index), and the relevance
    list in ranked order; plain Python over a given similarity matrix."""
    aps, rankings = [], []
    for q in range(len(labels)):
        others = [i for i in range(len(labels)) if i != q]
        scored = sorted(others, key=lambda i: (-similarity[q, i], i))
        relevant = [bool(labels[i] == labels[q]) for i in scored]
        rankings.append(relevant)
        if not any(relevant):
            aps.append(float("nan"))
            continue
        hits, precisions = 0, []
        for rank, rel in enumerate(relevant, start=1):
            if rel:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / hits)
    return aps, rankings


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_and_recall_match_brute_force(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "CPU_CHUNK_ELEMENTS", 7 * 40)  # chunks of 7 queries: classes split
    rng = np.random.default_rng(seed)
    # 40 items drawn from 6 distinct vectors: exactly equal similarities are common
    embeddings = rng.normal(size=(6, 3))[rng.integers(0, 6, size=40)]
    labels = rng.integers(0, 5, size=40)
    labels[0] = 9  # a class of one: that query has nothing to find and is left out
    # the ranking and AP logic is under test, so the similarities come from the same normalisation
    unit = torch.nn.functional.normalize(torch.tensor(embeddings), dim=1)
    similarity = np.round((unit @ unit.T).numpy() / retrieval.TIE_RESOLUTION)
    aps, rankings = brute_force_ap(similarity, labels)
    expected_map = np.nanmean(aps)
    tensors = torch.tensor(embeddings), torch.tensor(labels)
    assert evaluate.retrieval_map(*tensors) == pytest.approx(expected_map, abs=1e-12)
    for k in (1, 3, 10):
        valid = [r for r in rankings if any(r)]
        expected = np.mean([any(r[:k]) for r in valid])
        assert evaluate.recall_at_k(*tensors, k) == pytest.approx(expected, abs=1e-12)


def test_perfect_embedding_scores_one() -> None:
    labels = torch.arange(30) % 3
    embeddings = torch.nn.functional.one_hot(labels, 3).float() + 0.01 * torch.randn(30, 3)
    assert evaluate.retrieval_map(embeddings, labels) == pytest.approx(1.0)
    assert evaluate.recall_at_k(embeddings, labels, 1) == pytest.approx(1.0)


def test_best_p_prefers_map_then_smaller_p() -> None:
    import pandas as pd

    table = pd.DataFrame({"p": [4.0, 1.0, 2.0], "accuracy": [0.9, 0.1, 0.2], "map": [0.5, 0.3, 0.5]})
    assert evaluate.best_p(table) == 2.0
    assert evaluate.best_p(table.drop(columns="map")) == 4.0


def test_probe_at_the_learned_p_reproduces_the_evaluation() -> None:
    model = tiny_model()
    images = torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8)
    batches = batches_of(images, torch.arange(50) % 4)
    metrics = ["accuracy", "map", "recall@1"]
    own = evaluate.split_metrics(evaluate.SplitPass(model, batches).outputs(), metrics)
    table = evaluate.probe(evaluate.SplitPass(model, batches, keep_maps=True), [1.0, LEARNED_P, 8.0], metrics)
    at_learned = table.set_index("p").loc[LEARNED_P]
    for metric in metrics:
        assert at_learned[metric] == pytest.approx(own[metric], abs=1e-6)
    assert not np.isclose(table.set_index("p").loc[1.0, "map"], own["map"])


def test_multi_scale_combines_normalised_descriptors() -> None:
    torch.manual_seed(1)
    config = ExperimentConfig.model_validate({
        "name": "t", "data": {"dataset": "synthetic"},
        "model": {"backbone": {"name": "small_cnn", "width": 8, "depth": 2}, "pool": {"name": "gem"}},
        "head": {"name": "cosine"},
    })
    model = build_model(config, in_channels=3, num_classes=4)
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    batches = BatchLoader(Split(images, torch.arange(12) % 4), 5, device=torch.device("cpu"),
                          mean=(0.5,) * 3, std=(0.25,) * 3)
    single = {s: evaluate.SplitPass(model, batches, scales=[s]).outputs().embeddings for s in (1.0, 0.5)}
    both = evaluate.SplitPass(model, batches, scales=[1.0, 0.5], combine="mean").outputs().embeddings
    unit = {s: torch.nn.functional.normalize(e, dim=1) for s, e in single.items()}
    torch.testing.assert_close(both, (unit[1.0] + unit[0.5]) / 2)
    largest = evaluate.SplitPass(model, batches, scales=[1.0, 0.5], combine="max").outputs().embeddings
    torch.testing.assert_close(largest, torch.maximum(unit[1.0], unit[0.5]))


def _untrained_run(root: Path, scales: list[float], combine: str = "mean") -> Trainer:
    """A run of a tiny model, not trained, whose final evaluation uses ``eval.scales``."""
    config = ExperimentConfig.model_validate({
        "name": "t",
        "data": {"dataset": "synthetic", "val_size": 0.1,
                 "synthetic": {"image_size": 16, "cell_size": 4, "num_classes": 4, "train_size": 200, "test_size": 60}},
        "model": {"backbone": {"name": "small_cnn", "width": 8, "depth": 2}, "pool": {"name": "gem"}},
        "head": {"name": "cosine"},
        "eval": {"metrics": ["accuracy", "map"], "scales": scales, "scale_combine": combine},
    })
    files = RunFiles(root)
    root.mkdir()
    return Trainer(RunSpec(config, {}, "id", root.name), files, load_data(config.data), SilentProgress())


def test_final_evaluation_uses_the_configured_scales(tmp_path: Path) -> None:
    run = _untrained_run(tmp_path / "multi", [1.0, 0.5])
    final = run.finish()
    # independently: each test image's descriptor at full and half size, L2-normalised, averaged
    model = run.model.eval()
    descriptors, labels = [], []
    with torch.no_grad():
        for images, batch_labels in run.eval_batches.test:
            half = torch.nn.functional.interpolate(images, scale_factor=0.5, mode="bilinear", antialias=True)
            unit = [torch.nn.functional.normalize(model.embedding(model.pool(model.backbone(x))), dim=1)
                    for x in (images, half)]
            descriptors.append((unit[0] + unit[1]) / 2)
            labels.append(batch_labels)
    descriptors, labels = torch.cat(descriptors), torch.cat(labels)
    assert final["test_map"] == pytest.approx(evaluate.retrieval_map(descriptors, labels), abs=1e-6)
    assert final["test_accuracy"] == pytest.approx((model.head(descriptors).argmax(1) == labels).float().mean().item())
    single = _untrained_run(tmp_path / "single", [1.0]).finish()
    assert abs(single["test_map"] - final["test_map"]) > 1e-3
    largest = _untrained_run(tmp_path / "max", [1.0, 0.5], combine="max").finish()
    assert abs(largest["test_map"] - final["test_map"]) > 1e-4
