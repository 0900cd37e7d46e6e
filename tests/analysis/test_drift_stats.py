"""The regret and log drift in ``pooling-lab stats``: intervals against an independent bootstrap,
infinite values kept, and results recorded before the probe said them (the committed reference
study) still loading, analysed from their probe tables and plotted."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pooling_lab import results
from pooling_lab.analysis import stats
from pooling_lab.analysis.drift import FROM_TABLE, with_probe_summary
from pooling_lab.analysis.plots import plot_results

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference" / "p_drift_fmnist"


def independent_bootstrap(values: np.ndarray, resamples: int = 40000) -> tuple[float, float]:
    """A percentile bootstrap of the mean written apart from ``stats``: its own generator, draws
    by index."""
    rng = np.random.Generator(np.random.PCG64(12345))
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_regret_intervals_match_an_independent_bootstrap(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    margins, seeds = [0.0, 0.2, 0.4], range(6)
    regret = {m: rng.gamma(2.0, 0.01 * (1 + 5 * m), size=len(seeds)) for m in margins}
    runs = pd.DataFrame([
        {"run_id": f"{m}-{s}", "head.margin": m, "seed": s, "status": "done", "p_final": 10.0 + m, "p_opt": 16.0,
         "regret": regret[m][s], "log_drift": math.log((10.0 + m) / 16.0)}
        for m in margins for s in seeds
    ])
    empty = pd.DataFrame()
    stats.write_reports(results.Results(tmp_path, {}, ["head.margin"], runs, empty, empty, empty, empty, empty))
    table = pd.read_csv(tmp_path / "drift.csv").set_index("head.margin")
    for m in margins:
        low, high = independent_bootstrap(regret[m])
        spread = regret[m].max() - regret[m].min()
        assert table.loc[m, "regret"] == pytest.approx(regret[m].mean())
        assert table.loc[m, "regret_low"] == pytest.approx(low, abs=0.02 * spread)
        assert table.loc[m, "regret_high"] == pytest.approx(high, abs=0.02 * spread)
    markdown = (tmp_path / "drift.md").read_text()
    correlation = stats.spearman_test(runs["head.margin"].to_numpy(), runs["regret"].to_numpy())
    assert f"- regret (val mAP) (18 runs): rho = {correlation.rho:.3f}" in markdown
    assert "- log drift (18 runs): rho = 1.000" in markdown  # the learned p rises with the margin, p_opt stays


def test_infinite_values_are_kept_in_a_mean_and_its_interval() -> None:
    interval = stats.bootstrap_mean(np.array([1.0, np.inf, np.inf, np.nan]))
    # three values (NaN left out): all three draws are 1.0 with chance 1/27 > 2.5%
    assert (interval.estimate, interval.low, interval.high) == (np.inf, 1.0, np.inf)
    assert stats.spearman_test(np.array([0.0, 0.5, 1.0, 1.5]), np.array([-np.inf, -1.0, 0.0, 2.0])).rho == 1.0


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    """A copy of the committed p-drift study, recorded before the probe measured inf and the
    learned p: no on_grid column, no regret in its runs."""
    return Path(shutil.copytree(REFERENCE, tmp_path / "reference", ignore=shutil.ignore_patterns("plots", "figures")))


def hand_summary(probe: pd.DataFrame, p_final: float, val_map: float, tolerance: float = 0.005) -> dict[str, float]:
    """What the probe table and the recorded validation mAP at the learned p say, by hand."""
    points = dict(zip(probe["p"], probe["map"], strict=True)) | {p_final: val_map}
    best = max(points.values())
    return {"regret": best - val_map, "p_plateau": min(p for p, v in points.items() if v >= best - tolerance)}


def test_results_recorded_before_the_new_columns_load_analyse_and_plot(reference: Path) -> None:
    loaded = results.load(reference)
    assert "regret" not in loaded.runs and set(loaded.runs[results.PROTOCOL]) == {"closed"}
    summarised = with_probe_summary(loaded.runs, loaded.probe, loaded.configs).set_index("run_id")
    assert summarised[FROM_TABLE].all()
    for run_id, rows in loaded.probe.groupby("run_id"):
        run = summarised.loc[run_id]
        expected = hand_summary(rows, run["p_final"], run["val_map"])
        assert run["regret"] == pytest.approx(expected["regret"], abs=1e-12) and run["regret"] > 0
        assert run["p_plateau"] == expected["p_plateau"]
        assert run["p_opt_at_edge"] == float(run["p_opt"] in (1.0, 64.0))  # no inf in these grids
        assert run["log_drift"] == pytest.approx(math.log(run["p_final"] / run["p_opt"]))
    written = stats.write_reports(loaded)
    table = pd.read_csv(reference / "drift.csv").set_index("head.margin")
    by_margin = summarised.groupby("head.margin")["regret"].mean()
    assert table["regret"].to_numpy() == pytest.approx(by_margin.to_numpy())
    assert "18 of 18 runs were probed before" in (reference / "drift.md").read_text()
    assert [path.name for path in written] == ["drift.csv", "drift.md"]
    drawn = plot_results(loaded.runs, loaded.metrics, loaded.params, loaded.swept, reference / "plots",
                         probe=loaded.probe, configs=loaded.configs)
    assert {path.stem for path in drawn} >= {"p_drift", "regret", "probe_curves"}
