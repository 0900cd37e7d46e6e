"""`pooling-lab export tensorboard`: the event files hold what the CSVs hold (values and steps),
the probe curve and hparams; a rerun replaces the export whole, a failed one leaves the earlier
export as it was, and without the optional extra the command is one line, exit 2."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from tiny_sweeps import experiment, run_cli

import pooling_lab.analysis
from pooling_lab.analysis import tensorboard_export

STATS = ("mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two probed two-epoch runs: one with a shared (scalar) p, one with a per-channel p."""
    root = tmp_path_factory.mktemp("tensorboard")
    path = experiment(root, train={"epochs": 2}, head={"name": "arcface", "scale": 10.0}, eval={"probe_p": [1, 2, 4]},
                      sweep={"grid": {"model.pool.mode": ["shared", "per_channel"]}})
    result = run_cli("run", path, "--out", root / "results", "-q")
    assert result.exit_code == 0, result.output
    return root / "results" / "tiny"


@pytest.fixture(scope="module")
def exported(finished: Path) -> Path:
    out = finished.parent.parent / "tb"
    result = run_cli("export", "tensorboard", finished, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def run_folders(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.glob("*/config.yaml"))


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def series(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def as_stored(steps: pd.Series, values: pd.Series) -> list[tuple[int, float]]:
    """What TensorBoard keeps of a CSV column: its non-missing values as float32, by step."""
    kept = values.notna()
    return [(int(step), float(np.float32(value))) for step, value in zip(steps[kept], values[kept], strict=True)]


def test_every_run_has_its_folder_named_by_the_run_folder(finished: Path, exported: Path) -> None:
    assert sorted(path.name for path in exported.iterdir() if path.is_dir()) == [run.name for run in run_folders(finished)]


def test_every_metrics_csv_column_is_a_series_at_its_step(finished: Path, exported: Path) -> None:
    for run in run_folders(finished):
        metrics = pd.read_csv(run / "metrics.csv")
        accumulator = events(exported / run.name)
        assert len(metrics) == 2
        for column in metrics.columns.drop("step"):
            assert series(accumulator, f"metrics/{column}") == as_stored(metrics["step"], metrics[column]), column


def test_every_pooling_parameter_trace_and_its_gradient_are_series_by_step(finished: Path, exported: Path) -> None:
    expected_tags = {
        "shared": {"pool.p", "pool.p/grad"},
        "per_channel": {f"pool.p/{stat}" for stat in STATS} | {f"pool.p/grad/{stat}" for stat in STATS},
    }
    for run in run_folders(finished):
        params = pd.read_csv(run / "params.csv")
        accumulator = events(exported / run.name)
        traced = {tag for tag in accumulator.Tags()["scalars"] if tag.startswith("pool.")}
        mode = run.name.split("_seed")[0].removeprefix("mode=")
        assert traced == expected_tags[mode]
        for stat, rows in params.groupby("stat"):
            tag = "pool.p" if stat == "value" else f"pool.p/{stat}"
            assert series(accumulator, tag) == as_stored(rows["step"], rows["value"])
            grad_tag = "pool.p/grad" if stat == "value" else f"pool.p/grad/{stat}"
            assert series(accumulator, grad_tag) == as_stored(rows["step"], rows["grad"])  # step 0 has none
        assert series(accumulator, tag)[-1][0] == 2 * 22


def test_the_probe_curve_is_a_table_and_series_by_grid_position(finished: Path, exported: Path) -> None:
    for run in run_folders(finished):
        probe = pd.read_csv(run / "probe.csv").sort_values("p", ignore_index=True)
        accumulator = events(exported / run.name)
        assert series(accumulator, "probe/p") == as_stored(probe.index.to_series(), probe["p"])
        assert math.isinf(series(accumulator, "probe/p")[-1][1])
        for metric in ("accuracy", "map", "recall@1"):
            assert series(accumulator, f"probe/{metric}") == as_stored(probe.index.to_series(), probe[metric])
        text = accumulator.Tensors("probe/text_summary")[0].tensor_proto.string_val[0].decode()
        learned = probe.loc[~probe["on_grid"]].iloc[0]
        assert f"| {learned.name} | {learned['p']:.6g} * | {learned['accuracy']:.4f} | {learned['map']:.4f} |" in text
        assert f"| {len(probe) - 1} | inf | " in text


def test_hparams_hold_the_swept_values_and_the_final_numbers(finished: Path, exported: Path) -> None:
    runs = pd.read_csv(finished / "runs.csv")
    for _, run in runs.iterrows():
        accumulator = events(exported / run["run_dir"])
        content = accumulator.PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["model.pool.mode"].string_value == run["model.pool.mode"]
        assert start.hparams["seed"].number_value == run["seed"]
        assert start.hparams["status"].string_value == "done"
        declared = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        metrics = {info.name.tag for info in declared.metric_infos}
        assert {"final/p_final", "final/p_opt", "final/regret", "final/test_accuracy", "final/test_map"} <= metrics
        for column in ("p_final", "p_opt", "regret", "test_accuracy", "test_map"):
            assert series(accumulator, f"final/{column}") == [(run["step"], float(np.float32(run[column])))]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_rerun_replaces_the_export_whole_and_leaves_the_results_alone(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "tb"
    recorded = snapshot(finished)
    assert run_cli("export", "tensorboard", finished, "--out", out).exit_code == 0
    first = snapshot(out)
    result = run_cli("export", "tensorboard", finished, "--out", out)
    assert result.exit_code == 0, result.output
    second = snapshot(out)
    assert len(first) == len(second) == len(run_folders(finished)) + 1  # one event file per run, the marker
    assert not set(first) & set(second) - {tensorboard_export.MARKER}  # new event files, no old one left
    for run in run_folders(finished):
        metrics = pd.read_csv(run / "metrics.csv")
        assert series(events(out / run.name), "metrics/train_loss") == as_stored(metrics["step"], metrics["train_loss"])
    assert [path.name for path in tmp_path.iterdir()] == ["tb"]  # no staging folder left
    assert snapshot(finished) == recorded


def test_a_failed_export_leaves_the_earlier_one_as_it_was(finished: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "tb"
    assert run_cli("export", "tensorboard", finished, "--out", out).exit_code == 0
    before = snapshot(out)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensorboard_export, "_add_probe", disk_full)
    result = run_cli("export", "tensorboard", finished, "--out", out)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "No space left on device" in result.output
    assert snapshot(out) == before
    assert [path.name for path in tmp_path.iterdir()] == ["tb"]


def test_a_folder_that_is_not_an_earlier_export_is_refused(finished: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    result = run_cli("export", "tensorboard", finished, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {tmp_path}: is not empty and is not an earlier export (no "
                                     f"{tensorboard_export.MARKER}); choose another --out or remove it")
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    recorded = snapshot(finished)
    result = run_cli("export", "tensorboard", finished, "--out", finished.parent)
    assert result.exit_code == 2 and "holds the results being exported" in result.output
    assert snapshot(finished) == recorded


def test_without_tensorboard_the_command_is_one_line_and_the_core_still_works(finished: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ModuleNotFoundError
    for name in [name for name in sys.modules if name.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "pooling_lab.analysis.tensorboard_export")
    monkeypatch.delattr(pooling_lab.analysis, "tensorboard_export")
    result = run_cli("export", "tensorboard", finished, "--out", tmp_path / "tb")
    assert result.exit_code == 2
    assert result.output == "error: pooling-lab export tensorboard needs tensorboard: pip install pooling-lab[tensorboard]\n"
    assert not (tmp_path / "tb").exists()
    assert run_cli("status", finished).exit_code == 0
