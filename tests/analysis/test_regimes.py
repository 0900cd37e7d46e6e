"""`pooling-lab regimes STUDY_DIR`: a study of experiment folders read as one table of cells (their
factors found from the configs), the margin's correlations per regime, the gradient split per
cell and regime, and the figures; every number checked against a computation from the run files
themselves."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tiny_sweeps import experiment, run_cli

from pooling_lab.analysis.plots.regimes import phase_panels, remedy_rows
from pooling_lab.analysis.regimes import _label, load_study, regime_tables
from pooling_lab.experiment import load_plan

ARCFACE = {"name": "arcface", "scale": 10.0}
COMMON = {"train": {"epochs": 1}, "eval": {"probe_p": [1, 2, 4, 8]}, "record": {"every_steps": 2, "gradient_split": True}}
NUMBERS = ["p_final", "p_opt", "p_plateau", "log_drift", "regret", "test_accuracy", "test_map", "test_map_at_p_opt"]
FACTORS = ["m", "p lr x", "loss", "p learnable"]  # as regimes.csv names them


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny experiments, two seeds each: ArcFace over margin x p's learning-rate multiplier
    (5 is the tiny default), a remedies arm at margin 0.3 (p learned or fixed), and softmax (no margin)."""
    root = tmp_path_factory.mktemp("regimes")
    arms = {
        "phase": {"head": ARCFACE, "sweep": {"grid": {"head.margin": [0.0, 0.3], "optim.pool_params.lr_mult": [5.0, 50.0]},
                                             "seeds": [0, 1]}},
        "remedies": {"head": ARCFACE | {"margin": 0.3},
                     "sweep": {"zip": {"model.pool.learnable": {"learned": True, "fixed_3": False}}, "seeds": [0, 1]}},
        "softmax": {"sweep": {"seeds": [0, 1]}},
    }
    for name, sections in arms.items():
        path = experiment(root, name=name, **COMMON, **sections)
        result = run_cli("run", path, "--out", root / "study", "-q")
        assert result.exit_code == 0, result.output
    return root / "study"


