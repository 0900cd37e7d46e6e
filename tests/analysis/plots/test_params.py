"""Tests for pooling_lab.analysis.plots.params: per-channel histograms and metrics against p."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.plots.params import (
    HIST_BINS,
    metric_vs_p_figure,
    p_histograms_figure,
    per_channel_params,
)

from ..frames import (
    CHANNEL_OFFSETS,
    MARGINS,
    SEEDS,
    final_accuracy,
    final_map,
    label,
    legend_labels,
    make_data,
    make_final_params,
    make_runs,
    p_final,
)


def test_p_histograms_pool_the_channels_of_all_seeds_on_shared_bins():
    fig = p_histograms_figure(make_data(per_channel=True))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [label(m) for m in MARGINS]
    all_values = make_final_params(per_channel=True)["value"]
    edges = np.linspace(all_values.min(), all_values.max(), HIST_BINS + 1)
    for ax, margin in zip(axes, MARGINS, strict=True):
        values = [p_final(margin, s) + o for s in SEEDS for o in CHANNEL_OFFSETS]
        bars = ax.patches
        assert [bar.get_x() for bar in bars] == pytest.approx(edges[:-1])
        assert [bar.get_height() for bar in bars] == list(np.histogram(values, edges)[0])
        (mean_line,) = ax.get_lines()
        assert mean_line.get_xdata()[0] == pytest.approx(np.mean(values))
        assert ax.get_xlim() == pytest.approx((edges[0], edges[-1]))


def test_p_histograms_are_skipped_for_scalar_parameters():
    assert p_histograms_figure(make_data(per_channel=False)) is None
    assert per_channel_params(make_final_params(per_channel=False)).empty


def test_metric_vs_p_draws_one_dot_per_run_per_metric():
    fig = metric_vs_p_figure(make_data({"m2-s1": "failed"}))
    accuracy_ax, map_ax = fig.axes
    assert accuracy_ax.get_ylabel() == "test accuracy" and map_ax.get_ylabel() == "test mAP"
    for ax, metric in ((accuracy_ax, final_accuracy), (map_ax, final_map)):
        points = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets().tolist())
        expected = sorted((p_final(m, s), metric(m, s)) for m in MARGINS for s in SEEDS)
        assert_allclose(points, expected)
    assert "head.margin=2 (failed)" in legend_labels(fig)


def test_metric_vs_p_keeps_the_panels_that_have_data():
    runs = make_runs().drop(columns="test_map")
    fig = metric_vs_p_figure(SweepData(runs, ["head.margin"]))
    assert [ax.get_title() for ax in fig.axes] == ["test accuracy"]
    assert metric_vs_p_figure(SweepData(runs.assign(p_final=math.nan))) is None

