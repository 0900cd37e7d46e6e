"""Tests for pooling_lab.analysis.plots.probe: the probe curves and the learned p starred on them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.plots.probe import probe_curves_figure

from ..frames import (
    MARGINS,
    PROBE_P,
    SEEDS,
    label,
    legend_labels,
    lines_by_label,
    make_data,
    make_runs,
    p_final,
    probe_accuracy,
    probe_map,
    run_id,
)


def test_probe_curves_show_seed_means_with_the_learned_p_starred_on_a_log_axis():
    fig = probe_curves_figure(make_data())
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
    fig = probe_curves_figure(SweepData(data.runs, data.swept, probe=narrow))
    assert fig.axes[0].get_xscale() == "linear"
    assert probe_curves_figure(SweepData(data.runs, data.swept)) is None



def test_a_learned_p_beyond_the_probed_grid_is_marked_at_the_end_of_its_curve():
    data = make_data()
    runs = data.runs.assign(p_final=np.where(data.runs["head.margin"] == 2.0, 22.0, data.runs["p_final"]))
    fig = probe_curves_figure(SweepData(runs, data.swept, probe=data.probe))
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
    fig = probe_curves_figure(SweepData(make_runs(), ["head.margin"], probe=probe))
    fig.draw_without_rendering()
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert [text.get_text() for text in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32", "64"]
        assert list(ax.get_xticks()) == [1, 2, 4, 8, 16, 32, 64]
