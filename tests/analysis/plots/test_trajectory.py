"""Tests for pooling_lab.analysis.plots.trajectory: p over training, accuracy per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from pooling_lab.analysis.layout import Layout
from pooling_lab.analysis.plots.trajectory import p_trajectory_figure

from ..frames import SEEDS, STEPS, label, legend_labels, lines_by_label, make_data, p_value


def test_trajectory_figure_draws_the_seed_means_and_dots_unfinished_runs():
    data = make_data({"m10-s1": "diverged"})
    fig = p_trajectory_figure(data, Layout(title="drift"))
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

