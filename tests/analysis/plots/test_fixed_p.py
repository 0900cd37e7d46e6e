"""Tests for pooling_lab.analysis.plots.fixed_p: the train-time optimum curve."""

from __future__ import annotations

import pandas as pd
import pytest

from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.plots.fixed_p import fixed_p_curve_figure


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
        "model.pool.name": ["gem"] * 5,
        "model.pool.learnable": [False, False, False, False, True],  # e learned its p: left out
        "model.pool.p": [1.0, 1.0, 4.0, 4.0, 4.0],
    })
    fig = fixed_p_curve_figure(SweepData(runs, ["model.pool.p"], configs=configs))
    map_axes = next(ax for ax in fig.axes if ax.get_title() == "test mAP")
    (line,) = map_axes.get_lines()
    assert list(line.get_xdata()) == [1.0, 4.0]
    assert list(line.get_ydata()) == pytest.approx([0.6, 0.85])
    assert fixed_p_curve_figure(SweepData(runs, ["model.pool.p"])) is None

