"""Figures of a sweep, drawn from the tidy frames that ``results`` loads.

Every figure is a function ``(SweepData, Layout) -> Figure | None`` listed in ``PLOTS`` (``None``
when the frames hold nothing to draw), so ``plot_results`` (one results directory, screen
sizes) and ``pooling_lab.figures`` (paper figures from a YAML spec) draw the same pictures:

- ``p_trajectory``: every traced pooling parameter against the training step;
- ``p_final``: final learned p against the first swept key;
- ``p_drift``: the same with ``p_opt`` (the probe's best test-time p) beside it;
- ``probe_curves``: validation mAP and accuracy against test-time p, learned p starred;
- ``p_histograms``: final per-channel p, one histogram per configuration;
- ``metric_vs_p``: test accuracy and mAP against final p, one dot per run;
- ``accuracy``: validation and test accuracy against the epoch.

Only the object API on ``Figure`` objects is used: no pyplot state, no window.  A
*configuration* is a combination of swept values (seeds pooled); its colour comes from
``pooling_lab.style`` and depends on the values alone.  Runs whose status is not ``done`` keep
what they recorded and form their own group per configuration, drawn dotted or hollow and
labelled e.g. ``head.margin=0.5 (diverged)``.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pooling_lab.atomic import write_bytes
from pooling_lab.labels import format_value
from pooling_lab.style import (
    COLOUR_RANGES,
    NEUTRAL,
    Style,
    apply_style,
    category_colours,
    colour_span,
    sequential_colour,
)

DONE = "done"
ALL_RUNS = "all runs"
BAND = "band: min–max over seeds"
ERROR_BARS = "mean over seeds, error bars: min–max"
BEYOND = "learned p beyond the probed p (value shown)"
CENTRAL_STATS = ("value", "mean")  # a scalar parameter's value; a per-channel parameter's mean
ACCURACY_COLUMNS = ("val_accuracy", "test_accuracy")
PROBE_METRICS = {"map": "mAP", "accuracy": "accuracy"}  # probe.csv column -> panel name
RUN_METRICS = {"test_accuracy": "test accuracy", "test_map": "test mAP"}
LOG_X_RATIO = 8.0  # probe curves get a log x axis when the p grid spans more than this
MAX_GRID_TICKS = 10
HIST_BINS = 20
PANEL_COLUMNS = 3
PANEL_SIZE_IN = (3.2, 2.6)  # per panel, when no size is given
LEGEND_WIDTH_IN = 1.8  # added to the width for a legend on the right
LEGEND_PADDING_IN = 0.3  # around a legend below the panels: frame, padding, gap to the axes
MARKER_SIZE = 4.0
LEGEND_PLACES = ("right", "below", "none")


@dataclass(frozen=True)
class SweepData:
    """The frames of one or more results directories (see ``pooling_lab.results.Results``)."""

    runs: pd.DataFrame
    swept: Sequence[str] = ()
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    params: pd.DataFrame = field(default_factory=pd.DataFrame)
    probe: pd.DataFrame = field(default_factory=pd.DataFrame)
    final_params: pd.DataFrame = field(default_factory=pd.DataFrame)
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class Layout:
    """How a figure is drawn: size (``None``: sized from its panels), texts that replace the
    defaults (``xlabel`` / ``ylabel`` apply to every panel), legend place, display names of
    swept keys (``{"head.margin": "m"}`` labels a configuration ``m=0.3``) and the style."""

    size_in: tuple[float, float] | None = None
    title: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    legend: str = "below"
    names: Mapping[str, str] = field(default_factory=dict)
    style: Style = field(default_factory=Style)

    def name(self, key: str) -> str:
        return self.names.get(key, key)

    def groups(self, runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
        return run_groups(runs, keys, self.names)

    def colours(self, runs: pd.DataFrame, keys: Sequence[str]) -> dict[str, str]:
        return config_colours(runs, keys, names=self.names, ranges=self.style.colour_ranges)


DEFAULT_LAYOUT = Layout()


# --- configurations: labels, order, colours ---------------------------------------------------


def _is_number(value: Any) -> bool:
    """A real, non-NaN number; bools are categories, not numbers."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(float(value))
    )


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers first in numeric order, then everything else by its text."""
    if _is_number(value):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def _configs(
    runs: pd.DataFrame, keys: Sequence[str], names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Per run (indexed by run_id): its configuration label, the sort order of that label, and
    the value of the single key (``None`` with several keys)."""
    names = names or {}
    rows = list(runs[list(keys)].itertuples(index=False, name=None))
    labels = [
        ", ".join(
            f"{names.get(key, key)}={format_value(value)}"
            for key, value in zip(keys, row, strict=True)
        )
        or ALL_RUNS
        for row in rows
    ]
    order = [tuple(_sort_key(value) for value in row) for row in rows]
    single = [row[0] if len(keys) == 1 else None for row in rows]
    return pd.DataFrame(
        {"config": labels, "order": order, "value": single}, index=pd.Index(runs["run_id"])
    )


