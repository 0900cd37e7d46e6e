"""Drift statistics on inputs with a known answer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pooling_lab.analysis import stats


def test_perfectly_monotone_gives_rho_one() -> None:
    x = np.linspace(0, 0.5, 12)
    result = stats.spearman_test(x, np.exp(3 * x))
    assert result.rho == pytest.approx(1.0)
    assert result.low == pytest.approx(1.0) and result.high == pytest.approx(1.0)
    # every permutation but the identity has a smaller rho: p = (1 + hits) / (1 + resamples)
    assert result.p_value < 0.01


def test_decreasing_gives_rho_minus_one() -> None:
    x = np.arange(8.0)
    assert stats.spearman_test(x, -x).rho == pytest.approx(-1.0)


def test_shuffled_interval_covers_zero() -> None:
    rng = np.random.default_rng(7)
    x = np.repeat(np.linspace(0, 0.5, 6), 3)
    y = rng.normal(size=x.size)
    result = stats.spearman_test(x, y)
    assert result.low < 0 < result.high
    assert result.p_value > 0.05


def test_spearman_matches_pearson_of_average_ranks() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=30).astype(float)  # many ties
    y = rng.normal(size=30)
    rx = pd.Series(x).rank(method="average").to_numpy()
    ry = pd.Series(y).rank(method="average").to_numpy()
    assert stats.spearman(x, y)[0] == pytest.approx(np.corrcoef(rx, ry)[0, 1])


def test_bootstrap_mean_interval_brackets_the_mean_and_is_seeded() -> None:
    values = np.array([2.0, 3.0, 7.0])
    first = stats.bootstrap_mean(values, seed=1)
    assert first.estimate == pytest.approx(4.0)
    assert 2.0 <= first.low <= 4.0 <= first.high <= 7.0
    assert first == stats.bootstrap_mean(values, seed=1)
    constant = stats.bootstrap_mean(np.array([5.0, 5.0, 5.0]))
    assert (constant.low, constant.high) == (5.0, 5.0)


def test_drift_table_groups_by_swept_value() -> None:
    runs = pd.DataFrame({
        "run_id": list("abcdef"),
        "head.margin": [0.0, 0.0, 0.0, 0.5, 0.5, 0.5],
        "seed": [0, 1, 2, 0, 1, 2],
        "status": ["done"] * 5 + ["diverged"],
        "p_final": [3.0, 3.2, 3.4, 1.0, 1.2, np.nan],
        "p_opt": [4.0, 4.0, 4.0, 4.0, np.inf, 4.0],
        "regret": [0.01, 0.02, 0.03, 0.0, 0.1, 0.5],
        "log_drift": np.log([3.0, 3.2, 3.4, 1.0, 1.2, 1.0]) - np.log([4.0, 4.0, 4.0, 4.0, np.inf, 4.0]),
        "p_opt_at_edge": [False, False, True, False, True, False],
    })
    table = stats.drift_table(runs, "head.margin").set_index("head.margin")
    assert table.loc[0.0, "seeds"] == 3 and table.loc[0.5, "seeds"] == 2  # the diverged run is left out
    assert table.loc[0.0, "regret"] == pytest.approx(0.02)
    assert table.loc[0.0, "log_drift"] == pytest.approx(np.mean(np.log([3.0, 3.2, 3.4]) - np.log(4.0)))
    assert table.loc[0.5, "log_drift"] == -np.inf and table.loc[0.5, "p_opt"] == np.inf  # kept, not dropped
    assert table.loc[0.5, "log_drift_high"] == pytest.approx(np.log(1 / 4))  # the resamples that draw run d twice
    assert table.loc[0.0, "regret_low"] <= 0.02 <= table.loc[0.0, "regret_high"]
    assert table["p_opt_at_edge"].tolist() == [1, 1]


def _results_with_configs(runs: pd.DataFrame, configs: pd.DataFrame, swept: list[str]):
    from pooling_lab.results import Results

    empty = pd.DataFrame()
    return Results(Path("."), {}, swept, runs, empty, empty, empty, empty, configs)


def test_fixed_p_curve_finds_the_train_time_optimum_per_margin() -> None:
    p_values, margins, seeds = [1.0, 3.0, 6.0], [0.0, 0.3], [0, 1]
    rows, configs = [], []
    for p in p_values:
        for margin in margins:
            for seed in seeds:
                run_id = f"p{p}-m{margin}-s{seed}"
                # best p is 3 at margin 0 and 6 at margin 0.3
                best = 3.0 if margin == 0.0 else 6.0
                rows.append({"run_id": run_id, "model.pool.p": p, "head.margin": margin, "seed": seed,
                             "status": "done", "test_map": 0.9 - 0.01 * abs(p - best) + 0.001 * seed,
                             "test_accuracy": 0.8})
                configs.append({"run_id": run_id, "model.pool.name": "gem", "model.pool.learnable": False,
                                "model.pool.p": p})
    learned = {"run_id": "learned", "model.pool.p": 3.0, "head.margin": 0.0, "seed": 0, "status": "done",
               "test_map": 0.99, "test_accuracy": 0.9}
    runs = pd.DataFrame([*rows, learned])
    configs = pd.DataFrame([*configs, {"run_id": "learned", "model.pool.name": "gem",
                                       "model.pool.learnable": True, "model.pool.p": 3.0}])
    curve = stats.fixed_p_curve(_results_with_configs(runs, configs, ["model.pool.p", "head.margin"]))
    assert len(curve) == len(p_values) * len(margins)  # the learnable run is not part of the curve
    assert set(curve["seeds"]) == {2}
    best = curve[curve["best"]].set_index("head.margin")["p"]
    assert best.to_dict() == {0.0: 3.0, 0.3: 6.0}
    row = curve[(curve["p"] == 1.0) & (curve["head.margin"] == 0.3)].iloc[0]
    assert row["test_map"] == pytest.approx(0.9 - 0.05 + 0.0005)


def test_accuracy_optimum_is_read_from_the_probe_curves() -> None:
    runs = pd.DataFrame({"run_id": ["a", "b", "c"]})
    probe = pd.DataFrame({
        "run_id": ["a"] * 3 + ["b"] * 3,
        "p": [1.0, 8.0, 64.0] * 2,
        "accuracy": [0.2, 0.9, 0.8, 0.5, 0.7, 0.7],  # b: a tie goes to the smaller p
        "map": [0.1, 0.2, 0.3, 0.1, 0.2, 0.3],
    })
    optima = stats.with_accuracy_optimum(runs, probe).set_index("run_id")["p_opt_accuracy"]
    assert optima["a"] == 8.0 and optima["b"] == 8.0 and np.isnan(optima["c"])


def _probed_results(path: Path) -> stats.results.Results:
    """Six probed runs of a margin sweep (two margins, three seeds), written nowhere yet."""
    runs = pd.DataFrame({
        "run_id": list("abcdef"),
        "head.margin": [0.0, 0.0, 0.0, 0.5, 0.5, 0.5],
        "seed": [0, 1, 2, 0, 1, 2],
        "status": ["done"] * 6,
        "p_final": [3.0, 3.2, 3.4, 1.0, 1.2, 1.4],
        "p_opt": [4.0, 4.0, 4.0, 4.0, 5.0, 4.0],
        "regret": [0.01, 0.02, 0.0, 0.0, 0.04, 0.0],
        "log_drift": np.log([3.0, 3.2, 3.4, 1.0, 1.2, 1.4]) - np.log([4.0, 4.0, 4.0, 4.0, 5.0, 4.0]),
        "test_map": [0.5, 0.6, 0.7, 0.5, 0.6, 0.7],
        "test_map_at_p_opt": [0.6, 0.6, 0.8, 0.5, 0.7, 0.7],
    })
    empty = pd.DataFrame()
    return stats.results.Results(path, {}, ["head.margin"], runs, empty, empty, empty, empty, empty)


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row: split at pipes that are not escaped."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def _assert_well_formed_table(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    separator = _cells(rows[1])
    assert set(separator) == {"---"}
    for row in rows:
        assert len(_cells(row)) == len(separator), row
    return [_cells(row) for row in rows]


def test_markdown_tables_have_as_many_cells_in_every_row_as_the_separator(tmp_path: Path) -> None:
    stats.write_reports(_probed_results(tmp_path))
    header, *_ = _assert_well_formed_table((tmp_path / "drift.md").read_text())
    assert [cell.strip() for cell in header[:6]] == ["head.margin", "seeds", "regret (val mAP)", "log drift",
                                                     "learned p", "p_opt (val mAP)"]
    curve = pd.DataFrame({"head.margin": [0.0], "p": [3.0], "seeds": [2], "best": [True], "test_map": [0.5],
                          "test_map_low": [0.4], "test_map_high": [0.6]})
    _assert_well_formed_table(stats.fixed_p_markdown(curve, ["head.margin"]))


def test_grouping_by_another_key_writes_beside_the_default_report(tmp_path: Path) -> None:
    loaded = _probed_results(tmp_path)
    default = stats.write_reports(loaded)
    assert [path.name for path in default] == ["drift.csv", "drift.md"]
    recorded = {path: path.read_bytes() for path in default}
    by_seed = stats.write_reports(loaded, "seed")
    assert [path.name for path in by_seed] == ["drift_by_seed.csv", "drift_by_seed.md"]
    assert {path: path.read_bytes() for path in default} == recorded
    assert list(pd.read_csv(tmp_path / "drift_by_seed.csv")["seed"]) == [0, 1, 2]
    assert (tmp_path / "drift_by_seed.md").read_text().startswith("# p drift by seed")
    assert [path.name for path in stats.write_reports(loaded, "head.margin")] == ["drift.csv", "drift.md"]
    assert {path: path.read_bytes() for path in default} == recorded
