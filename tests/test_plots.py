"""Tests for pooling_lab.plots: aggregation over seeds, colours, labels, the numbers each figure
draws (against hand-computed aggregates), and the written files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex, to_rgb
from numpy.testing import assert_allclose

from pooling_lab import plots, style

MARGINS = (0.0, 2.0, 10.0)  # numeric order differs from text order ("10" < "2")
SEEDS = (0, 1)
STEPS = (0, 10, 20)
EPOCHS = (1, 2)
PROBE_P = (1.0, 2.0, 4.0, 8.0, 16.0)  # spans 16x: a log axis
CHANNEL_OFFSETS = (-0.3, -0.1, 0.1, 0.3)
PER_CHANNEL_STATS = ("mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max")


def run_id(margin: float, seed: int) -> str:
    return f"m{margin:g}-s{seed}"


def p_value(margin: float, seed: int, step: int) -> float:
    return 3.0 - margin * step / 100 + 0.1 * seed


def p_final(margin: float, seed: int) -> float:
    return p_value(margin, seed, STEPS[-1])


def p_opt(margin: float, seed: int) -> float:
    return 4.0 + 0.1 * margin + 0.5 * seed


def final_accuracy(margin: float, seed: int) -> float:
    return 0.9 - 0.01 * margin + 0.001 * seed


def final_map(margin: float, seed: int) -> float:
    return 0.6 - 0.02 * margin + 0.003 * seed


def probe_map(margin: float, seed: int, p: float) -> float:
    return 0.5 + 0.01 * seed - 0.001 * margin * p


def probe_accuracy(margin: float, seed: int, p: float) -> float:
    return 0.8 + 0.02 * seed - 0.002 * p + 0.001 * margin


def make_runs(
    statuses: dict[str, str] | None = None, margins: tuple[float, ...] = MARGINS
) -> pd.DataFrame:
    statuses = statuses or {}
    rows = []
    for margin in margins:
        for seed in SEEDS:
            rid = run_id(margin, seed)
            rows.append(
                {
                    "run_id": rid,
                    "run_dir": rid,
                    "head.margin": margin,
                    "seed": seed,
                    "status": statuses.get(rid, "done"),
                    "p_final": p_final(margin, seed),
                    "p_opt": p_opt(margin, seed),
                    "test_accuracy": final_accuracy(margin, seed),
                    "test_map": final_map(margin, seed),
                    "val_accuracy": 0.88,
                }
            )
    return pd.DataFrame(rows)


def make_params(per_channel: bool = False, margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    stats = PER_CHANNEL_STATS if per_channel else ("value",)
    rows = []
    for margin in margins:
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


def make_metrics(margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    rows = []
    for margin in margins:
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


def make_probe(margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    rows = [
        {
            "run_id": run_id(margin, seed),
            "p": p,
            "accuracy": probe_accuracy(margin, seed, p),
            "map": probe_map(margin, seed, p),
            "recall@1": 0.7,
        }
        for margin in margins
        for seed in SEEDS
        for p in PROBE_P
    ]
    return pd.DataFrame(rows)


def make_final_params(per_channel: bool, margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    offsets = CHANNEL_OFFSETS if per_channel else (0.0,)
    rows = [
        {
            "run_id": run_id(margin, seed),
            "module": "pool",
            "param": "p",
            "index": index,
            "value": p_final(margin, seed) + offset,
        }
        for margin in margins
        for seed in SEEDS
        for index, offset in enumerate(offsets)
    ]
    return pd.DataFrame(rows)


def make_data(statuses: dict[str, str] | None = None, per_channel: bool = False) -> plots.SweepData:
    return plots.SweepData(
        runs=make_runs(statuses),
        swept=["head.margin"],
        metrics=make_metrics(),
        params=make_params(per_channel),
        probe=make_probe(),
        final_params=make_final_params(per_channel),
    )


def luminance(colour) -> float:
    red, green, blue = to_rgb(colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def label(margin: float) -> str:
    return f"head.margin={margin:g}"


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


def legend_labels(fig) -> list[str]:
    return [text.get_text() for text in fig.legends[0].get_texts()]


# --- aggregation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
def test_p_bands_are_mean_and_min_max_over_seeds(per_channel):
    groups = plots.run_groups(make_runs(), ["head.margin"])
    bands = plots.p_bands(make_params(per_channel), groups)
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

    bands = plots.p_bands(make_params(), groups)
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
    groups = plots.run_groups(runs, ["head.name", "model.pool.p"])
    assert groups["label"].tolist() == [
        "head.name=arcface, model.pool.p=1,2.5",
        "head.name=cosface, model.pool.p=init=3 (failed)",
    ]
    assert plots.run_groups(runs, [])["config"].tolist() == [plots.ALL_RUNS] * 2
    named = plots.run_groups(runs, ["head.name"], {"head.name": "loss"})
    assert named["config"].tolist() == ["loss=arcface", "loss=cosface"]


def test_format_value_is_compact():
    assert [plots.format_value(v) for v in (0.3, 3, 3.0, np.float64(0.5), True, "gem")] == [
        "0.3",
        "3",
        "3",
        "0.5",
        "True",
        "gem",
    ]
    # a component mapping, as given and as runs.csv stores it (JSON text), reads the same
    assert plots.format_value({"name": "gem", "p": 2.0}) == "gem,p=2"
    assert plots.format_value('{"name": "gem", "p": 2.0}') == "gem,p=2"
    assert plots.format_value([1, 2.5]) == "1,2.5"


def test_learned_p_is_the_mean_final_p_per_group():
    runs = make_runs({"m10-s1": "diverged"})
    learned = plots.learned_p(runs, plots.run_groups(runs, ["head.margin"]))
    assert learned[label(2.0)] == pytest.approx(np.mean([p_final(2.0, s) for s in SEEDS]))
    assert learned["head.margin=10 (diverged)"] == pytest.approx(p_final(10.0, 1))


# --- colours -------------------------------------------------------------------------------------


def test_numeric_key_colours_follow_the_value_order_and_ignore_row_order():
    runs = make_runs()
    colours = plots.config_colours(runs, ["head.margin"])
    ordered = [label(m) for m in sorted(MARGINS)]
    assert list(colours) == ordered
    lightness = [luminance(colours[name]) for name in ordered]
    assert lightness == sorted(lightness) and len(set(lightness)) == len(MARGINS)

    shuffled = runs.sample(frac=1.0, random_state=3)
    assert plots.config_colours(shuffled, ["head.margin"]) == colours


def test_a_margin_has_one_colour_whatever_else_was_swept():
    low = plots.config_colours(make_runs(margins=(0.0, 0.3)), ["head.margin"])
    high = plots.config_colours(make_runs(margins=(0.1, 0.3, 0.5)), ["head.margin"])
    alone = plots.config_colours(make_runs(margins=(0.3,)), ["head.margin"])
    assert low[label(0.3)] == high[label(0.3)] == alone[label(0.3)]
    # viridis over the declared margin range [0, 0.5]: 0.3 sits at 60% of the used span
    start, stop = style.SEQUENTIAL_SPAN
    expected = to_hex(colormaps["viridis"](start + 0.6 * (stop - start)))
    assert low[label(0.3)] == expected
    assert low[label(0.0)] != high[label(0.5)]


def test_a_range_declared_for_a_key_fixes_its_colours_and_values_outside_widen_it():
    runs = make_runs(margins=(0.0, 0.3))
    narrow = plots.config_colours(runs, ["head.margin"], ranges={"head.margin": (0.0, 0.3)})
    wide = plots.config_colours(runs, ["head.margin"], ranges={"head.margin": (0.0, 1.0)})
    assert narrow[label(0.3)] != wide[label(0.3)]
    assert style.colour_span("head.margin", [0.0, 0.7], {"head.margin": (0.0, 0.5)}) == (0.0, 0.7)
    assert style.colour_span("other", [2.0, 5.0], {}) == (2.0, 5.0)


def test_categorical_colours_are_colour_blind_safe_and_fixed_for_known_names():
    runs = pd.DataFrame(
        {"run_id": list("abcd"), "head.name": ["softmax", "arcface", "cosface", "arcface"]}
    )
    colours = plots.config_colours(runs, ["head.name"])
    assert list(colours) == ["head.name=arcface", "head.name=cosface", "head.name=softmax"]
    assert len(set(colours.values())) == 3
    assert set(colours.values()) <= set(style.OKABE_ITO)
    assert colours["head.name=arcface"] == style.CATEGORY_COLOURS["arcface"]
    other = pd.DataFrame({"run_id": ["x", "y"], "head.name": ["arcface", "linear"]})
    assert (
        plots.config_colours(other, ["head.name"])["head.name=arcface"]
        == (colours["head.name=arcface"])
    )


def test_many_configurations_fall_back_to_a_larger_palette():
    runs = pd.DataFrame(
        {"run_id": [str(i) for i in range(12)], "tag": [f"t{i}" for i in range(12)]}
    )
    colours = plots.config_colours(runs, ["tag"])
    assert len(set(colours.values())) == 12


# --- figures -------------------------------------------------------------------------------------


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_trajectory_figure_draws_the_seed_means_and_dots_unfinished_runs():
    data = make_data({"m10-s1": "diverged"})
    fig = plots.p_trajectory_figure(data, plots.Layout(title="drift"))
    (ax,) = fig.axes
    lines = lines_by_label(ax)
    mean_line = lines[label(2.0)]
    expected = [np.mean([p_value(2.0, seed, step) for seed in SEEDS]) for step in STEPS]
    assert list(mean_line.get_xdata()) == list(STEPS)
    assert list(mean_line.get_ydata()) == pytest.approx(expected)
    assert mean_line.get_linestyle() == "-"
    assert lines["head.margin=10 (diverged)"].get_linestyle() == ":"
    assert lines["head.margin=10 (diverged)"].get_color() == lines["head.margin=10"].get_color()
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "p"
    legend = fig.legends[0]
    assert "head.margin" in legend.get_title().get_text()
    assert "min–max" in legend.get_title().get_text()
    assert "head.margin=10 (diverged)" in legend_labels(fig)


def errorbar_data(container) -> tuple[list, list, list]:
    line, _, (bars,) = container.lines
    extents = [(segment[0][1], segment[1][1]) for segment in bars.get_segments()]
    return list(line.get_xdata()), list(line.get_ydata()), extents


def test_p_final_figure_places_numeric_values_and_shows_seed_extremes():
    fig = plots.p_final_figure(make_data())
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == list(MARGINS)
    (errorbar,) = ax.containers
    x, y, extents = errorbar_data(errorbar)
    finals = [[p_final(m, seed) for seed in SEEDS] for m in MARGINS]
    assert x == list(MARGINS)
    assert y == pytest.approx([np.mean(f) for f in finals])
    assert_allclose(extents, [(min(f), max(f)) for f in finals])


def test_p_final_figure_uses_categorical_slots_for_text_values():
    runs = make_runs()
    runs["head.name"] = ["arcface", "arcface", "cosface", "cosface", "softmax", "softmax"]
    fig = plots.p_final_figure(plots.SweepData(runs, ["head.name", "head.margin"]))
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [0.0, 1.0, 2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["arcface", "cosface", "softmax"]


def test_final_accuracy_figure_per_categorical_value():
    runs = make_runs()
    runs["model.pool"] = ["avg", "avg", "gem", "gem", "max", "max"]
    fig = plots.final_accuracy_figure(plots.SweepData(runs, ["model.pool"]))
    (ax,) = fig.axes
    (errorbar,) = ax.containers
    x, y, extents = errorbar_data(errorbar)
    by_pool = runs.groupby("model.pool")["test_accuracy"]
    assert x == [0.0, 1.0, 2.0]
    assert y == pytest.approx(list(by_pool.mean()))
    assert_allclose(extents, list(zip(by_pool.min(), by_pool.max(), strict=True)))
    assert ax.get_ylabel() == "test accuracy"


def test_p_drift_figure_draws_learned_p_and_p_opt_at_the_same_x():
    fig = plots.p_drift_figure(make_data())
    (ax,) = fig.axes
    learned, best = ax.containers
    finals = [[p_final(m, seed) for seed in SEEDS] for m in MARGINS]
    optima = [[p_opt(m, seed) for seed in SEEDS] for m in MARGINS]
    for container, values in ((learned, finals), (best, optima)):
        x, y, extents = errorbar_data(container)
        assert x == list(MARGINS)
        assert y == pytest.approx([np.mean(v) for v in values])
        assert_allclose(extents, [(min(v), max(v)) for v in values])
    learned_line, best_line = learned.lines[0], best.lines[0]
    assert (learned_line.get_marker(), learned_line.get_linestyle()) == ("o", "-")
    assert (best_line.get_marker(), best_line.get_linestyle()) == ("D", "--")
    dots = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert_allclose(
        sorted(map(tuple, np.vstack(dots).tolist())),
        sorted((m, value) for m in MARGINS for s in SEEDS for value in (p_final(m, s), p_opt(m, s))),
    )
    labels = legend_labels(fig)
    assert labels == ["learned p", plots.BEST.label, "individual seeds"]


def test_p_drift_figure_is_skipped_without_p_opt():
    data = make_data()
    no_probe = plots.SweepData(data.runs.assign(p_opt=math.nan), data.swept)
    assert plots.p_drift_figure(no_probe) is None
    assert plots.p_drift_figure(plots.SweepData(data.runs.drop(columns="p_opt"), [])) is None
    assert plots.p_final_figure(no_probe) is not None


def test_probe_curves_show_seed_means_with_the_learned_p_starred_on_a_log_axis():
    fig = plots.probe_curves_figure(make_data())
    map_ax, accuracy_ax = fig.axes
    assert map_ax.get_title() == "mAP" and accuracy_ax.get_title() == "accuracy"
    assert map_ax.get_xscale() == "log"
    assert list(map_ax.get_xticks()) == list(PROBE_P)
    for ax, metric in ((map_ax, probe_map), (accuracy_ax, probe_accuracy)):
        lines = lines_by_label(ax)
        for margin in MARGINS:
            curve = [np.mean([metric(margin, s, p) for s in SEEDS]) for p in PROBE_P]
            assert list(lines[label(margin)].get_xdata()) == list(PROBE_P)
            assert list(lines[label(margin)].get_ydata()) == pytest.approx(curve)
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(stars) == len(MARGINS)
        star = next(s for s in stars if s.get_color() == lines[label(2.0)].get_color())
        learned = np.mean([p_final(2.0, s) for s in SEEDS])  # 2.65: between p = 2 and p = 4
        at_2, at_4 = (np.mean([metric(2.0, s, p) for s in SEEDS]) for p in (2.0, 4.0))
        fraction = (math.log(learned) - math.log(2.0)) / (math.log(4.0) - math.log(2.0))
        assert star.get_xdata()[0] == pytest.approx(learned)
        assert star.get_ydata()[0] == pytest.approx(at_2 + fraction * (at_4 - at_2))
    assert "learned p (mean over seeds)" in legend_labels(fig)


def test_probe_curves_stay_linear_for_a_narrow_grid_and_are_skipped_without_probe():
    data = make_data()
    narrow = data.probe[data.probe["p"] <= 4.0]
    fig = plots.probe_curves_figure(plots.SweepData(data.runs, data.swept, probe=narrow))
    assert fig.axes[0].get_xscale() == "linear"
    assert plots.probe_curves_figure(plots.SweepData(data.runs, data.swept)) is None


def test_p_histograms_pool_the_channels_of_all_seeds_on_shared_bins():
    fig = plots.p_histograms_figure(make_data(per_channel=True))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [label(m) for m in MARGINS]
    all_values = make_final_params(per_channel=True)["value"]
    edges = np.linspace(all_values.min(), all_values.max(), plots.HIST_BINS + 1)
    for ax, margin in zip(axes, MARGINS, strict=True):
        values = [p_final(margin, s) + o for s in SEEDS for o in CHANNEL_OFFSETS]
        bars = ax.patches
        assert [bar.get_x() for bar in bars] == pytest.approx(edges[:-1])
        assert [bar.get_height() for bar in bars] == list(np.histogram(values, edges)[0])
        (mean_line,) = ax.get_lines()
        assert mean_line.get_xdata()[0] == pytest.approx(np.mean(values))
        assert ax.get_xlim() == pytest.approx((edges[0], edges[-1]))


def test_p_histograms_are_skipped_for_scalar_parameters():
    assert plots.p_histograms_figure(make_data(per_channel=False)) is None
    assert plots.per_channel_params(make_final_params(per_channel=False)).empty


def test_metric_vs_p_draws_one_dot_per_run_per_metric():
    fig = plots.metric_vs_p_figure(make_data({"m2-s1": "failed"}))
    accuracy_ax, map_ax = fig.axes
    assert accuracy_ax.get_ylabel() == "test accuracy" and map_ax.get_ylabel() == "test mAP"
    for ax, metric in ((accuracy_ax, final_accuracy), (map_ax, final_map)):
        points = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets().tolist())
        expected = sorted((p_final(m, s), metric(m, s)) for m in MARGINS for s in SEEDS)
        assert_allclose(points, expected)
    assert "head.margin=2 (failed)" in legend_labels(fig)


def test_metric_vs_p_keeps_the_panels_that_have_data():
    runs = make_runs().drop(columns="test_map")
    fig = plots.metric_vs_p_figure(plots.SweepData(runs, ["head.margin"]))
    assert [ax.get_title() for ax in fig.axes] == ["test accuracy"]
    assert plots.metric_vs_p_figure(plots.SweepData(runs.assign(p_final=math.nan))) is None


def drawn_colours(fig, name: str) -> set[str]:
    """Colours of the lines and dots labelled ``name`` and of the bars in the panel titled so."""
    colours = set()
    for ax in fig.axes:
        colours |= {to_hex(line.get_color()) for line in ax.get_lines() if line.get_label() == name}
        colours |= {to_hex(c.get_edgecolor()[0]) for c in ax.collections if c.get_label() == name}
        if ax.get_title() == name:
            colours |= {to_hex(bar.get_facecolor()) for bar in ax.patches}
    return colours


@pytest.mark.parametrize(
    "kind", ["p_trajectory", "probe_curves", "p_histograms", "metric_vs_p", "accuracy"]
)
def test_every_figure_colours_a_configuration_alike(kind):
    data = make_data(per_channel=True)
    colour = plots.config_colours(data.runs, data.swept)[label(2.0)]
    assert drawn_colours(plots.PLOTS[kind](data, plots.DEFAULT_LAYOUT), label(2.0)) == {colour}


def test_layout_sets_size_labels_fonts_and_legend_place():
    layout = plots.Layout(
        size_in=(3.3, 2.4),
        xlabel="margin m (rad)",
        ylabel="GeM p",
        legend="below",
        names={"head.margin": "m"},
        style=style.Style(font_size=7),
    )
    fig = plots.p_trajectory_figure(make_data(), layout)
    assert tuple(fig.get_size_inches()) == pytest.approx((3.3, 2.4))
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("margin m (rad)", "GeM p")
    assert ax.xaxis.label.get_fontsize() == 7
    assert ax.get_xticklabels()[0].get_fontsize() == 6
    legend = fig.legends[0]
    assert legend_labels(fig)[:3] == ["m=0", "m=2", "m=10"]
    assert legend.get_texts()[0].get_fontsize() == 6
    fig.draw_without_rendering()
    assert legend.get_window_extent().y1 < ax.get_window_extent().y0  # below the panel
    no_legend = plots.p_trajectory_figure(make_data(), plots.Layout(legend="none"))
    assert no_legend.legends == []


def test_plot_results_writes_every_figure(tmp_path):
    data = make_data({"m2-s0": "diverged"}, per_channel=True)
    paths = plots.plot_results(
        data.runs,
        data.metrics,
        data.params,
        ["head.margin"],
        tmp_path,
        title="p drift",
        probe=data.probe,
        final_params=data.final_params,
    )
    # every figure but the fixed-p curve, which needs runs of a fixed p (tested on its own)
    assert_figure_files(paths, tmp_path, [name for name in plots.PLOTS if name != "fixed_p_curve"])


def drawn(data: plots.SweepData) -> list[str]:
    """The figures that have something to draw, each laid out once (as saving would)."""
    names = []
    for name, draw in plots.PLOTS.items():
        fig = draw(data, plots.DEFAULT_LAYOUT)
        if fig is not None:
            fig.draw_without_rendering()
            names.append(name)
    return names


def test_without_probe_and_final_params_the_issue_4_figures_are_left_out():
    data = make_data()
    no_probe = plots.SweepData(
        data.runs.assign(p_opt=math.nan), data.swept, data.metrics, data.params
    )
    assert drawn(no_probe) == ["p_trajectory", "p_final", "metric_vs_p", "accuracy", "final_accuracy"]


def test_p_figures_are_skipped_without_p(tmp_path):
    runs = make_runs().assign(p_final=math.nan, p_opt=math.nan)
    metrics = make_metrics().assign(p=math.nan)
    paths = plots.plot_results(runs, metrics, pd.DataFrame(), ["head.margin"], tmp_path)
    assert_figure_files(paths, tmp_path, ["accuracy", "final_accuracy"])


def test_single_run_single_step_without_sweep():
    runs = make_runs().iloc[[0]]
    params = make_params()
    params = params[(params["run_id"] == runs["run_id"].iloc[0]) & (params["step"] == 0)]
    data = plots.SweepData(runs, [], make_metrics().iloc[[0]], params, make_probe().iloc[:3])
    assert drawn(data) == [
        "p_trajectory",
        "p_final",
        "p_drift",
        "probe_curves",
        "metric_vs_p",
        "accuracy",
        "final_accuracy",
    ]


def test_nothing_is_written_for_no_runs(tmp_path):
    empty = make_runs().iloc[0:0]
    assert plots.plot_results(empty, make_metrics(), make_params(), [], tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_fixed_p_curve_draws_test_metrics_against_the_fixed_p():
    runs = pd.DataFrame({
        "run_id": ["a", "b", "c", "d", "e"],
        "model.pool.p": [1.0, 1.0, 4.0, 4.0, 4.0],
        "seed": [0, 1, 0, 1, 0],
        "status": ["done"] * 5,
        "test_map": [0.5, 0.7, 0.8, 0.9, 0.1],
        "test_accuracy": [0.6, 0.6, 0.9, 0.9, 0.2],
    })
    configs = pd.DataFrame({
        "run_id": list("abcde"),
        "model.pool.learnable": [False, False, False, False, True],  # e learned its p: left out
        "model.pool.p": [1.0, 1.0, 4.0, 4.0, 4.0],
    })
    fig = plots.fixed_p_curve_figure(plots.SweepData(runs, ["model.pool.p"], configs=configs))
    map_axes = next(ax for ax in fig.axes if ax.get_title() == "test mAP")
    (line,) = map_axes.get_lines()
    assert list(line.get_xdata()) == [1.0, 4.0]
    assert list(line.get_ydata()) == pytest.approx([0.6, 0.85])
    assert plots.fixed_p_curve_figure(plots.SweepData(runs, ["model.pool.p"])) is None


# --- what a reader sees: room for the data, no claims the data cannot back ---------------------


def axes_width_fraction(fig) -> float:
    """The share of the figure's width from the left edge of its leftmost panel to the right edge
    of its rightmost one (as drawn)."""
    fig.draw_without_rendering()
    boxes = [ax.get_window_extent() for ax in fig.axes if ax.get_visible()]
    return (max(box.x1 for box in boxes) - min(box.x0 for box in boxes)) / fig.bbox.width


@pytest.mark.parametrize("name", [name for name in plots.PLOTS if name != "fixed_p_curve"])
def test_the_legend_leaves_most_of_the_width_to_the_panels(name):
    fig = plots.PLOTS[name](make_data({"m2-s1": "failed"}, per_channel=True), plots.Layout(title="p drift"))
    assert axes_width_fraction(fig) >= 0.75
    legend = fig.legends[0].get_window_extent()  # kept, and within the figure
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.width and legend.y0 >= 0


def one_seed(data: plots.SweepData) -> plots.SweepData:
    """``data`` with the runs of seed 0 only."""
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["run_id"].str.endswith("-s0")]

    return plots.SweepData(keep(data.runs), data.swept, keep(data.metrics), keep(data.params),
                           keep(data.probe), keep(data.final_params))


def legend_texts(fig) -> str:
    return " | ".join(
        text.get_text() for legend in fig.legends for text in [legend.get_title(), *legend.get_texts()]
    )


@pytest.mark.parametrize("name", [name for name in plots.PLOTS if name != "fixed_p_curve"])
def test_one_seed_gets_no_seed_statistics_in_the_legend(name):
    fig = plots.PLOTS[name](one_seed(make_data(per_channel=True)), plots.DEFAULT_LAYOUT)
    texts = legend_texts(fig)
    assert "seed" not in texts and "min–max" not in texts and "error bars" not in texts
    assert fig.legends  # a legend is still drawn
    with_seeds = legend_texts(plots.PLOTS[name](make_data(per_channel=True), plots.DEFAULT_LAYOUT))
    assert "seed" in with_seeds or name == "metric_vs_p"  # one dot per run: no statistic to name


def test_one_seed_draws_no_error_bars_and_no_seed_dots():
    ax = plots.p_drift_figure(one_seed(make_data())).axes[0]
    assert not any(container.has_yerr for container in ax.containers)
    assert len(ax.collections) == 0  # the faint per-seed dots would sit on the means


def test_a_learned_p_beyond_the_probed_grid_is_marked_at_the_end_of_its_curve():
    data = make_data()
    runs = data.runs.assign(p_final=np.where(data.runs["head.margin"] == 2.0, 22.0, data.runs["p_final"]))
    fig = plots.probe_curves_figure(plots.SweepData(runs, data.swept, probe=data.probe))
    end = max(PROBE_P)
    for ax, metric in zip(fig.axes, (probe_map, probe_accuracy), strict=True):
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert max(x for star in stars for x in star.get_xdata()) <= end  # nothing drawn past the data
        colour = lines_by_label(ax)[label(2.0)].get_color()
        (beyond,) = [star for star in stars if star.get_color() == colour]
        assert to_hex(beyond.get_markerfacecolor()) == "#ffffff"  # open: not a measured point
        assert beyond.get_xdata()[0] == end
        assert beyond.get_ydata()[0] == pytest.approx(np.mean([metric(2.0, s, end) for s in SEEDS]))
        assert [text.get_text() for text in ax.texts] == ["p = 22 →"]
        inside = [star for star in stars if star is not beyond]
        assert all(to_hex(star.get_markerfacecolor()) != "#ffffff" for star in inside)
    assert "learned p beyond the probed p (value shown)" in legend_labels(fig)


def test_a_long_probe_grid_on_a_log_axis_is_labelled_with_p_values():
    grid = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    probe = pd.DataFrame(
        [{"run_id": run_id(m, s), "p": float(p), "map": probe_map(m, s, p), "accuracy": probe_accuracy(m, s, p)}
         for m in MARGINS for s in SEEDS for p in grid]
    )
    fig = plots.probe_curves_figure(plots.SweepData(make_runs(), ["head.margin"], probe=probe))
    fig.draw_without_rendering()
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert [text.get_text() for text in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32", "64"]
        assert list(ax.get_xticks()) == [1, 2, 4, 8, 16, 32, 64]
