"""Probe curves: validation mAP and accuracy against the test-time p each trained model was
evaluated with, one curve per configuration, its mean learned p starred on it.  The curve runs
over the probe grid's finite p; p = inf (max pooling) is a point of its own at a marked position
past them (``layout.PAxis``), joined to the curve by a dotted line.  A run's probe point at its
own learned p (off the grid, ``on_grid`` false) is not part of the curves: the seeds' learned p
differ, so it would pool no seeds."""

from __future__ import annotations

import math
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
    PAxis,
    draw_bands,
    finish,
    legend_title,
    linestyle,
    new_figure,
)
from pooling_lab.evaluate.probe import ON_GRID

BEYOND = "learned p beyond the probed p (value shown)"
PROBE_METRICS = {"map": "mAP", "accuracy": "accuracy"}  # probe.csv column -> panel name


def grid_rows(probe: pd.DataFrame) -> pd.DataFrame:
    """The probe rows at the grid's p (all of them in a probe.csv without ``on_grid``)."""
    if ON_GRID not in probe:
        return probe
    return probe[probe[ON_GRID].fillna(True).astype(bool)]


def _draw_inf(ax: Axes, bands: pd.DataFrame, colours: dict[str, Any], inf_at: float) -> None:
    """Each group's point at p = inf (drawn at ``inf_at``), with its min-max bar over seeds,
    joined by a dotted line to the group's last finite point."""
    for config, _, done, rows in ordered_groups(bands, colours):
        at_inf = rows[rows["p"] == inf_at]
        if at_inf.empty:
            continue
        point, colour = at_inf.iloc[0], colours[config]
        finite = rows[rows["p"] < inf_at]
        if not finite.empty:
            last = finite.iloc[-1]
            ax.plot([last["p"], inf_at], [last["mean"], point["mean"]], color=colour, linestyle=":", linewidth=1.0)
        spread = [[point["mean"] - point["low"]], [point["high"] - point["mean"]]] if point["seeds"] > 1 else None
        ax.errorbar([inf_at], [point["mean"]], yerr=spread, color=colour, marker="o", markersize=MARKER_SIZE,
                    markerfacecolor=colour if done else "white", linestyle=linestyle(done), capsize=2)


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
    """A star on each group's curve (``bands`` at finite p) at the group's mean learned p (interpolated along the line
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
    probe = grid_rows(data.probe)
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
    grid = sorted(p for p in bands["p"].unique() if np.isfinite(p))
    axis = PAxis.of(bands["p"])
    bands = bands.assign(p=axis.place(bands["p"]))
    fig, axes = new_figure(len(metrics), layout)
    outside = False
    for ax, metric in zip(axes, metrics, strict=True):
        rows = bands[bands["metric"] == metric]
        finite = rows[rows["p"] <= axis.top]
        draw_bands(ax, finite, "p", colours)
        if axis.inf_at is not None:
            _draw_inf(ax, rows, colours, axis.inf_at)
        outside |= _mark_learned(ax, finite, learned, colours, axis.log)
        axis.draw(ax, "x", grid)
        ax.set_title(PROBE_METRICS[metric])
        ax.set_xlabel("test-time p")
        ax.set_ylabel(f"validation {PROBE_METRICS[metric]}")
    seeds = several_seeds(bands)
    markers = [Line2D([], [], **_star("grey", filled=True), label="learned p (mean over seeds)" if seeds else "learned p")]
    if outside:
        markers.append(Line2D([], [], **_star("grey", filled=False), label=BEYOND))
    return finish(fig, layout, legend_title(layout, data.swept, BAND if seeds else None), markers)
