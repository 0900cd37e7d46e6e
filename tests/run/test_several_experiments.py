"""`pooling-lab run A.yaml B.yaml`: the arms of a study in one command, all checked before any
trains, each into its own results folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tiny_sweeps import experiment, run_cli


def arm(directory: Path, experiment_name: str, **sections: object) -> Path:
    """The tiny experiment named ``experiment_name``, one epoch, in a folder of its own."""
    directory.mkdir()
    return experiment(directory, name=experiment_name, train={"epochs": 1}, **sections)


def test_several_files_run_one_after_another_into_their_folders(tmp_path: Path) -> None:
    first = arm(tmp_path / "a", "first")
    second = arm(tmp_path / "b", "second", sweep={"seeds": [0, 1]})
    out = tmp_path / "results"
    result = run_cli("run", first, second, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert result.output.index(f"results: {out / 'first'}") < result.output.index(f"results: {out / 'second'}")
    assert list(pd.read_csv(out / "first" / "runs.csv")["status"]) == ["done"]
    assert list(pd.read_csv(out / "second" / "runs.csv")["status"]) == ["done", "done"]


def test_a_bad_later_file_stops_everything_before_anything_trains(tmp_path: Path) -> None:
    first = arm(tmp_path / "a", "first")
    second = arm(tmp_path / "b", "second", optim={"lr": -1})
    out = tmp_path / "results"
    result = run_cli("run", first, second, "--out", out)
    assert result.exit_code == 2
    assert f"{second}" in result.output and "optim.lr" in result.output
    assert not (out / "first" / "runs.csv").exists()


def test_two_files_naming_one_experiment_are_refused(tmp_path: Path) -> None:
    first = arm(tmp_path / "a", "same")
    second = arm(tmp_path / "b", "same")
    result = run_cli("run", first, second, "--out", tmp_path / "results")
    assert result.exit_code == 2
    assert f"{second}: name: names the experiment 'same', as {first} does" in " ".join(result.output.split())
