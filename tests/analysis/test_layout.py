"""Tests for pooling_lab.analysis.layout: size, labels, fonts and the legend of a figure, and
what a reader sees: room for the data, no claims the data cannot back."""

from __future__ import annotations

import pytest

from pooling_lab.analysis import style
from pooling_lab.analysis.layout import DEFAULT_LAYOUT, Layout
from pooling_lab.analysis.plots import PLOTS
from pooling_lab.analysis.plots.trajectory import p_trajectory_figure

from .frames import axes_width_fraction, legend_labels, legend_texts, make_data, one_seed


def test_layout_sets_size_labels_fonts_and_legend_place():
    layout = Layout(
        size_in=(3.3, 2.4),
        xlabel="margin m (rad)",
        ylabel="GeM p",
        legend="below",
        names={"head.margin": "m"},
        style=style.Style(font_size=7),
    )
    fig = p_trajectory_figure(make_data(), layout)
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
    no_legend = p_trajectory_figure(make_data(), Layout(legend="none"))
    assert no_legend.legends == []



# --- what a reader sees: room for the data, no claims the data cannot back ---------------------


@pytest.mark.parametrize("name", [name for name in PLOTS if name != "fixed_p_curve"])
def test_the_legend_leaves_most_of_the_width_to_the_panels(name):
    fig = PLOTS[name](make_data({"m2-s1": "failed"}, per_channel=True), Layout(title="p drift"))
    assert axes_width_fraction(fig) >= 0.75
    legend = fig.legends[0].get_window_extent()  # kept, and within the figure
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.width and legend.y0 >= 0



@pytest.mark.parametrize("name", [name for name in PLOTS if name != "fixed_p_curve"])
def test_one_seed_gets_no_seed_statistics_in_the_legend(name):
    fig = PLOTS[name](one_seed(make_data(per_channel=True)), DEFAULT_LAYOUT)
    texts = legend_texts(fig)
    assert "seed" not in texts and "min–max" not in texts and "error bars" not in texts
    assert fig.legends  # a legend is still drawn
    with_seeds = legend_texts(PLOTS[name](make_data(per_channel=True), DEFAULT_LAYOUT))
    assert "seed" in with_seeds or name == "metric_vs_p"  # one dot per run: no statistic to name

