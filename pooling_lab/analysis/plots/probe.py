"""Probe curves: validation mAP and accuracy against the test-time p each trained model was
evaluated with, one curve per configuration, its mean learned p starred on it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pooling_lab.analysis.groups import (
    SweepData,
    has_values,
    learned_p,
    ordered_groups,
    seed_bands,
    several_seeds,
)
from pooling_lab.analysis.layout import (
    BAND,
    DEFAULT_LAYOUT,
    MARKER_SIZE,
    Layout,
    draw_bands,
    finish,
    legend_title,
    new_figure,
)
from pooling_lab.experiment.labels import format_value

BEYOND = "learned p beyond the probed p (value shown)"
PROBE_METRICS = {"map": "mAP", "accuracy": "accuracy"}  # probe.csv column -> panel name
LOG_X_RATIO = 8.0  # probe curves get a log x axis when the p grid spans more than this
MAX_GRID_TICKS = 10


def _log_scale(p: pd.Series) -> bool:
    grid = p[np.isfinite(p)]
    return bool(grid.min() > 0 and grid.max() / grid.min() > LOG_X_RATIO)


def _p_axis(ax: Axes, grid: Sequence[float], log_x: bool) -> None:
    """Test-time p axis: log-scaled when asked, ticks at the probed values (every k-th of them
    when there are more than ``MAX_GRID_TICKS``), labelled with the values themselves."""
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks([], minor=True)
    ticks = list(grid)[:: math.ceil(len(grid) / MAX_GRID_TICKS)]
    ax.set_xticks(ticks, [format_value(p) for p in ticks])


def _star(colour: Any, filled: bool) -> dict[str, Any]:
    """How a learned p is marked: a filled star on its curve, an open one where it is off it."""
    return {
        "marker": "*",
        "markersize": 2.2 * MARKER_SIZE,
        "color": colour,
        "markerfacecolor": colour if filled else "white",
        "markeredgecolor": "black" if filled else colour,
        "markeredgewidth": 0.5 if filled else 1.0,
        "linestyle": "none",
    }


def _mark_learned(
    ax: Axes, bands: pd.DataFrame, learned: pd.Series, colours: dict[str, Any], log_x: bool
) -> bool:
    """A star on each group's curve at the group's mean learned p (interpolated along the line
    as drawn, i.e. in log p on a log axis).  A learned p outside the probed range has no point
    on the curve: an open star at the curve's end nearest to it, labelled with its value, stands
    for it.  Returns whether some learned p was outside."""
    scale = np.log if log_x else np.asarray
    outside = False
    for config, label, _, rows in ordered_groups(bands, colours):
        p = learned.get(label, math.nan)
        if not math.isfinite(p):
            continue
        grid, values = rows["p"].to_numpy(), rows["mean"].to_numpy()
        if grid[0] <= p <= grid[-1]:
            y = np.interp(scale(p), scale(grid), values)
            ax.plot([p], [y], **_star(colours[config], filled=True), zorder=3)
            continue
        outside = True
        end = 0 if p < grid[0] else -1
        ax.plot([grid[end]], [values[end]], **_star(colours[config], filled=False), zorder=3)
        text, side = (f"← p = {p:.3g}", 1) if end == 0 else (f"p = {p:.3g} →", -1)
        ax.annotate(text, (grid[end], values[end]), xytext=(6 * side, 5), textcoords="offset points",
                    ha="left" if side > 0 else "right", va="bottom")
    return outside


def probe_curves_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Validation mAP and accuracy against test-time p (one panel each), one curve per
    configuration (mean and min-max band over seeds), its mean learned p starred on it;
    ``None`` without probe results."""
    probe = data.probe
    metrics = [metric for metric in PROBE_METRICS if has_values(probe, "p", metric)]
    if not metrics:
        return None
    groups = layout.groups(data.runs, data.swept)
    colours = layout.colours(data.runs, data.swept)
    long = probe.melt(id_vars=["run_id", "p"], value_vars=metrics, var_name="metric")
    bands = seed_bands(long, groups, x="p", y="value", by=("metric",))
    if bands.empty:
        return None
    probed = data.runs[data.runs["run_id"].isin(probe["run_id"])]
    learned = learned_p(probed, groups)
    grid = sorted(bands["p"].unique())
    log_x = _log_scale(bands["p"])
    fig, axes = new_figure(len(metrics), layout)
    outside = False
    for ax, metric in zip(axes, metrics, strict=True):
        rows = bands[bands["metric"] == metric]
        draw_bands(ax, rows, "p", colours)
        outside |= _mark_learned(ax, rows, learned, colours, log_x)
        _p_axis(ax, grid, log_x)
        ax.set_title(PROBE_METRICS[metric])
        ax.set_xlabel("test-time p")
        ax.set_ylabel(f"validation {PROBE_METRICS[metric]}")
    seeds = several_seeds(bands)
    markers = [Line2D([], [], **_star("grey", filled=True), label="learned p (mean over seeds)" if seeds else "learned p")]
    if outside:
        markers.append(Line2D([], [], **_star("grey", filled=False), label=BEYOND))
    return finish(fig, layout, legend_title(layout, data.swept, BAND if seeds else None), markers)