def _ordered_configs(configs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, in configuration order."""
    first = configs.drop_duplicates("config")
    return first.iloc[sorted(range(len(first)), key=lambda i: first["order"].iloc[i])]


def run_groups(
    runs: pd.DataFrame, keys: Sequence[str], names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Per run (indexed by ``run_id``): ``config``, ``label`` and ``done``.

    ``config`` names the combination of the values of ``keys`` (``"all runs"`` when ``keys`` is
    empty; a key is shown by its display name in ``names``); ``label`` is the config, followed by
    ``" (<status>)"`` when the run is not done, so that unfinished runs of a configuration are
    drawn as a group of their own.
    """
    groups = _configs(runs, keys, names)[["config"]]
    status = runs["status"].fillna("unknown").astype(str).to_numpy()
    groups["done"] = status == DONE
    groups["label"] = [
        config if done else f"{config} ({state})"
        for config, done, state in zip(groups["config"], groups["done"], status, strict=True)
    ]
    return groups


def config_colours(
    runs: pd.DataFrame,
    keys: Sequence[str],
    *,
    names: Mapping[str, str] | None = None,
    ranges: Mapping[str, tuple[float, float]] = COLOUR_RANGES,
) -> dict[str, str]:
    """Colour per configuration label, in configuration order.

    One swept key: the colour of its value (``pooling_lab.style``): viridis over the key's
    declared range for numbers, fixed Okabe-Ito colours for well-known names; so the same value
    has the same colour in every figure and every results directory.  Several keys: Okabe-Ito
    by configuration order.  No key: one neutral colour.
    """
    configs = _ordered_configs(_configs(runs, keys, names))
    labels, values = list(configs["config"]), list(configs["value"])
    if not keys:
        return {ALL_RUNS: NEUTRAL}
    if len(keys) > 1:
        return category_colours(labels)
    if all(_is_number(value) for value in values):
        span = colour_span(keys[0], [float(value) for value in values], ranges)
        return {
            label: sequential_colour(float(value), span)
            for label, value in zip(labels, values, strict=True)
        }
    texts = [format_value(value) for value in values]
    by_text = category_colours(texts)
    return {label: by_text[text] for label, text in zip(labels, texts, strict=True)}


# --- aggregation over seeds ---------------------------------------------------------------------


def seed_bands(
    frame: pd.DataFrame, groups: pd.DataFrame, *, x: str, y: str, by: Sequence[str] = ()
) -> pd.DataFrame:
    """Mean and min-max band of ``y`` over the runs of each group, at each ``x``.

    ``frame`` has ``run_id``, ``x``, ``y`` and the ``by`` columns; ``groups`` comes from
    ``run_groups``.  Infinite values count as missing, and a run with several rows at one ``x``
    counts once (their mean).  Returns the ``by`` columns, ``config``, ``label``, ``done``, ``x``,
    ``mean``, ``low``, ``high`` and ``seeds`` (how many runs had a value), sorted by group and
    ``x``; points where no run had a value are left out.
    """
    keys = [*by, "config", "label", "done"]
    values = frame[["run_id", x, *by]].assign(_y=frame[y].replace([np.inf, -np.inf], np.nan))
    values = values.join(groups, on="run_id", how="inner").dropna(subset=["_y", x])
    per_run = values.groupby([*keys, x, "run_id"], sort=False)["_y"].mean()
    bands = per_run.groupby(level=[*keys, x]).agg(mean="mean", low="min", high="max", seeds="count")
    return bands.reset_index().sort_values([*keys, x], ignore_index=True)


def p_bands(params: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """``seed_bands`` of every traced pooling parameter against the training step.

    A scalar parameter contributes its ``value`` rows, a per-channel parameter its ``mean`` rows
    (the channel mean, then averaged over seeds); ``by`` is module, param and stat.
    """
    trace = params[params["stat"].isin(CENTRAL_STATS)]
    return seed_bands(trace, groups, x="step", y="value", by=("module", "param", "stat"))


def learned_p(runs: pd.DataFrame, groups: pd.DataFrame) -> pd.Series:
    """Mean final p over the runs of each group label (NaN where no run has one)."""
    finals = runs.set_index("run_id")["p_final"]
    return finals.groupby(groups["label"].reindex(finals.index)).mean()


# --- drawing helpers ----------------------------------------------------------------------------


def _new_figure(panels: int, layout: Layout) -> tuple[Figure, list[Axes]]:
    columns = min(panels, PANEL_COLUMNS)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=layout.size_in or _auto_size(columns, rows, layout), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax in axes:
        ax.grid(True, alpha=0.3, linewidth=0.5)
    if layout.title:
        fig.suptitle(layout.title)
    return fig, axes[:panels]


def _auto_size(columns: int, rows: int, layout: Layout) -> tuple[float, float]:
    """Room for the panels, and for a legend on the right (one below grows the figure to fit
    it: ``_figure_legend``)."""
    width, height = PANEL_SIZE_IN[0] * columns, PANEL_SIZE_IN[1] * rows
    if layout.legend == "right":
        width += LEGEND_WIDTH_IN
    return width, height


def _legend_title(layout: Layout, keys: Sequence[str], note: str | None) -> str:
    """The swept keys the colours stand for, and what the lines or marks show (``note``):
    on one line above a legend below the panels, on two beside one on the right."""
    parts = [", ".join(map(layout.name, keys)), note or ""]
    return ("; " if layout.legend == "below" else "\n").join(part for part in parts if part)


def _several_seeds(*bands: pd.DataFrame) -> bool:
    """Whether some point of ``seed_bands`` pools more than one run (else there is no spread
    over seeds to show or name)."""
    return any(bool((band["seeds"] > 1).any()) for band in bands)


def _legend_columns(labels: Sequence[str], width_in: float, font_size: float) -> int:
    """The most columns the legend entries fit in across the figure (matplotlib splits them
    into columns in order, as ``np.array_split`` does, each as wide as its longest label)."""

    def needed_in(columns: int) -> float:
        chunks = np.array_split(np.array(labels, dtype=object), columns)
        # text, plus handle, padding and column spacing (about 0.8 in at print sizes)
        return sum(max(map(len, chunk)) * 0.6 * font_size / 72 + 0.8 for chunk in chunks)

    return max((columns for columns in range(1, len(labels) + 1) if needed_in(columns) <= width_in), default=1)


def _figure_legend(fig: Figure, layout: Layout, title: str, extra: Sequence[Line2D]) -> None:
    """One legend for the whole figure, outside the panels, each label once."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    below = layout.legend == "below"
    font = layout.style.small_font_size
    columns = _legend_columns(list(entries), fig.get_figwidth(), font) if below else 1
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="outside lower center" if below else "outside right upper",
        ncols=columns,
        title=title or None,
        alignment="left",
    )


def _finish(fig: Figure, layout: Layout, legend_title: str, extra: Sequence[Line2D] = ()) -> Figure:
    """Apply the layout's axis labels, legend and style to a drawn figure."""
    for ax in fig.axes:
        if layout.xlabel is not None:
            ax.set_xlabel(layout.xlabel)
        if layout.ylabel is not None:
            ax.set_ylabel(layout.ylabel)
    if layout.legend != "none":
        _figure_legend(fig, layout, legend_title, extra)
    apply_style(fig, layout.style)
    if layout.legend == "below" and layout.size_in is None:
        _make_room_below(fig)
    return fig


def _make_room_below(fig: Figure) -> None:
    """Grow a figure sized from its panels by the height of its legend below them (measured
    with the legend's fonts, which the panels' size does not depend on)."""
    legend = fig.legends[0]
    height_px = legend.get_window_extent(FigureCanvasAgg(fig).get_renderer()).height
    fig.set_figheight(fig.get_figheight() + height_px / fig.dpi + LEGEND_PADDING_IN)


def _linestyle(done: bool, solid: str = "-") -> str:
    return solid if done else ":"


def _ordered_groups(frame: pd.DataFrame, colours: dict[str, Any]):
    """(config, label, done, rows) in colour order, finished runs before unfinished ones;
    ``frame`` has the columns of ``run_groups``."""
    rank = {config: index for index, config in enumerate(colours)}
    grouped = frame.groupby(["config", "label", "done"], sort=False)
    return sorted(
        ((config, label, done, rows) for (config, label, done), rows in grouped),
        key=lambda item: (rank[item[0]], not item[2], item[1]),
    )


def _draw_bands(ax: Axes, bands: pd.DataFrame, x: str, colours: dict[str, Any]) -> None:
    for config, label, done, rows in _ordered_groups(bands, colours):
        colour = colours[config]
        ax.plot(
            rows[x],
            rows["mean"],
            color=colour,
            linestyle=_linestyle(done),
            marker="o" if len(rows) == 1 else None,
            markersize=MARKER_SIZE,
            label=label,
        )
        ax.fill_between(rows[x], rows["low"], rows["high"], color=colour, alpha=0.2, linewidth=0)


def _band_figure(
    panels: list[tuple[str, str, pd.DataFrame]],
    *,
    x: str,
    xlabel: str,
    colours: dict[str, Any],
    keys: Sequence[str],
    layout: Layout,
) -> Figure:
    """One panel per (panel title, y label, bands), lines and bands coloured per configuration
    (the configurations of ``keys``)."""
    fig, axes = _new_figure(len(panels), layout)
    for ax, (panel_title, ylabel, bands) in zip(axes, panels, strict=True):
        _draw_bands(ax, bands, x, colours)
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    note = BAND if _several_seeds(*(bands for _, _, bands in panels)) else None
    return _finish(fig, layout, _legend_title(layout, keys, note))


def _positions(values: pd.Series) -> tuple[pd.Series, list[float], list[str]]:
    """x positions of a swept column: the values when all numeric, else categorical slots."""
    unique = sorted(
        {format_value(value): value for value in values}.items(),
        key=lambda item: _sort_key(item[1]),
    )
    labels = [text for text, _ in unique]
    if all(_is_number(value) for _, value in unique):
        ticks = [float(value) for _, value in unique]
    else:
        ticks = [float(index) for index in range(len(unique))]
    slot = dict(zip(labels, ticks, strict=True))
    return values.map(lambda value: slot[format_value(value)]).astype(float), ticks, labels


def _has_values(frame: pd.DataFrame, *columns: str) -> bool:
    """Whether some row has a finite value in every one of ``columns``."""
    if not set(columns) <= set(frame.columns):
        return False
    values = frame[list(columns)].replace([np.inf, -np.inf], np.nan)
    return not values.dropna().empty


# --- the figures --------------------------------------------------------------------------------


def p_trajectory_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Each traced pooling parameter against the training step; ``None`` when nothing is traced."""
    if data.params.empty:
        return None
    bands = p_bands(data.params, layout.groups(data.runs, data.swept))
    if bands.empty:
        return None
    panels = [
        (f"{module}.{param}" + (" (mean over channels)" if stat == "mean" else ""), param, rows)
        for (module, param, stat), rows in bands.groupby(["module", "param", "stat"])
    ]
    return _band_figure(
        panels,
        x="step",
        xlabel="training step",
        colours=layout.colours(data.runs, data.swept),
        keys=data.swept,
        layout=layout,
    )


def accuracy_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Validation and test accuracy against the epoch, one panel each where recorded."""
    metrics = data.metrics
    columns = [column for column in ACCURACY_COLUMNS if column in metrics.columns]
    if metrics.empty or not columns:
        return None
    long = metrics.melt(id_vars=["run_id", "epoch"], value_vars=columns, var_name="metric")
    groups = layout.groups(data.runs, data.swept)
    bands = seed_bands(long, groups, x="epoch", y="value", by=("metric",))
    if bands.empty:
        return None
    panels = [
        (metric.replace("_", " "), metric.replace("_", " "), rows)
        for metric, rows in bands.groupby("metric")
    ]
    return _band_figure(
        panels,
        x="epoch",
        xlabel="epoch",
        colours=layout.colours(data.runs, data.swept),
        keys=data.swept,
        layout=layout,
    )


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
ACCURACY = PSeries("test_accuracy", "test accuracy", "s", "-", filled=True)


def _draw_p_series(
    ax: Axes,
    frame: pd.DataFrame,
    groups: pd.DataFrame,
    colours: dict[str, Any],
    series: PSeries,
    connect: bool,
    seeds: bool,
) -> None:
    """Per group the mean over seeds, with min-max error bars where it pools several runs, and
    (``seeds``) every run as a faint marker; ``frame`` has ``run_id``, ``_x`` and the series'
    column."""
    bands = seed_bands(frame, groups, x="_x", y=series.column)
    for config, _, done, rows in _ordered_groups(bands, colours):
        colour = colours[config]
        ax.errorbar(
            rows["_x"],
            rows["mean"],
            yerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]] if _several_seeds(rows) else None,
            color=colour,
            linestyle=_linestyle(done, series.linestyle) if connect else "none",
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
    data: SweepData, layout: Layout, series: Sequence[PSeries], ylabel: str = "p"
) -> Figure | None:
    """The ``series`` against the first swept key; colours are the combinations of the other
    swept keys.  ``None`` when no run has a value of the first series."""
    runs = data.runs
    if not _has_values(runs, series[0].column):
        return None
    key, rest = (data.swept[0], list(data.swept[1:])) if data.swept else (None, [])
    if key:
        x, ticks, tick_labels = _positions(runs[key])
    else:
        x, ticks, tick_labels = pd.Series(0.0, index=runs.index), [0.0], [ALL_RUNS]
    numeric = key is not None and all(_is_number(value) for value in runs[key])
    groups = layout.groups(runs, rest)
    colours = layout.colours(runs, rest)
    frames = [runs[["run_id", one.column]].assign(_x=x) for one in series]
    seeds = _several_seeds(*(seed_bands(frame, groups, x="_x", y=one.column) for frame, one in zip(frames, series, strict=True)))
    fig, (ax,) = _new_figure(1, layout)
    for frame, one in zip(frames, series, strict=True):
        _draw_p_series(ax, frame, groups, colours, one, connect=numeric, seeds=seeds)
    ax.set_xticks(ticks, tick_labels)
    if sum(map(len, tick_labels)) > 40:  # many or long category names: slant them
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlabel(layout.name(key) if key else "")
    ax.set_ylabel(ylabel)
    legend = [*_group_proxies(groups, colours), *map(_series_proxy, series), *([_seed_marker()] if seeds else [])]
    return _finish(fig, layout, _legend_title(layout, rest, ERROR_BARS if seeds else None), legend)


