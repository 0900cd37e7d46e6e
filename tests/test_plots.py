"""Tests for pooling_lab.plots: aggregation over seeds, colours, labels, and the written files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from pooling_lab import plots

MARGINS = (0.0, 2.0, 10.0)  # numeric order differs from text order ("10" < "2")
SEEDS = (0, 1)
STEPS = (0, 10, 20)
EPOCHS = (1, 2)
PER_CHANNEL_STATS = ("mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max")


def run_id(margin: float, seed: int) -> str:
    return f"m{margin:g}-s{seed}"


def p_value(margin: float, seed: int, step: int) -> float:
    return 3.0 - margin * step / 100 + 0.1 * seed


def make_runs(statuses: dict[str, str] | None = None) -> pd.DataFrame:
    statuses = statuses or {}
    rows = []
    for margin in MARGINS:
        for seed in SEEDS:
            rid = run_id(margin, seed)
            rows.append(
                {
                    "run_id": rid,
                    "run_dir": f"results/exp/{rid}",
                    "head.margin": margin,
                    "seed": seed,
                    "status": statuses.get(rid, "done"),
                    "p_final": p_value(margin, seed, STEPS[-1]),
                    "test_accuracy": 0.9 - 0.01 * margin + 0.001 * seed,
                    "val_accuracy": 0.88,
                }
            )
    return pd.DataFrame(rows)


def make_params(per_channel: bool = False) -> pd.DataFrame:
    stats = PER_CHANNEL_STATS if per_channel else ("value",)
    rows = []
    for margin in MARGINS:
        for seed in SEEDS:
            for step in STEPS:
                centre = p_value(margin, seed, step)
                for offset, stat in enumerate(stats):
                    rows.append(
                        {
                            "run_id": run_id(margin, seed),
                            "step": step,
                            "epoch": step / 10,
                            "module": "pool",
                            "param": "p",
                            "stat": stat,
                            # only the central stat carries p; the others are far away
                            "value": centre + 100.0 * offset,
                            "grad": 0.01,
                        }
                    )
    return pd.DataFrame(rows)


def make_metrics() -> pd.DataFrame:
    rows = []
    for margin in MARGINS:
        for seed in SEEDS:
            for epoch in EPOCHS:
                rows.append(
                    {
                        "run_id": run_id(margin, seed),
                        "epoch": epoch,
                        "step": epoch * 10,
                        "train_loss": 1.0 / epoch,
                        "train_accuracy": 0.5 + 0.1 * epoch,
                        "val_accuracy": 0.4 + 0.1 * epoch + 0.01 * seed,
                        "test_accuracy": 0.3 + 0.1 * epoch + 0.02 * seed,
                        "lr": 0.1,
                        "p": p_value(margin, seed, epoch * 10),
                    }
                )
    return pd.DataFrame(rows)


def luminance(colour) -> float:
    red, green, blue = to_rgb(colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def assert_figure_files(paths, out_dir, names) -> None:
    expected = {out_dir / f"{name}.{fmt}" for name in names for fmt in ("png", "pdf")}
    assert set(paths) == expected
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert data.startswith(b"%PDF")


# --- aggregation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
def test_p_bands_are_mean_and_min_max_over_seeds(per_channel):
    bands = plots.p_bands(make_params(per_channel), make_runs(), ["head.margin"])
    assert len(bands) == len(MARGINS) * len(STEPS)
    assert set(bands["stat"]) == {"mean" if per_channel else "value"}
    for margin in MARGINS:
        rows = bands[bands["config"] == f"head.margin={margin:g}"].set_index("step")
        for step in STEPS:
            seeds = [p_value(margin, seed, step) for seed in SEEDS]
            assert rows.loc[step, "mean"] == pytest.approx(np.mean(seeds))
            assert rows.loc[step, "low"] == pytest.approx(min(seeds))
            assert rows.loc[step, "high"] == pytest.approx(max(seeds))
            assert rows.loc[step, "seeds"] == len(SEEDS)


def test_seed_bands_skip_missing_and_infinite_values_and_count_a_run_once():
    runs = make_runs()
    frame = pd.DataFrame(
        {
            "run_id": ["m0-s0", "m0-s0", "m0-s1", "m0-s0", "m0-s1"],
            "step": [5, 5, 5, 6, 6],
            "value": [1.0, 3.0, 8.0, np.inf, np.nan],
        }
    )
    bands = plots.seed_bands(frame, plots.run_groups(runs, ["head.margin"]), x="step", y="value")
    # m0-s0 counts once at step 5 (mean 2.0); step 6 has no finite value and is dropped
    assert bands["step"].tolist() == [5]
    assert bands.loc[0, ["mean", "low", "high", "seeds"]].tolist() == [5.0, 2.0, 8.0, 2]


def test_unfinished_runs_form_their_own_labelled_group():
    runs = make_runs({"m10-s1": "diverged"})
    groups = plots.run_groups(runs, ["head.margin"])
    assert groups.loc["m10-s1", "label"] == "head.margin=10 (diverged)"
    assert not groups.loc["m10-s1", "done"]
    assert groups.loc["m10-s0", "label"] == "head.margin=10"
    assert groups.loc["m10-s0", "config"] == groups.loc["m10-s1", "config"]

    bands = plots.p_bands(make_params(), runs, ["head.margin"])
    diverged = bands[bands["label"] == "head.margin=10 (diverged)"]
    assert diverged["mean"].tolist() == pytest.approx([p_value(10.0, 1, s) for s in STEPS])
    finished = bands[bands["label"] == "head.margin=10"]
    assert finished["mean"].tolist() == pytest.approx([p_value(10.0, 0, s) for s in STEPS])


def test_labels_of_several_keys_and_of_unhashable_values():
    runs = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "head.name": ["arcface", "cosface"],
            "model.pool.p": [[1.0, 2.5], {"init": 3}],
            "status": ["done", "failed"],
        }
    )
    groups = plots.run_groups(runs, ["head.name", "model.pool.p"])
    assert groups["label"].tolist() == [
        "head.name=arcface, model.pool.p=[1.0, 2.5]",
        "head.name=cosface, model.pool.p={'init': 3} (failed)",
    ]
    assert plots.run_groups(runs, [])["config"].tolist() == [plots.ALL_RUNS] * 2


def test_format_value_is_compact():
    assert [plots.format_value(v) for v in (0.3, 3, 3.0, np.float64(0.5), True, "gem")] == [
        "0.3",
        "3",
        "3",
        "0.5",
        "True",
        "gem",
    ]


# --- colours -------------------------------------------------------------------------------------


def test_numeric_key_colours_follow_the_value_order_and_are_stable():
    runs = make_runs()
    colours = plots.config_colours(runs, ["head.margin"])
    ordered = [f"head.margin={m:g}" for m in sorted(MARGINS)]
    assert list(colours) == ordered
    lightness = [luminance(colours[label]) for label in ordered]
    assert lightness == sorted(lightness) and len(set(lightness)) == len(MARGINS)

    shuffled = runs.sample(frac=1.0, random_state=3)
    assert plots.config_colours(shuffled, ["head.margin"]) == colours


def test_categorical_colours_are_distinct_and_colour_blind_safe():
    runs = pd.DataFrame(
        {"run_id": list("abcd"), "head.name": ["softmax", "arcface", "cosface", "arcface"]}
    )
    colours = plots.config_colours(runs, ["head.name"])
    assert list(colours) == ["head.name=arcface", "head.name=cosface", "head.name=softmax"]
    assert len(set(colours.values())) == 3
    assert set(colours.values()) <= set(plots.OKABE_ITO)


def test_many_configurations_fall_back_to_a_larger_palette():
    runs = pd.DataFrame(
        {"run_id": [str(i) for i in range(12)], "tag": [f"t{i}" for i in range(12)]}
    )
    colours = plots.config_colours(runs, ["tag"])
    assert len(set(colours.values())) == 12


# --- figures -------------------------------------------------------------------------------------


def test_trajectory_figure_draws_the_seed_means_and_dashes_unfinished_runs():
    runs = make_runs({"m10-s1": "diverged"})
    fig = plots.p_trajectory_figure(make_params(), runs, ["head.margin"], title="drift")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    mean_line = lines["head.margin=2"]
    expected = [np.mean([p_value(2.0, seed, step) for seed in SEEDS]) for step in STEPS]
    assert list(mean_line.get_xdata()) == list(STEPS)
    assert list(mean_line.get_ydata()) == pytest.approx(expected)
    assert mean_line.get_linestyle() == "-"
    assert lines["head.margin=10 (diverged)"].get_linestyle() == "--"
    assert lines["head.margin=10 (diverged)"].get_color() == lines["head.margin=10"].get_color()
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "p"
    legend = fig.legends[0]
    assert "head.margin" in legend.get_title().get_text()
    assert "min–max" in legend.get_title().get_text()
    assert "head.margin=10 (diverged)" in [text.get_text() for text in legend.get_texts()]


def test_p_final_figure_places_numeric_values_and_shows_seed_extremes():
    fig = plots.p_final_figure(make_runs(), ["head.margin"])
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == list(MARGINS)
    (errorbar,) = ax.containers
    line, _, (bars,) = errorbar.lines
    finals = [[p_value(m, seed, STEPS[-1]) for seed in SEEDS] for m in MARGINS]
    assert list(line.get_xdata()) == list(MARGINS)
    assert list(line.get_ydata()) == pytest.approx([np.mean(f) for f in finals])
    extents = [(segment[0][1], segment[1][1]) for segment in bars.get_segments()]
    assert extents == pytest.approx([(min(f), max(f)) for f in finals])


def test_p_final_figure_uses_categorical_slots_for_text_values():
    runs = make_runs()
    runs["head.name"] = ["arcface", "arcface", "cosface", "cosface", "softmax", "softmax"]
    fig = plots.p_final_figure(runs, ["head.name", "head.margin"])
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [0.0, 1.0, 2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["arcface", "cosface", "softmax"]


def test_plot_results_writes_every_figure(tmp_path):
    paths = plots.plot_results(
        make_runs({"m2-s0": "diverged"}),
        make_metrics(),
        make_params(per_channel=True),
        ["head.margin"],
        tmp_path,
        title="p drift",
    )
    assert_figure_files(paths, tmp_path, ["p_trajectory", "p_final", "accuracy_vs_p", "accuracy"])


def test_p_figures_are_skipped_without_p(tmp_path):
    runs = make_runs().assign(p_final=math.nan)
    metrics = make_metrics().assign(p=math.nan)
    paths = plots.plot_results(runs, metrics, pd.DataFrame(), ["head.margin"], tmp_path)
    assert_figure_files(paths, tmp_path, ["accuracy"])


def test_single_run_single_step_without_sweep(tmp_path):
    runs = make_runs().iloc[[0]]
    params = make_params()
    params = params[(params["run_id"] == runs["run_id"].iloc[0]) & (params["step"] == 0)]
    metrics = make_metrics().iloc[[0]]
    paths = plots.plot_results(runs, metrics, params, [], tmp_path)
    assert_figure_files(paths, tmp_path, ["p_trajectory", "p_final", "accuracy_vs_p", "accuracy"])


def test_nothing_is_written_for_no_runs(tmp_path):
    empty = make_runs().iloc[0:0]
    assert plots.plot_results(empty, make_metrics(), make_params(), [], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
