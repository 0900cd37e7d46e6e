"""The probe grid always holds p = inf (max pooling) and the learned p; p_opt, its plateau, the
edge flag, the regret and the log drift against hand-computed tables; inf through probe.csv and
``results.load``; the open-set evaluation takes each metric from the right images."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from pooling_lab import evaluate, results
from pooling_lab.data import BatchLoader, DataSplits, Split
from pooling_lab.evaluate import EvalBatches, evaluate_trained, retrieval_map
from pooling_lab.evaluate.probe import ON_GRID, probe, probe_points, probe_summary
from pooling_lab.experiment import EvalConfig

from .tiny_model import LEARNED_P, batches_of, tiny_model

INF = math.inf


def test_the_grid_always_holds_inf_and_the_learned_p() -> None:
    assert probe_points([1, 2, 4], 3.3) == [(1.0, True), (2.0, True), (3.3, False), (4.0, True), (INF, True)]
    assert probe_points([1, 2, 4], 2.0) == [(1.0, True), (2.0, True), (4.0, True), (INF, True)]
    assert probe_points([4, 1], math.nan) == [(1.0, True), (4.0, True), (INF, True)]  # a pool without p
    assert probe_points([1, 2], 80.0)[-2:] == [(80.0, False), (INF, True)]


def table(scores: dict[float, float]) -> pd.DataFrame:
    return pd.DataFrame({"p": list(scores), "map": list(scores.values())})


# (probe scores, learned p, tolerance) -> p_opt, p_plateau, at edge, regret; worked out by hand
CASES = [
    # best at the largest finite p; 4 is within 0.005 of it; the learned p (3) scores 0.75
    ({1: 0.5, 2: 0.7, 3: 0.75, 4: 0.796, 8: 0.8, INF: 0.79}, 3.0, 0.005, (8.0, 4.0, True, 0.05)),
    # best inside the grid: no edge; tolerance 0 makes the plateau p_opt itself
    ({1: 0.5, 2: 0.8, 2.5: 0.78, 4: 0.81, 8: 0.6, INF: 0.55}, 2.5, 0.0, (4.0, 4.0, False, 0.03)),
    # best at inf: max pooling; the plateau starts at 8
    ({1: 0.5, 8: 0.898, 11.7: 0.85, 16: 0.899, INF: 0.9}, 11.7, 0.005, (INF, 8.0, True, 0.05)),
    # best at the smallest p, a tie with 2 goes to the smaller p; the learned p is the best itself
    ({1: 0.9, 2: 0.9, 4: 0.7, INF: 0.1}, 1.0, 0.005, (1.0, 1.0, True, 0.0)),
]


@pytest.mark.parametrize(("scores", "learned", "tolerance", "expected"), CASES)
def test_probe_summary_matches_hand_computed_tables(scores, learned, tolerance, expected) -> None:
    summary = probe_summary(table(scores), learned, tolerance)
    p_opt, plateau, edge, regret = expected
    assert summary["p_opt"] == p_opt and summary["p_plateau"] == plateau
    assert summary["p_opt_at_edge"] is edge
    assert summary["regret"] == pytest.approx(regret, abs=1e-12)
    assert summary["log_drift"] == (math.log(learned) - math.log(p_opt) if p_opt < INF else -INF)
    assert summary["log_drift_plateau"] == pytest.approx(math.log(learned) - math.log(plateau))


def test_without_a_row_at_the_learned_p_there_is_no_regret() -> None:
    summary = probe_summary(table({1: 0.5, 2: 0.6}), 1.5, 0.005)
    assert summary["p_opt"] == 2.0 and math.isnan(summary["regret"])
    assert math.isnan(probe_summary(table({1: 0.5}), math.nan, 0.005)["log_drift"])


def embeddings_with(model, batches: BatchLoader, pool) -> torch.Tensor:
    """Independently of the evaluation code: backbone, the given pool, the embedding."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.embedding(pool(model.backbone(images))) for images, _ in batches])


