"""`pooling-lab probe RUN`: a re-probe never destroys the recorded probe, warns when the learned
p lies outside its grid, replaces the record only with --replace, and probes at the run's
test-time scales."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_sweeps import experiment, run_cli

from pooling_lab.evaluate import best_p, reprobe
from pooling_lab.evaluate.probe import probe_summary

SCALES = ([1.0], [1.0, 0.5])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two one-epoch runs probed at p = 1, 2 (the learned p ends above 2), at one and two scales."""
    root = tmp_path_factory.mktemp("reprobe")
    path = experiment(root, train={"epochs": 1}, eval={"probe_p": [1, 2]},
                      sweep={"grid": {"eval.scales": list(SCALES)}})
    result = run_cli("run", path, "--out", root / "results", "-q")
    assert result.exit_code == 0, result.output
    return root / "results" / "tiny"


@pytest.fixture
def results_dir(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished experiment for one test to change."""
    return Path(shutil.copytree(finished, tmp_path / "tiny"))


def run_at(root: Path, scales: list[float]) -> Path:
    return next(path.parent for path in root.glob("*/config.yaml")
                if yaml.safe_load(path.read_text())["eval"]["scales"] == scales)


def status_of(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def runs_row(root: Path, run: Path) -> pd.Series:
    return pd.read_csv(root / "runs.csv").set_index("run_dir").loc[run.name]


def recorded(root: Path, run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (run / "probe.csv", run / "status.json", root / "runs.csv")}


def test_a_default_reprobe_uses_the_runs_grid_and_writes_beside_the_recorded_probe(results_dir: Path) -> None:
    run = run_at(results_dir, [1.0])
    before = recorded(results_dir, run)
    result = run_cli("probe", run)
    assert result.exit_code == 0, result.output
    assert recorded(results_dir, run) == before
    again = pd.read_csv(run / "probe_1,2.csv")
    assert list(again["p"]) == [1.0, 2.0, status_of(run)["p_final"], math.inf]  # inf and the learned p always
    pd.testing.assert_frame_equal(again, pd.read_csv(run / "probe.csv"))  # same grid, same model
    assert f"wrote {run / 'probe_1,2.csv'}" in result.stdout


def test_a_learned_p_outside_the_grid_is_warned_about(results_dir: Path) -> None:
    run = run_at(results_dir, [1.0])
    p_final = status_of(run)["p_final"]
    assert p_final > 2
    result = run_cli("probe", run, "--p", "1:2:0.5")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: the learned p = {p_final:.4g} lies outside the probed grid [1, 2]: "
        "the probe measured it and inf, but nothing between it and the grid"
    ]
    assert list(pd.read_csv(run / "probe_1-2_step0.5.csv")["p"]) == [1.0, 1.5, 2.0, p_final, math.inf]
    inside = run_cli("probe", run, "--p", "1:4:1")
    assert inside.exit_code == 0 and inside.stderr == ""
    assert sorted(pd.read_csv(run / "probe_1-4_step1.csv")["p"]) == sorted([1.0, 2.0, 3.0, 4.0, p_final, math.inf])


def test_replace_rewrites_the_probe_status_and_runs_table(results_dir: Path) -> None:
    run = run_at(results_dir, [1.0])
    result = run_cli("probe", run, "--p", "1,1.5", "--replace")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run / "probe.csv")
    status = status_of(run)
    assert list(table["p"]) == [1.0, 1.5, status["p_final"], math.inf]
    assert status["p_opt"] == best_p(table)
    summary = probe_summary(table, status["p_final"], 0.005)
    assert {key: status[key] for key in summary} == summary
    assert runs_row(results_dir, run)["regret"] == pytest.approx(summary["regret"])
    assert f"plateau from p = {summary['p_plateau']:g}" in result.stdout
    assert f"regret {summary['regret']:.4f} val mAP" in result.stdout
    assert status["status"] == "done" and status["p_final"] > 2
    runs = pd.read_csv(results_dir / "runs.csv").set_index("run_dir")
    assert runs.loc[run.name, "p_opt"] == status["p_opt"]
    assert runs.loc[run.name, "test_map_at_p_opt"] == pytest.approx(status["test_map_at_p_opt"])
    assert not list(run.glob("probe_*.csv"))


def test_replace_writes_nothing_when_the_experiment_file_is_broken(results_dir: Path) -> None:
    run = run_at(results_dir, [1.0])
    (results_dir / "experiment.yaml").write_text("name: tiny\nmodel: 3\n")
    before = recorded(results_dir, run)
    result = run_cli("probe", run, "--p", "1,1.5", "--replace")
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {results_dir / 'experiment.yaml'}")
    assert recorded(results_dir, run) == before


def test_a_run_without_a_grid_needs_one(results_dir: Path) -> None:
    run = run_at(results_dir, [1.0])
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["eval"]["probe_p"] = []
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("probe", run)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {run / 'config.yaml'}: eval.probe_p: the run was not probed; give the test-time p values with --p"
    ]


def test_the_reprobe_evaluates_at_the_runs_scales(results_dir: Path) -> None:
    """Probed at exactly the learned p, each run reproduces its own validation metrics, which
    differ between one and two test-time scales (the same training, so the same model)."""
    statuses = {}
    for scales in SCALES:
        run = run_at(results_dir, scales)
        statuses[len(scales)] = status = status_of(run)
        result = run_cli("probe", run, "--p", repr(status["p_final"]))
        assert result.exit_code == 0, result.output
        row = pd.read_csv(run / f"probe_{reprobe.grid_name([status['p_final']])}.csv").iloc[0]
        assert row["map"] == pytest.approx(status["val_map"], abs=1e-6)
        assert row["accuracy"] == pytest.approx(status["val_accuracy"], abs=1e-6)
    assert statuses[1]["p_final"] == statuses[2]["p_final"]
    assert abs(statuses[1]["val_map"] - statuses[2]["val_map"]) > 1e-4


@pytest.mark.parametrize(("values", "name"), [
    ([1.0, 2.0, 3.5], "1,2,3.5"),
    ([1.0, 1.25, 1.5, 1.75, 2.0], "1-2_step0.25"),
    ([2.438003301620483], "2.438003301620483"),
])
def test_grid_names_are_compact_and_lossless(values: list[float], name: str) -> None:
    assert reprobe.grid_name(values) == name
