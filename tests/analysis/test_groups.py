"""Tests for pooling_lab.analysis.groups: aggregation over seeds, configurations and their
labels and colours, and the one definition of a fixed-p baseline run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_hex

from pooling_lab import results
from pooling_lab.analysis import stats, style
from pooling_lab.analysis.figures import sweep_data
from pooling_lab.analysis.groups import (
    ALL_RUNS,
    config_colours,
    fixed_p_runs,
    learned_p,
    p_bands,
    run_groups,
    seed_bands,
)
from pooling_lab.analysis.plots.fixed_p import fixed_p_curve_figure
from pooling_lab.errors import UserError
from pooling_lab.experiment.labels import format_value

from .frames import (
    MARGINS,
    SEEDS,
    STEPS,
    label,
    luminance,
    make_params,
    make_runs,
    p_final,
    p_value,
)

# --- aggregation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
def test_p_bands_are_mean_and_min_max_over_seeds(per_channel):
    groups = run_groups(make_runs(), ["head.margin"])
    bands = p_bands(make_params(per_channel), groups)
    assert len(bands) == len(MARGINS) * len(STEPS)
    assert set(bands["stat"]) == {"mean" if per_channel else "value"}
    for margin in MARGINS:
        rows = bands[bands["config"] == label(margin)].set_index("step")
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
    bands = seed_bands(frame, run_groups(runs, ["head.margin"]), x="step", y="value")
    # m0-s0 counts once at step 5 (mean 2.0); step 6 has no finite value and is dropped
    assert bands["step"].tolist() == [5]
    assert bands.loc[0, ["mean", "low", "high", "seeds"]].tolist() == [5.0, 2.0, 8.0, 2]


def test_unfinished_runs_form_their_own_labelled_group():
    runs = make_runs({"m10-s1": "diverged"})
    groups = run_groups(runs, ["head.margin"])
    assert groups.loc["m10-s1", "label"] == "head.margin=10 (diverged)"
    assert not groups.loc["m10-s1", "done"]
    assert groups.loc["m10-s0", "label"] == "head.margin=10"
    assert groups.loc["m10-s0", "config"] == groups.loc["m10-s1", "config"]

    bands = p_bands(make_params(), groups)
    diverged = bands[bands["label"] == "head.margin=10 (diverged)"]
    assert diverged["mean"].tolist() == pytest.approx([p_value(10.0, 1, s) for s in STEPS])
    finished = bands[bands["label"] == "head.margin=10"]
    assert finished["mean"].tolist() == pytest.approx([p_value(10.0, 0, s) for s in STEPS])


def test_labels_of_several_keys_of_unhashable_values_and_display_names():
    runs = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "head.name": ["arcface", "cosface"],
            "model.pool.p": [[1.0, 2.5], {"init": 3}],
            "status": ["done", "failed"],
        }
    )
    groups = run_groups(runs, ["head.name", "model.pool.p"])
    assert groups["label"].tolist() == [
        "head.name=arcface, model.pool.p=1,2.5",
        "head.name=cosface, model.pool.p=init=3 (failed)",
    ]
    assert run_groups(runs, [])["config"].tolist() == [ALL_RUNS] * 2
    named = run_groups(runs, ["head.name"], {"head.name": "loss"})
    assert named["config"].tolist() == ["loss=arcface", "loss=cosface"]


def test_format_value_is_compact():
    assert [format_value(v) for v in (0.3, 3, 3.0, np.float64(0.5), True, "gem")] == [
        "0.3",
        "3",
        "3",
        "0.5",
        "True",
        "gem",
    ]
    # a component mapping, as given and as runs.csv stores it (JSON text), reads the same
    assert format_value({"name": "gem", "p": 2.0}) == "gem,p=2"
    assert format_value('{"name": "gem", "p": 2.0}') == "gem,p=2"
    assert format_value([1, 2.5]) == "1,2.5"


def test_learned_p_is_the_mean_final_p_per_group():
    runs = make_runs({"m10-s1": "diverged"})
    learned = learned_p(runs, run_groups(runs, ["head.margin"]))
    assert learned[label(2.0)] == pytest.approx(np.mean([p_final(2.0, s) for s in SEEDS]))
    assert learned["head.margin=10 (diverged)"] == pytest.approx(p_final(10.0, 1))


# --- colours -------------------------------------------------------------------------------------


def test_numeric_key_colours_follow_the_value_order_and_ignore_row_order():
    runs = make_runs()
    colours = config_colours(runs, ["head.margin"])
    ordered = [label(m) for m in sorted(MARGINS)]
    assert list(colours) == ordered
    lightness = [luminance(colours[name]) for name in ordered]
    assert lightness == sorted(lightness) and len(set(lightness)) == len(MARGINS)

    shuffled = runs.sample(frac=1.0, random_state=3)
    assert config_colours(shuffled, ["head.margin"]) == colours


def test_a_margin_has_one_colour_whatever_else_was_swept():
    low = config_colours(make_runs(margins=(0.0, 0.3)), ["head.margin"])
    high = config_colours(make_runs(margins=(0.1, 0.3, 0.5)), ["head.margin"])
    alone = config_colours(make_runs(margins=(0.3,)), ["head.margin"])
    assert low[label(0.3)] == high[label(0.3)] == alone[label(0.3)]
    # viridis over the declared margin range [0, 0.5]: 0.3 sits at 60% of the used span
    start, stop = style.SEQUENTIAL_SPAN
    expected = to_hex(colormaps["viridis"](start + 0.6 * (stop - start)))
    assert low[label(0.3)] == expected
    assert low[label(0.0)] != high[label(0.5)]


def test_a_range_declared_for_a_key_fixes_its_colours_and_values_outside_widen_it():
    runs = make_runs(margins=(0.0, 0.3))
    narrow = config_colours(runs, ["head.margin"], ranges={"head.margin": (0.0, 0.3)})
    wide = config_colours(runs, ["head.margin"], ranges={"head.margin": (0.0, 1.0)})
    assert narrow[label(0.3)] != wide[label(0.3)]
    assert style.colour_span("head.margin", [0.0, 0.7], {"head.margin": (0.0, 0.5)}) == (0.0, 0.7)
    assert style.colour_span("other", [2.0, 5.0], {}) == (2.0, 5.0)


def test_categorical_colours_are_colour_blind_safe_and_fixed_for_known_names():
    runs = pd.DataFrame(
        {"run_id": list("abcd"), "head.name": ["softmax", "arcface", "cosface", "arcface"]}
    )
    colours = config_colours(runs, ["head.name"])
    assert list(colours) == ["head.name=arcface", "head.name=cosface", "head.name=softmax"]
    assert len(set(colours.values())) == 3
    assert set(colours.values()) <= set(style.OKABE_ITO)
    assert colours["head.name=arcface"] == style.CATEGORY_COLOURS["arcface"]
    other = pd.DataFrame({"run_id": ["x", "y"], "head.name": ["arcface", "linear"]})
    assert (
        config_colours(other, ["head.name"])["head.name=arcface"]
        == (colours["head.name=arcface"])
    )


def test_many_configurations_fall_back_to_a_larger_palette():
    runs = pd.DataFrame(
        {"run_id": [str(i) for i in range(12)], "tag": [f"t{i}" for i in range(12)]}
    )
    colours = config_colours(runs, ["tag"])
    assert len(set(colours.values())) == 12



# --- fixed-p baselines: one definition for the table and the figure -----------------------------

# run id -> (its configured model.pool, test mAP); resolved configs name every option they set
FIXED_P_SWEEP = {
    "sgem2": ({"name": "sgem", "p": 2.0, "learnable": False}, 0.5),  # not gem, p fixed
    "sgem4": ({"name": "sgem", "p": 4.0, "learnable": False}, 0.6),
    "group2": ({"name": "gem", "p": 2.0, "learnable": False, "mode": "group", "groups": 4}, 0.9),
    "learned": ({"name": "gem", "p": 4.0, "learnable": True}, 0.99),  # a learnable p: out
    "avg": ({"name": "avg"}, 0.1),  # no p at all: out
}


def write_fixed_p_sweep(root: Path, pools: dict[str, tuple[dict, float]]) -> results.Results:
    """A finished sweep over ``model.pool.p`` on disk, each run with its config.yaml, read back
    by ``results.load`` (which flattens the configs: ``groups`` of the group GeM reads 4.0,
    as the avg run has none)."""
    results.write_yaml(root / results.EXPERIMENT_FILE, {"name": "fixed", "sweep": {"grid": {"model.pool.p": [2.0, 4.0]}}})
    runs = pd.DataFrame(
        {"run_id": run, "run_dir": run, "model.pool.p": pool.get("p"), "status": "done"} for run, (pool, _) in pools.items()
    )
    results.write_csv(root / results.RUNS_FILE, runs)
    for run, (pool, test_map) in pools.items():
        files = results.RunFiles(root / run)
        results.update_status(files, run_id=run, status="done", test_map=test_map, test_accuracy=test_map)
        results.write_yaml(files.config, {"name": "fixed", "model": {"pool": pool}})
    return results.load(root)


def test_the_fixed_p_table_and_figure_take_the_same_runs_whatever_the_pool(tmp_path):
    loaded = write_fixed_p_sweep(tmp_path, FIXED_P_SWEEP)
    fixed = fixed_p_runs(loaded.runs, loaded.configs)
    assert dict(zip(fixed["run_id"], fixed["p"], strict=True)) == {"sgem2": 2.0, "sgem4": 4.0, "group2": 2.0}

    curve = stats.fixed_p_curve(loaded)  # the table (fixed_p.csv / .md)
    assert curve[["p", "seeds"]].values.tolist() == [[2.0, 2], [4.0, 1]]
    assert curve["test_map"].tolist() == pytest.approx([0.7, 0.6])

    fig = fixed_p_curve_figure(sweep_data([loaded]))  # the figure
    map_axes = next(ax for ax in fig.axes if ax.get_title() == "test mAP")
    (line,) = map_axes.get_lines()
    assert list(line.get_xdata()) == [2.0, 4.0]
    assert list(line.get_ydata()) == pytest.approx(curve["test_map"].tolist())


def test_a_pool_this_version_cannot_build_is_one_line_naming_the_run(tmp_path):
    loaded = write_fixed_p_sweep(tmp_path, {"old": ({"name": "gem_v0", "p": 2.0}, 0.5)})
    with pytest.raises(UserError) as error:
        fixed_p_runs(loaded.runs, loaded.configs)
    assert str(error.value).startswith("run old: model.pool: not a pool this version can build (unknown pool 'gem_v0';")