def test_the_probe_measures_max_pooling_at_inf_and_the_learned_p_off_the_grid() -> None:
    model = tiny_model()
    images = torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8)
    batches = batches_of(images, torch.arange(50) % 4)
    probed = probe(evaluate.SplitPass(model, batches, keep_maps=True), [1.0, 8.0], ["accuracy", "map"], learned=LEARNED_P)
    assert list(probed["p"]) == [1.0, LEARNED_P, 8.0, INF]
    assert list(probed[ON_GRID]) == [True, False, True, True]
    labels = torch.arange(50) % 4
    at_inf = retrieval_map(embeddings_with(model, batches, lambda x: x.amax(dim=(2, 3))), labels)
    assert probed.set_index("p").loc[INF, "map"] == pytest.approx(at_inf, abs=1e-9)
    own = evaluate.split_metrics(evaluate.SplitPass(model, batches).outputs(), ["accuracy", "map"])
    assert probed.set_index("p").loc[LEARNED_P, "map"] == pytest.approx(own["map"], abs=1e-6)


def test_inf_round_trips_through_probe_csv_and_results_load(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    results.write_yaml(root / results.EXPERIMENT_FILE, {"name": "sweep"})
    results.write_csv(root / results.RUNS_FILE, pd.DataFrame({"run_id": ["a"], "run_dir": ["a"], "status": ["done"]}))
    recorded = pd.DataFrame({"p": [1.0, 2.4380033016204834, INF], "map": [0.1, 0.2, 0.3], ON_GRID: [True, False, True]})
    results.write_csv(root / "a" / "probe.csv", recorded)
    results.update_status(results.RunFiles(root / "a"), status="done", p_opt=INF, log_drift=-INF, p_opt_at_edge=True)
    loaded = results.load(root)
    pd.testing.assert_frame_equal(loaded.probe.drop(columns="run_id"), recorded)
    run = loaded.runs.iloc[0]
    assert run["p_opt"] == INF and run["log_drift"] == -INF and run["p_opt_at_edge"] == 1
    assert run[results.PROTOCOL] == "closed"  # a run that does not say is closed-set


def test_the_open_set_evaluation_takes_accuracy_from_seen_and_retrieval_from_unseen_images() -> None:
    model = tiny_model(1)
    seen = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8), torch.arange(40) % 4
    unseen = torch.randint(0, 256, (30, 3, 16, 16), dtype=torch.uint8), 4 + torch.arange(30) % 3
    unseen_val = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8), 4 + torch.arange(24) % 3
    batches = EvalBatches(val=batches_of(*seen), test=batches_of(*seen), unseen_val=batches_of(*unseen_val),
                          unseen_test=batches_of(*unseen))
    final = evaluate_trained(model, batches, EvalConfig(metrics=["accuracy", "map"]), [2.0, 6.0])
    model.eval()
    with torch.no_grad():
        logits = model.head(embeddings_with(model, batches.test, model.pool))
    assert final.metrics["test_accuracy"] == pytest.approx((logits.argmax(1) == seen[1]).float().mean().item())
    assert final.metrics["test_map"] == pytest.approx(
        retrieval_map(embeddings_with(model, batches.unseen_test, model.pool), unseen[1]), abs=1e-9)
    assert final.metrics["val_map"] == pytest.approx(
        retrieval_map(embeddings_with(model, batches.unseen_val, model.pool), unseen_val[1]), abs=1e-9)
    assert list(final.probe.columns) == ["p", "map", ON_GRID]  # the head has no unseen class to be accurate on
    assert list(final.probe["p"]) == [2.0, pytest.approx(LEARNED_P), 6.0, INF]
    expected = probe_summary(final.probe, final.probe["p"][1], 0.005)
    assert {key: final.metrics[key] for key in expected} == expected


def test_eval_batches_of_an_open_set_hold_the_unseen_splits() -> None:
    split = Split(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4) % 2)
    unseen = Split(torch.ones(6, 1, 8, 8, dtype=torch.uint8), 2 + torch.arange(6) % 2)
    data = DataSplits(split, split, split, 2, ["a", "b"], (0.5,), (0.2,), unseen_val=unseen, unseen_test=unseen)
    batches = EvalBatches.of(data, 4, torch.device("cpu"), channels_last=False)
    assert sum(len(labels) for _, labels in batches.unseen_test) == 6
    closed = EvalBatches.of(DataSplits(split, None, split, 2, ["a", "b"], (0.5,), (0.2,)), 4, torch.device("cpu"), False)
    assert closed.val is None and closed.unseen_val is None and closed.unseen_test is None


def test_status_json_writes_infinite_values_as_text() -> None:
    from pooling_lab.run.status import Overview

    view = Overview("x", Path("x"), [], [{"p_opt": INF, "log_drift": -INF, "regret": math.nan, "p_final": 3.5}])
    assert view.as_json()["runs"] == [{"p_opt": "inf", "log_drift": "-inf", "regret": None, "p_final": 3.5}]