@pytest.fixture(scope="module")
def report(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = run_cli("regimes", study, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return out


def run_table(study: Path) -> pd.DataFrame:
    """Independently of the package: every run's runs.csv numbers with the factors read from its
    config.yaml."""
    rows = []
    for runs_csv in sorted(study.glob("*/runs.csv")):
        for _, run in pd.read_csv(runs_csv).iterrows():
            config = yaml.safe_load((runs_csv.parent / run["run_dir"] / "config.yaml").read_text())
            rows.append({"experiment": runs_csv.parent.name, "run_dir": runs_csv.parent / run["run_dir"],
                         "m": config["head"].get("margin", np.nan), "p lr x": config["optim"]["pool_params"]["lr_mult"],
                         "loss": config["head"]["name"], "p learnable": str(config["model"]["pool"]["learnable"]),
                         "status": run["status"], **{column: run[column] for column in [*NUMBERS, "p_opt_at_edge"]}})
    return pd.DataFrame(rows)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (infinite values rank at the ends)."""
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        ranked[values == value] = ranked[values == value].mean()
    return ranked


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = ranks(x) - ranks(x).mean(), ranks(y) - ranks(y).mean()
    return float((rx * ry).sum() / np.sqrt((rx**2).sum() * (ry**2).sum()))


def exact_permutation_p(x: np.ndarray, y: np.ndarray) -> float:
    rho = abs(spearman_rho(x, y))
    null = [abs(spearman_rho(x, y[list(order)])) for order in itertools.permutations(range(len(y)))]
    return float(np.mean([value >= rho - 1e-12 for value in null]))


def read_cells(folder: Path) -> pd.DataFrame:
    """regimes.csv, its text factors as text."""
    return pd.read_csv(folder / "regimes.csv", dtype={"loss": str, "p learnable": str})


def cell_of(cells: pd.DataFrame, folder: str, **factors) -> pd.Series:
    chosen = cells[cells["experiment"] == folder]
    for column, value in factors.items():
        chosen = chosen[chosen[column].isna()] if pd.isna(value) else chosen[chosen[column] == value]
    assert len(chosen) == 1, (folder, factors)
    return chosen.iloc[0]


def cells_with_runs(cells: pd.DataFrame, runs: pd.DataFrame):
    """(row of regimes.csv, its runs from ``run_table``) per cell, matched by the factors."""
    for (folder, *factors), group in runs.groupby(["experiment", *FACTORS], dropna=False):
        yield cell_of(cells, folder, **dict(zip(FACTORS, factors, strict=True))), group


def test_the_factors_are_the_keys_the_runs_vary(study: Path) -> None:
    found = load_study(study)
    assert found.factors == ["head.margin", "optim.pool_params.lr_mult", "head.name", "model.pool.learnable"]
    # ArcFace's scale and easy_margin, the linear head's bias: each goes with the loss
    assert found.implied == ["head.scale", "head.easy_margin", "head.bias"]
    assert found.centre == {"optim.pool_params.lr_mult": "5", "head.name": "arcface", "model.pool.learnable": "True"}
    regimes = found.runs.groupby("experiment")["regime"].unique().map(sorted).to_dict()
    assert regimes == {"phase": ["centre", "p lr x=50"], "remedies": ["centre", "p learnable=False"],
                       "softmax": ["loss=linear"]}


def test_each_cell_holds_the_means_over_its_seeds(study: Path, report: Path) -> None:
    cells = read_cells(report)
    runs = run_table(study)
    assert len(cells) == 7 and (cells["seeds"] == 2).all()
    for cell, group in cells_with_runs(cells, runs):
        for column in NUMBERS:
            np.testing.assert_allclose(cell[column], group[column].mean(), rtol=0, atol=1e-12, err_msg=column)
            if np.isfinite(cell[column]):
                assert cell[f"{column}_low"] <= cell[column] + 1e-12 <= cell[f"{column}_high"] + 2e-12
        assert cell["p_opt_at_edge"] == group["p_opt_at_edge"].astype(bool).sum() and cell["probed"] == 2
    markdown = (report / "regimes.md").read_text()
    assert "All 14 runs are done." in markdown
    assert "| softmax | loss=linear | - | 5 | linear | True | 2 |" in markdown
    assert not (study / "regimes.csv").exists()  # --out: the study folder is left as it is


def test_each_regime_with_two_margins_correlates_the_margin(study: Path, report: Path) -> None:
    correlations = pd.read_csv(report / "regimes_correlations.csv")
    by_margin = correlations[correlations["x"] == "m"]
    assert sorted(zip(by_margin["experiment"], by_margin["regime"], by_margin["y"], strict=True)) == [
        ("phase", "centre", "log_drift"), ("phase", "centre", "regret"),
        ("phase", "p lr x=50", "log_drift"), ("phase", "p lr x=50", "regret")]
    runs = run_table(study)
    for _, row in by_margin.iterrows():
        regime = runs[(runs["experiment"] == "phase") & (runs["p lr x"] == (5.0 if row["regime"] == "centre" else 50.0))]
        x, y = regime["m"].to_numpy(float), regime[row["y"]].to_numpy(float)
        assert row["runs"] == 4
        if np.unique(y).size == 1:  # no order to correlate with
            assert np.isnan(row["rho"])
            continue
        assert row["rho"] == pytest.approx(spearman_rho(x, y), abs=1e-12)
        assert row["p_value"] == pytest.approx(exact_permutation_p(x, y), abs=0.04)
        assert row["low"] <= row["rho"] + 1e-12 <= row["high"] + 2e-12


def split_means(run_dir: Path) -> dict[str, float]:
    """From grad_split.csv alone: each part's mean, its mean after half the last recorded step,
    the balance and the push over that last half."""
    split = pd.read_csv(run_dir / "grad_split.csv")
    split = split[(split["module"] == "pool") & (split["param"] == "p")]
    late = split[split["step"] > split["step"].max() / 2]
    parts = {part: split.loc[split["part"] == part, "grad"].mean() for part in ("target", "non_target")}
    halves = {part: late.loc[late["part"] == part, "grad"].mean() for part in ("target", "non_target")}
    return {"grad_target": parts["target"], "grad_non_target": parts["non_target"],
            "grad_target_last_half": halves["target"], "balance": parts["target"] - parts["non_target"],
            "push_last_half": -(halves["target"] + halves["non_target"])}


def test_the_mechanism_numbers_come_from_the_gradient_split(study: Path, report: Path) -> None:
    cells = read_cells(report)
    runs = run_table(study)
    runs = runs.join(pd.DataFrame([split_means(d) if (d / "grad_split.csv").is_file() else {} for d in runs["run_dir"]]))
    for cell, group in cells_with_runs(cells, runs):
        if cell["p learnable"] == "False":  # a fixed p has no gradient
            assert cell["split_runs"] == 0 and np.isnan(cell["balance"])
            continue
        assert cell["split_runs"] == 2
        for column in ("grad_target", "grad_non_target", "grad_target_last_half", "balance", "push_last_half"):
            assert cell[column] == pytest.approx(group[column].mean(), rel=1e-9, abs=1e-15), column
    correlations = pd.read_csv(report / "regimes_correlations.csv")
    phase = runs[(runs["experiment"] == "phase") & (runs["p lr x"] == 50.0)]
    row = correlations[(correlations["x"] == "balance") & (correlations["regime"] == "p lr x=50")].iloc[0]
    assert row["rho"] == pytest.approx(spearman_rho(phase["balance"].to_numpy(), phase["log_drift"].to_numpy()), abs=1e-12)
    signs = np.sign(phase["push_last_half"]) * np.sign(phase["log_drift"])
    assert (row["sign_agree"], row["sign_runs"]) == ((signs > 0).sum(), (signs != 0).sum())


def test_the_figures_are_drawn(study: Path, report: Path) -> None:
    for stem in ("phase_regret", "phase_log_drift", "mechanism_phase", "mechanism_remedies", "mechanism_softmax",
                 "remedies"):
        with Image.open(report / "figures" / f"{stem}.png") as image:
            image.verify()
        assert (report / "figures" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    found = load_study(study)
    cells = regime_tables(found).cells
    assert [(title, len(panel)) for title, panel in phase_panels(found, cells)] == [("phase", 4)]
    ((title, panel, reference),) = remedy_rows(found, cells)
    assert title == "remedies: m=0.3" and sorted(panel["regime"]) == ["centre", "p learnable=False"]
    assert (reference["experiment"], reference["regime"], reference["m"]) == ("remedies", "centre", 0.3)


def test_runs_not_done_are_left_out_and_counted(study: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(study, tmp_path / "study"))
    runs = pd.read_csv(copy / "phase" / "runs.csv")
    failed, pending = (copy / "phase" / runs.loc[(runs["head.margin"] == margin) & (runs["seed"] == 1), "run_dir"].iloc[0]
                       for margin in (0.3, 0.0))
    (failed / "status.json").write_text(json.dumps(json.loads((failed / "status.json").read_text()) | {"status": "failed"}))
    shutil.rmtree(pending)  # a run not started yet: no config.yaml, no status.json
    assert run_cli("regimes", copy).exit_code == 0
    assert "Left out: 2 of 14 runs are not done (failed 1, pending 1)." in (copy / "regimes.md").read_text()
    assert load_study(copy).factors == load_study(study).factors  # a run without a config varies nothing
    cells = read_cells(copy)
    assert cell_of(cells, "phase", m=0.3, **{"p lr x": 5.0})["seeds"] == 1
    assert cell_of(cells, "phase", m=0.0, **{"p lr x": 5.0})["seeds"] == 1


def test_a_damaged_or_unfinished_experiment_folder_is_a_warning(study: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(study, tmp_path / "study"))
    runs_csv = copy / "remedies" / "runs.csv"
    runs_csv.write_bytes(runs_csv.read_bytes()[:-1])
    (copy / "softmax" / "runs.csv").unlink()
    result = run_cli("regimes", copy)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {runs_csv}: damaged (cut short: its last line is incomplete); skipped",
        f"warning: {copy / 'softmax'}: no runs.csv; skipped",
    ]
    assert set(read_cells(copy)["experiment"]) == {"phase"}
    assert not (copy / "figures" / "remedies.png").exists()


@pytest.mark.parametrize("make", ["empty", "missing", "experiment", "unfinished"])
def test_a_study_folder_without_experiments_is_one_line(study: Path, tmp_path: Path, make: str) -> None:
    folder = {"experiment": study / "phase"}.get(make, tmp_path / make)
    if make == "empty":
        (folder / "figures").mkdir(parents=True)
    if make == "unfinished":  # two runs planned, none started
        shutil.copytree(study / "softmax", folder / "softmax", ignore=lambda _, names: [n for n in names if "seed=" in n])
    result = run_cli("regimes", folder)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    expected = {"empty": "no experiment folder (a folder with runs.csv) in it", "missing": "no such folder",
                "experiment": "it is an experiment folder itself",
                "unfinished": "no finished run in its 2 runs: nothing to analyse yet"}[make]
    assert line.startswith(f"error: {folder}: ") and expected in line
    assert not (folder / "regimes.csv").exists()


def test_a_fixed_p_regime_is_named_with_its_p_even_at_the_centres_value() -> None:
    centre = {"model.pool.p": "3", "model.pool.learnable": "True", "optim.name": "sgd"}
    fixed_at_centre = {"model.pool.p": "3", "model.pool.learnable": "False", "optim.name": "sgd"}
    learned_elsewhere = {"model.pool.p": "6", "model.pool.learnable": "True", "optim.name": "sgd"}
    assert _label(fixed_at_centre, centre) == "p (init or fixed)=3, p learnable=False"
    assert _label(learned_elsewhere, centre) == "p (init or fixed)=6"
    assert _label(centre, centre) == "centre"


STUDY = Path(__file__).resolve().parents[2] / "results" / "reference" / "p_drift_regimes"
STUDY_FILES = sorted((Path(__file__).resolve().parents[2] / "experiments" / "p_drift_regimes").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda path: path.stem)
def test_the_committed_study_holds_every_run_its_files_plan(path: Path) -> None:
    """Each arm's file, expanded today, names exactly the runs committed (same ids), all done."""
    plan = load_plan(path)
    folder = STUDY / plan.experiment.name
    runs = pd.read_csv(folder / "runs.csv", dtype={"run_id": str})
    assert sorted(runs["run_id"]) == sorted(spec.run_id for spec in plan.runs)
    for spec in plan.runs:
        status = json.loads((folder / spec.dir_name / "status.json").read_text())
        assert (status["run_id"], status["status"]) == (spec.run_id, "done")


def test_the_committed_study_tables_are_what_regimes_computes_from_its_runs(tmp_path: Path) -> None:
    result = run_cli("regimes", STUDY, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    for table in ("regimes.csv", "regimes_correlations.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / table), pd.read_csv(STUDY / table))
