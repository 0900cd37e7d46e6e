"""Tests for pooling_lab.analysis.plots: every figure of PLOTS, which ones have data, and the
written files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pooling_lab.analysis.groups import SweepData, config_colours
from pooling_lab.analysis.layout import DEFAULT_LAYOUT
from pooling_lab.analysis.plots import PLOTS, plot_results

from ..frames import (
    assert_figure_files,
    drawn_colours,
    label,
    make_data,
    make_metrics,
    make_params,
    make_probe,
    make_runs,
)


@pytest.mark.parametrize(
    "kind", ["p_trajectory", "probe_curves", "p_histograms", "metric_vs_p", "accuracy"]
)
def test_every_figure_colours_a_configuration_alike(kind):
    data = make_data(per_channel=True)
    colour = config_colours(data.runs, data.swept)[label(2.0)]
    assert drawn_colours(PLOTS[kind](data, DEFAULT_LAYOUT), label(2.0)) == {colour}



def test_plot_results_writes_every_figure(tmp_path):
    data = make_data({"m2-s0": "diverged"}, per_channel=True)
    paths = plot_results(
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
    assert_figure_files(paths, tmp_path, [name for name in PLOTS if name != "fixed_p_curve"])


def drawn(data: SweepData) -> list[str]:
    """The figures that have something to draw, each laid out once (as saving would)."""
    names = []
    for name, draw in PLOTS.items():
        fig = draw(data, DEFAULT_LAYOUT)
        if fig is not None:
            fig.draw_without_rendering()
            names.append(name)
    return names


def test_without_probe_and_final_params_the_issue_4_figures_are_left_out():
    data = make_data()
    no_probe = SweepData(
        data.runs.assign(p_opt=math.nan), data.swept, data.metrics, data.params
    )
    assert drawn(no_probe) == ["p_trajectory", "p_final", "metric_vs_p", "accuracy", "final_accuracy"]


def test_p_figures_are_skipped_without_p(tmp_path):
    runs = make_runs().assign(p_final=math.nan, p_opt=math.nan)
    metrics = make_metrics().assign(p=math.nan)
    paths = plot_results(runs, metrics, pd.DataFrame(), ["head.margin"], tmp_path)
    assert_figure_files(paths, tmp_path, ["accuracy", "final_accuracy"])


def test_single_run_single_step_without_sweep():
    runs = make_runs().iloc[[0]]
    params = make_params()
    params = params[(params["run_id"] == runs["run_id"].iloc[0]) & (params["step"] == 0)]
    data = SweepData(runs, [], make_metrics().iloc[[0]], params, make_probe().iloc[:3])
    assert drawn(data) == [
        "p_trajectory",
        "p_final",
        "p_drift",
        "regret",
        "probe_curves",
        "metric_vs_p",
        "accuracy",
        "final_accuracy",
    ]


def test_nothing_is_written_for_no_runs(tmp_path):
    empty = make_runs().iloc[0:0]
    assert plot_results(empty, make_metrics(), make_params(), [], tmp_path) == []
    assert list(tmp_path.iterdir()) == []

