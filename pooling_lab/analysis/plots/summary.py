"""One number per run against the first swept key: the final learned p, the p-drift figure
(learned p beside ``p_opt``, the probe's best test-time p, and the plateau's p), the mAP regret
at the learned p and the final test accuracy; per configuration of the other swept keys the mean
over seeds with min-max error bars, and every run as a faint dot.  In the p-drift figure p = inf
(max pooling) sits at a marked position past the largest finite p (``layout.PAxis``); a mean over
seeds that includes it is inf."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pooling_lab.analysis.drift import with_probe_summary
from pooling_lab.analysis.groups import (
    ALL_RUNS,
    SweepData,
    has_values,
    is_number,
    ordered_groups,
    seed_bands,
    several_seeds,
    sort_key,
)
from pooling_lab.analysis.layout import (
    DEFAULT_LAYOUT,
    MARKER_SIZE,
    Layout,
    PAxis,
    finish,
    legend_title,
    linestyle,
    new_figure,
)
from pooling_lab.experiment.labels import format_value

ERROR_BARS = "mean over seeds, error bars: min–max"


@dataclass(frozen=True)
class PSeries:
    """A per-run column (p, or a final metric) drawn against the first swept key, and how."""

    column: str
    label: str
    marker: str
    linestyle: str
    filled: bool


LEARNED = PSeries("p_final", "learned p", "o", "-", filled=True)
BEST = PSeries("p_opt", "p_opt (best test-time p, val mAP)", "D", "--", filled=False)
PLATEAU = PSeries("p_plateau", "p_plateau (smallest p near the best)", "v", ":", filled=False)
REGRET = PSeries("regret", "regret: val mAP at p_opt − at the learned p", "s", "-", filled=True)
ACCURACY = PSeries("test_accuracy", "test accuracy", "s", "-", filled=True)


def _positions(values: pd.Series) -> tuple[pd.Series, list[float], list[str]]:
    """x positions of a swept column: the values when all numeric, else categorical slots."""
    unique = sorted(
        {format_value(value): value for value in values}.items(),
        key=lambda item: sort_key(item[1]),
    )
    labels = [text for text, _ in unique]
    if all(is_number(value) for _, value in unique):
        ticks = [float(value) for _, value in unique]
    else:
        ticks = [float(index) for index in range(len(unique))]
    slot = dict(zip(labels, ticks, strict=True))
    return values.map(lambda value: slot[format_value(value)]).astype(float), ticks, labels


def _draw_p_series(
    ax: Axes,
    frame: pd.DataFrame,
    bands: pd.DataFrame,
    groups: pd.DataFrame,
    colours: dict[str, Any],
    series: PSeries,
    connect: bool,
    seeds: bool,
) -> None:
    """Per group the mean over seeds (``bands``), with min-max error bars where it pools several
    runs, and (``seeds``) every run of ``frame`` (``run_id``, ``_x`` and the series' column) as
    a faint marker."""
    for config, _, done, rows in ordered_groups(bands, colours):
        colour = colours[config]
        ax.errorbar(
            rows["_x"],
            rows["mean"],
            yerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]] if several_seeds(rows) else None,
            color=colour,
            linestyle=linestyle(done, series.linestyle) if connect else "none",
            marker=series.marker,
            markersize=MARKER_SIZE,
            markerfacecolor=colour if series.filled and done else "white",
            capsize=2,
        )
    if not seeds:
        return
    dots = frame.join(groups, on="run_id", how="inner")
    ax.scatter(
        dots["_x"],
        dots[series.column],
        s=10,
        alpha=0.4,
        marker=series.marker,
        facecolors=[
            colours[c] if d else "none" for c, d in zip(dots["config"], dots["done"], strict=True)
        ],
        edgecolors=[colours[c] for c in dots["config"]],
    )


def _run_summary_figure(
    data: SweepData, layout: Layout, series: Sequence[PSeries], ylabel: str = "p", p_axis: bool = False
) -> Figure | None:
    """The ``series`` against the first swept key; colours are the combinations of the other
    swept keys.  ``None`` when no run has a value of the first series.  With ``p_axis`` the y
    axis is one of p (``PAxis``: log-scaled for a wide range, inf at a marked position)."""
    runs = data.runs
    if not has_values(runs, series[0].column):
        return None
    key, rest = (data.swept[0], list(data.swept[1:])) if data.swept else (None, [])
    if key:
        x, ticks, tick_labels = _positions(runs[key])
    else:
        x, ticks, tick_labels = pd.Series(0.0, index=runs.index), [0.0], [ALL_RUNS]
    numeric = key is not None and all(is_number(value) for value in runs[key])
    groups = layout.groups(runs, rest)
    colours = layout.colours(runs, rest)
    series = [one for one in series if one.column in runs]
    frames = [runs[["run_id", one.column]].assign(_x=x) for one in series]
    bands = [seed_bands(frame, groups, x="_x", y=one.column, keep_infinite=p_axis) for frame, one in zip(frames, series, strict=True)]
    seeds = several_seeds(*bands)
    axis = PAxis.of(pd.concat([frame[one.column] for frame, one in zip(frames, series, strict=True)])) if p_axis else None
    if axis is not None:
        frames = [frame.assign(**{one.column: axis.place(frame[one.column])}) for frame, one in zip(frames, series, strict=True)]
        bands = [band.assign(**{c: axis.place(band[c]) for c in ("mean", "low", "high")}) for band in bands]
    fig, (ax,) = new_figure(1, layout)
    for frame, band, one in zip(frames, bands, series, strict=True):
        _draw_p_series(ax, frame, band, groups, colours, one, connect=numeric, seeds=seeds)
    if axis is not None:
        axis.draw(ax, "y")
    ax.set_xticks(ticks, tick_labels)
    if sum(map(len, tick_labels)) > 40:  # many or long category names: slant them
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlabel(layout.name(key) if key else "")
    ax.set_ylabel(ylabel)
    legend = [*_group_proxies(groups, colours), *map(_series_proxy, series), *([_seed_marker()] if seeds else [])]
    return finish(fig, layout, legend_title(layout, rest, ERROR_BARS if seeds else None), legend)


def _group_proxies(groups: pd.DataFrame, colours: dict[str, Any]) -> list[Line2D]:
    """Legend entries for the colours of the groups (none for the one group of all runs)."""
    return [
        Line2D([], [], color=colours[config], linestyle=linestyle(done), label=label)
        for config, label, done, _ in ordered_groups(groups, colours)
        if label != ALL_RUNS
    ]


def _series_proxy(series: PSeries) -> Line2D:
    return Line2D(
        [],
        [],
        color="grey",
        marker=series.marker,
        markersize=MARKER_SIZE,
        markerfacecolor="grey" if series.filled else "white",
        linestyle=series.linestyle,
        label=series.label,
    )


def _seed_marker() -> Line2D:
    return Line2D(
        [], [], marker="o", linestyle="none", color="grey", alpha=0.4, label="individual seeds"
    )


def p_final_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Final learned p against the first swept key (mean over seeds, min-max error bars, every
    run as a faint dot); ``None`` when no run has a final p."""
    return _run_summary_figure(data, layout, [LEARNED])


def p_drift_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """The p-drift figure: final learned p, ``p_opt`` and ``p_plateau`` against the first swept
    key, same x, so the gaps between them show; ``None`` when no run has a ``p_opt``."""
    runs = with_probe_summary(data.runs, data.probe, data.configs)
    if not runs["p_opt"].notna().any():
        return None
    series = [LEARNED, BEST, *([PLATEAU] if runs[PLATEAU.column].notna().any() else [])]
    return _run_summary_figure(replace(data, runs=runs), layout, series, p_axis=True)


def regret_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """The mAP regret at the learned p (validation mAP at p_opt minus at the learned p) against
    the first swept key; ``None`` when no run has one."""
    runs = with_probe_summary(data.runs, data.probe, data.configs)
    if not has_values(runs, REGRET.column):
        return None
    return _run_summary_figure(replace(data, runs=runs), layout, [REGRET], ylabel="mAP regret (val)")


def final_accuracy_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Final test accuracy against the first swept key (e.g. accuracy per pool), mean over seeds
    with min-max error bars; ``None`` when no run has one."""
    return _run_summary_figure(data, layout, [ACCURACY], ylabel="test accuracy")
