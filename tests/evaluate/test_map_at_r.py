"""MAP@R and R-precision (Musgrave, Belongie and Lim, ECCV 2020) from the one ranking of
``retrieval_metrics``: against a plain-Python computation and hand-computed cases, and named in
``eval.metrics`` through to runs.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from tiny_sweeps import experiment, run_cli

from pooling_lab import evaluate
from pooling_lab.evaluate import retrieval
from pooling_lab.experiment import EvalConfig


def brute_force_r_metrics(similarity: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean R-precision and MAP@R over the queries with R > 0 relevant others, each query
    ranking all the others by similarity (ties by index); plain Python."""
    r_precisions, maps_at_r = [], []
    for q in range(len(labels)):
        others = sorted((i for i in range(len(labels)) if i != q), key=lambda i: (-similarity[q, i], i))
        relevant = [labels[i] == labels[q] for i in others]
        r = sum(relevant)
        if r == 0:
            continue
        r_precisions.append(sum(relevant[:r]) / r)
        precision_at = [sum(relevant[: i + 1]) / (i + 1) for i in range(r)]
        maps_at_r.append(sum(p for p, rel in zip(precision_at, relevant[:r], strict=True) if rel) / r)
    return float(np.mean(r_precisions)), float(np.mean(maps_at_r))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_map_at_r_and_r_precision_match_brute_force(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "CPU_CHUNK_ELEMENTS", 6 * 45)  # chunks of 6 queries: classes split
    rng = np.random.default_rng(seed)
    # 45 items drawn from 7 distinct vectors: exactly equal similarities are common
    embeddings = rng.normal(size=(7, 4))[rng.integers(0, 7, size=45)]
    # classes of 20, 12, 8, 3 and 1 items (the class of one has nothing to find), shuffled
    labels = rng.permutation(np.repeat([0, 1, 2, 3, 4], [20, 12, 8, 4, 1]))
    unit = torch.nn.functional.normalize(torch.tensor(embeddings), dim=1)
    similarity = np.round((unit @ unit.T).numpy() / retrieval.TIE_RESOLUTION)
    expected_r_precision, expected_map_at_r = brute_force_r_metrics(similarity, labels)
    got = evaluate.retrieval_metrics(torch.tensor(embeddings), torch.tensor(labels))
    assert got["r_precision"] == pytest.approx(expected_r_precision, abs=1e-12)
    assert got["map@r"] == pytest.approx(expected_map_at_r, abs=1e-12)


def test_hand_computed_ranking_by_index() -> None:
    """All embeddings equal: every similarity ties, so each query ranks the others by index.
    Labels 0 1 0 0 1 2 (item 5 alone in its class, left out):
      query 0: others 1 2 3 4 5 -> relevant . x x . .  R=2: R-precision 1/2, MAP@R (1/2)(1/2)
      query 1: others 0 2 3 4 5 -> . . . x .          R=1: 0, 0
      query 2: others 0 1 3 4 5 -> x . x . .          R=2: 1/2, (1/2)(1/1)
      query 3: others 0 1 2 4 5 -> x . x . .          R=2: 1/2, 1/2
      query 4: others 0 1 2 3 5 -> . x . . .          R=1: 0, 0
    """
    labels = torch.tensor([0, 1, 0, 0, 1, 2])
    got = evaluate.retrieval_metrics(torch.ones(6, 3), labels)
    assert got["r_precision"] == pytest.approx((0.5 + 0 + 0.5 + 0.5 + 0) / 5)
    assert got["map@r"] == pytest.approx((0.25 + 0 + 0.5 + 0.5 + 0) / 5)


def test_hand_computed_ranking_by_angle() -> None:
    """Unit vectors at 0, 10, 25 and 45 degrees with labels 0 0 1 0 (item 2 alone, left out):
      query 0: ranks 1 2 3 -> x . x   R=2: R-precision 1/2, MAP@R (1/2)(1 + 0) = 1/2, AP 5/6
      query 1: ranks 0 2 3 -> x . x   the same
      query 3: ranks 2 1 0 -> . x x   R=2: R-precision 1/2, MAP@R (1/2)(1/2), AP (1/2)(1/2 + 2/3)
    """
    angles = torch.deg2rad(torch.tensor([0.0, 10.0, 25.0, 45.0]))
    embeddings = torch.stack([angles.cos(), angles.sin()], dim=1)
    got = evaluate.retrieval_metrics(embeddings, torch.tensor([0, 0, 1, 0]))
    assert got["r_precision"] == pytest.approx(0.5)
    assert got["map@r"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert got["map"] == pytest.approx((5 / 6 + 5 / 6 + 7 / 12) / 3)


def test_perfect_and_empty_rankings() -> None:
    labels = torch.arange(30) % 3
    embeddings = torch.nn.functional.one_hot(labels, 3).float() + 0.01 * torch.randn(30, 3)
    got = evaluate.retrieval_metrics(embeddings, labels)
    assert got["map@r"] == pytest.approx(1.0) and got["r_precision"] == pytest.approx(1.0)
    alone = evaluate.retrieval_metrics(torch.randn(3, 2), torch.arange(3))
    assert np.isnan(alone["map@r"]) and np.isnan(alone["r_precision"])


def test_eval_metrics_accept_map_at_r_and_r_precision() -> None:
    chosen = EvalConfig(metrics=["accuracy", "map@r", "r_precision"]).metrics
    assert chosen == ["accuracy", "map@r", "r_precision"]
    for wrong in ("map@R", "r-precision", "map@1"):
        with pytest.raises(ValidationError):
            EvalConfig(metrics=["accuracy", wrong])


def test_split_metrics_pass_map_at_r_and_r_precision_through() -> None:
    torch.manual_seed(0)
    embeddings, labels = torch.randn(40, 5), torch.arange(40) % 4
    outputs = evaluate.Outputs(labels.clone(), embeddings, labels)
    got = evaluate.split_metrics(outputs, ["accuracy", "r_precision", "map@r"])
    expected = evaluate.retrieval_metrics(embeddings, labels)
    assert got == {"accuracy": 1.0, "r_precision": expected["r_precision"], "map@r": expected["map@r"]}


def test_runs_record_map_at_r_and_r_precision(tmp_path: Path) -> None:
    metrics = ["accuracy", "map", "map@r", "r_precision", "recall@1"]
    path = experiment(tmp_path, train={"epochs": 1}, eval={"metrics": metrics, "probe_p": [2, 4]})
    result = run_cli("run", path, "--out", tmp_path / "results", "-q")
    assert result.exit_code == 0, result.output
    root = tmp_path / "results" / "tiny"
    runs = pd.read_csv(root / "runs.csv")
    for column in ("test_map@r", "test_r_precision", "val_map@r", "test_map@r_at_p_opt"):
        assert 0 <= runs.loc[0, column] <= 1, column
    run_dir = root / runs.loc[0, "run_dir"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["test_map@r"] == runs.loc[0, "test_map@r"]
    assert status["test_r_precision"] <= 1 and status["test_map@r"] <= status["test_r_precision"]
    probed = pd.read_csv(run_dir / "probe.csv")
    assert set(metrics) <= set(probed.columns) and probed["map@r"].between(0, 1).all()
    shown = run_cli("status", root, "--json")
    assert shown.exit_code == 0, shown.output