def _group_proxies(groups: pd.DataFrame, colours: dict[str, Any]) -> list[Line2D]:
    """Legend entries for the colours of the groups (none for the one group of all runs)."""
    return [
        Line2D([], [], color=colours[config], linestyle=_linestyle(done), label=label)
        for config, label, done, _ in _ordered_groups(groups, colours)
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
    """The p-drift figure: final learned p and ``p_opt`` against the first swept key, same x,
    so the gap between them shows; ``None`` when no run has a ``p_opt``."""
    if not _has_values(data.runs, BEST.column):
        return None
    return _run_summary_figure(data, layout, [LEARNED, BEST])


def final_accuracy_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Final test accuracy against the first swept key (e.g. accuracy per pool), mean over seeds
    with min-max error bars; ``None`` when no run has one."""
    return _run_summary_figure(data, layout, [ACCURACY], ylabel="test accuracy")


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
    for config, label, _, rows in _ordered_groups(bands, colours):
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
    metrics = [metric for metric in PROBE_METRICS if _has_values(probe, "p", metric)]
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
    fig, axes = _new_figure(len(metrics), layout)
    outside = False
    for ax, metric in zip(axes, metrics, strict=True):
        rows = bands[bands["metric"] == metric]
        _draw_bands(ax, rows, "p", colours)
        outside |= _mark_learned(ax, rows, learned, colours, log_x)
        _p_axis(ax, grid, log_x)
        ax.set_title(PROBE_METRICS[metric])
        ax.set_xlabel("test-time p")
        ax.set_ylabel(f"validation {PROBE_METRICS[metric]}")
    seeds = _several_seeds(bands)
    markers = [Line2D([], [], **_star("grey", filled=True), label="learned p (mean over seeds)" if seeds else "learned p")]
    if outside:
        markers.append(Line2D([], [], **_star("grey", filled=False), label=BEYOND))
    return _finish(fig, layout, _legend_title(layout, data.swept, BAND if seeds else None), markers)


def per_channel_params(final_params: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``final_params`` whose parameter has more than one element in its run."""
    if final_params.empty:
        return final_params
    sizes = final_params.groupby(["run_id", "module", "param"])["value"].transform("size")
    return final_params[sizes > 1]


def p_histograms_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Histograms of the final per-channel parameters, one panel per configuration (and
    parameter, when there are several), channels of all seeds pooled, on shared bins;
    ``None`` when every parameter is a scalar."""
    vectors = per_channel_params(data.final_params)
    if vectors.empty:
        return None
    groups = layout.groups(data.runs, data.swept)
    vectors = vectors.join(groups, on="run_id", how="inner")
    colours = layout.colours(data.runs, data.swept)
    several = len(vectors[["module", "param"]].drop_duplicates()) > 1
    panels = [
        (colours[config], label, done, f"{module}.{param}", rows["value"])
        for config, label, done, group in _ordered_groups(vectors, colours)
        for (module, param), rows in group.groupby(["module", "param"])
    ]
    bins = np.histogram_bin_edges(vectors["value"], bins=HIST_BINS)
    fig, axes = _new_figure(len(panels), layout)
    for ax, (colour, label, done, name, values) in zip(axes, panels, strict=True):
        ax.hist(values, bins=bins, color=colour, histtype="bar" if done else "step")
        ax.axvline(values.mean(), color="black", linestyle="--", linewidth=1, label="mean")
        ax.set_xlim(bins[0], bins[-1])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{label}\n{name}" if several else label)
        ax.set_xlabel(f"final {name.rsplit('.', 1)[-1]}")
        ax.set_ylabel("channels")
    seeds = bool((vectors.groupby("label")["run_id"].nunique() > 1).any())
    return _finish(fig, layout, "channels of all seeds" if seeds else "")


def metric_vs_p_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Test accuracy and test mAP (one panel each, where measured) against final p, one dot
    per run coloured by configuration; ``None`` when no run has both."""
    runs = data.runs
    columns = [column for column in RUN_METRICS if _has_values(runs, "p_final", column)]
    if not columns:
        return None
    groups = layout.groups(runs, data.swept)
    colours = layout.colours(runs, data.swept)
    fig, axes = _new_figure(len(columns), layout)
    for ax, column in zip(axes, columns, strict=True):
        both = runs.dropna(subset=["p_final", column]).join(groups, on="run_id", how="inner")
        for config, label, done, rows in _ordered_groups(both, colours):
            ax.scatter(
                rows["p_final"],
                rows[column],
                s=14,
                facecolors=colours[config] if done else "none",
                edgecolors=colours[config],
                label=label,
            )
        ax.set_title(RUN_METRICS[column])
        ax.set_xlabel("final learned p")
        ax.set_ylabel(RUN_METRICS[column])
    return _finish(fig, layout, _legend_title(layout, data.swept, "one dot per run"))


def fixed_p_curve_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """The train-time optimum curve: test mAP and accuracy of models trained with a fixed GeM p,
    against that p (mean and min-max band over seeds, one line per value of the other swept
    keys); ``None`` when no run had a fixed p."""
    configs = data.configs
    if configs.empty or not {"model.pool.learnable", "model.pool.p"} <= set(configs.columns):
        return None
    fixed = configs.loc[configs["model.pool.learnable"] == False, ["run_id", "model.pool.p"]]  # noqa: E712
    runs = data.runs.merge(fixed.rename(columns={"model.pool.p": "_fixed_p"}), on="run_id")
    others = [key for key in data.swept if key != "model.pool.p"]
    groups = layout.groups(runs, others)
    panels = [
        (label, label, seed_bands(runs, groups, x="_fixed_p", y=column))
        for column, label in RUN_METRICS.items()
        if _has_values(runs, column)
    ]
    if not panels:
        return None
    return _band_figure(
        panels,
        x="_fixed_p",
        xlabel="fixed p (the same in training and test)",
        colours=layout.colours(runs, others),
        keys=others,
        layout=layout,
    )


PLOTS: dict[str, Callable[[SweepData, Layout], Figure | None]] = {
    "p_trajectory": p_trajectory_figure,
    "p_final": p_final_figure,
    "p_drift": p_drift_figure,
    "probe_curves": probe_curves_figure,
    "p_histograms": p_histograms_figure,
    "metric_vs_p": metric_vs_p_figure,
    "accuracy": accuracy_figure,
    "final_accuracy": final_accuracy_figure,
    "fixed_p_curve": fixed_p_curve_figure,
}


# --- saving -----------------------------------------------------------------------------------


def save_figure(fig: Figure, stem: Path, dpi: int) -> list[Path]:
    """Write ``<stem>.pdf`` (vector, TrueType fonts, no timestamp, so a redrawn figure is
    byte-identical) and ``<stem>.png`` at ``dpi``, each atomically."""
    paths = []
    for fmt, metadata in (("pdf", {"CreationDate": None}), ("png", {})):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        path = Path(f"{stem}.{fmt}")
        write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def plot_results(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    params: pd.DataFrame,
    swept: list[str],
    out_dir: Path,
    *,
    title: str | None = None,
    probe: pd.DataFrame | None = None,
    final_params: pd.DataFrame | None = None,
    configs: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw every figure of ``PLOTS`` that has data into ``out_dir`` as ``<name>.pdf`` and
    ``<name>.png``; return the files written (none for no runs)."""
    if runs.empty:
        return []
    data = SweepData(
        runs,
        swept,
        metrics,
        params,
        pd.DataFrame() if probe is None else probe,
        pd.DataFrame() if final_params is None else final_params,
        pd.DataFrame() if configs is None else configs,
    )
    layout = Layout(title=title)
    written = []
    for name, draw in PLOTS.items():
        fig = draw(data, layout)
        if fig is not None:
            written += save_figure(fig, Path(out_dir) / name, layout.style.dpi)
    return written
