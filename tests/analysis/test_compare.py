"""`pooling-lab compare A B ...`: per swept value and experiment the mean over seeds (with a
bootstrap interval) of every final number the runs recorded, in one table (printed, compare.csv,
compare.md) and one figure; bad input is one line, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_sweeps import experiment, run_cli

KEY = "head.margin"
COMPARED = ["p_final", "p_opt", "regret", "test_accuracy", "test_map"]
OPTIMISERS = {"sgd": {"name": "sgd", "lr": 0.05}, "adam": {"name": "adam", "lr": 0.005}}


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two probed experiments over two ArcFace margins and two seeds, one trained with SGD, the
    other with Adam (which alone measures map@r)."""
    root = tmp_path_factory.mktemp("compare")
    found = {}
    for name, optim in OPTIMISERS.items():
        metrics = ["accuracy", "map", "recall@1", *(["map@r"] if name == "adam" else [])]
        path = experiment(root, name=name, train={"epochs": 1}, head={"name": "arcface", "scale": 10.0}, optim=optim,
                          eval={"probe_p": [1, 2, 4], "metrics": metrics},
                          sweep={"grid": {KEY: [0.0, 0.3]}, "seeds": [0, 1]})
        result = run_cli("run", path, "--out", root / "results", "-q")
        assert result.exit_code == 0, result.output
        found[name] = root / "results" / name
    return found


@pytest.fixture(scope="module")
def compared(experiments: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("compared") / "sgd_vs_adam"
    result = run_cli("compare", experiments["sgd"], experiments["adam"], "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def by_value(results_dir: Path) -> pd.DataFrame:
    """Independently of the package: the mean and range over seeds per margin, from runs.csv."""
    runs = pd.read_csv(results_dir / "runs.csv")
    assert (runs["status"] == "done").all()
    return runs.groupby(KEY)[COMPARED].agg(["mean", "min", "max", "count"])


def test_compare_csv_holds_the_means_over_seeds_with_intervals(experiments: dict[str, Path], compared) -> None:
    table = pd.read_csv(compared[0] / "compare.csv")
    assert list(table.columns[:5]) == ["experiment", "series", "configuration", KEY, "seeds"]
    assert sorted(zip(table["experiment"], table[KEY], strict=True)) == [
        ("adam", 0.0), ("adam", 0.3), ("sgd", 0.0), ("sgd", 0.3)]
    for name, results_dir in experiments.items():
        expected = by_value(results_dir)
        rows = table[table["experiment"] == name].set_index(KEY)
        assert (rows["seeds"] == 2).all()
        for column in COMPARED:
            summary = expected[column]
            assert np.allclose(rows[column], summary["mean"], rtol=0, atol=1e-12), column
            assert (rows[f"{column}_low"] >= summary["min"] - 1e-12).all()
            assert (rows[f"{column}_high"] <= summary["max"] + 1e-12).all()
            assert (rows[f"{column}_low"] <= rows[column] + 1e-12).all() and (rows[column] <= rows[f"{column}_high"] + 1e-12).all()
    # a number only one experiment measured is compared where it was
    assert table.set_index("experiment").loc["adam", "test_map@r"].notna().all()
    assert table.set_index("experiment").loc["sgd", "test_map@r"].isna().all()


def test_only_finished_runs_count(experiments: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(experiments["adam"], tmp_path / "adam"))
    runs = pd.read_csv(copy / "runs.csv")
    failed = runs[(runs[KEY] == 0.3) & (runs["seed"] == 1)].iloc[0]
    status = json.loads((copy / failed["run_dir"] / "status.json").read_text())
    (copy / failed["run_dir"] / "status.json").write_text(json.dumps(status | {"status": "failed"}))
    assert run_cli("compare", experiments["sgd"], copy, "--out", tmp_path / "out").exit_code == 0
    rows = pd.read_csv(tmp_path / "out" / "compare.csv").set_index(["experiment", KEY])
    kept = runs[(runs[KEY] == 0.3) & (runs["seed"] == 0)].iloc[0]
    assert rows.loc[("adam", 0.3), "seeds"] == 1
    assert rows.loc[("adam", 0.3), ["p_final", "p_final_low", "p_final_high"]].tolist() == [kept["p_final"]] * 3
    assert rows.loc[("adam", 0.0), "seeds"] == 2


def test_the_printed_and_markdown_tables_show_experiments_side_by_side(experiments: dict[str, Path], compared) -> None:
    out, printed = compared
    lines = (out / "compare.md").read_text().splitlines()
    assert lines[0] == f"# sgd vs adam, by {KEY}"
    assert "| number | head.margin | sgd | adam |" in lines
    sgd, adam = by_value(experiments["sgd"])["p_final"], by_value(experiments["adam"])["p_final"]
    row = next(line for line in lines if line.startswith("| learned p | 0.3 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2].startswith(f"{sgd.loc[0.3, 'mean']:.4g} [") and cells[3].startswith(f"{adam.loc[0.3, 'mean']:.4g} [")
    assert "| seeds | 0 | 2 | 2 |" in lines
    assert any(line.startswith("| test_map@r | 0 | - | ") for line in lines)
    assert f"compared by {KEY}" in printed and "learned p" in printed
    assert f"{sgd.loc[0.0, 'mean']:.4g} [" in printed


def test_the_figure_is_written(compared) -> None:
    out = compared[0]
    with Image.open(out / "compare.png") as image:
        width, height = image.size
    assert width > 1000 and height > 500
    assert (out / "compare.pdf").read_bytes().startswith(b"%PDF")


def test_without_out_the_files_go_to_a_folder_named_after_the_experiments(experiments: dict[str, Path],
                                                                         tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("compare", experiments["adam"], experiments["sgd"])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "compare_adam_vs_sgd").iterdir()) == [
        "compare.csv", "compare.md", "compare.pdf", "compare.png"]


def test_experiments_of_one_name_are_told_apart_by_their_folder(experiments: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(experiments["sgd"], tmp_path / "again" / "sgd"))
    result = run_cli("compare", experiments["sgd"], copy, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert sorted(set(table["experiment"])) == sorted([f"sgd ({experiments['sgd']})", f"sgd ({copy})"])


def unfinished(results_dir: Path, parent: Path) -> Path:
    """A copy of ``results_dir`` whose runs all read as failed."""
    copy = Path(shutil.copytree(results_dir, parent / results_dir.name))
    for status_file in copy.glob("*/status.json"):
        status_file.write_text(json.dumps(json.loads(status_file.read_text()) | {"status": "failed"}))
    return copy


def test_bad_input_is_one_line_with_exit_code_2(experiments: dict[str, Path], tmp_path: Path) -> None:
    other = experiment(tmp_path, name="lr_only", train={"epochs": 1}, sweep={"grid": {"optim.lr": [0.05]}})
    assert run_cli("run", other, "--out", tmp_path / "results", "-q").exit_code == 0
    cases = {
        (experiments["sgd"], tmp_path / "results" / "lr_only"):
            "error: pooling-lab compare: the experiments share no swept key to compare along "
            "(swept: sgd: head.margin; lr_only: optim.lr)",
        (experiments["sgd"], experiments["adam"], "--by", "optim.lr"):
            "error: --by: 'optim.lr' is not a swept key of sgd, adam (swept: sgd: head.margin; adam: head.margin)",
        (experiments["sgd"],): "error: pooling-lab compare: give two or more results directories to compare",
        (experiments["sgd"], experiments["sgd"]): "error: pooling-lab compare: a results directory is given twice",
        (experiments["sgd"], tmp_path): f"error: {tmp_path}: not a results directory: {tmp_path}/runs.csv is missing",
        (unfinished(experiments["sgd"], tmp_path / "a"), unfinished(experiments["adam"], tmp_path / "b")):
            f"error: {tmp_path / 'a' / 'sgd'}, {tmp_path / 'b' / 'adam'}: no finished run to compare",
    }
    for args, line in cases.items():
        result = run_cli("compare", *args, "--out", tmp_path / "never")
        assert result.exit_code == 2, result.output
        assert result.output == line + "\n"
    assert not (tmp_path / "never").exists()
