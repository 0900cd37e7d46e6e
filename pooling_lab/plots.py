"""Figures of a sweep, drawn from the tidy frames that ``results`` loads.

Everything here works on plain pandas frames (``runs``, ``metrics``, ``params``; see
``plot_results``) and uses the matplotlib object API on ``Figure`` objects, so no pyplot state is
touched and no window is ever opened.  Three small helpers carry the logic the figures share:

- ``run_groups`` / ``config_colours``: which configuration (combination of swept values, seeds
  pooled) a run belongs to, how it is labelled, and the colour of that configuration;
- ``seed_bands``: the mean over seeds and the min-max band over seeds, per configuration;
- ``_save``: write a figure as PNG and PDF, each file atomically.

Runs whose status is not ``done`` keep what they recorded: they form their own group per
configuration, drawn dashed or hollow and labelled e.g. ``head.margin=0.5 (diverged)``.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pooling_lab.atomic import write_bytes

DONE = "done"
ALL_RUNS = "all runs"
BAND = "band: min–max over seeds"
ERROR_BARS = "mean over seeds, error bars: min–max"
CENTRAL_STATS = ("value", "mean")  # a scalar parameter's value; a per-channel parameter's mean
ACCURACY_COLUMNS = ("val_accuracy", "test_accuracy")
OKABE_ITO = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#F0E442",
    "#000000",
)
SEQUENTIAL_MAP = "viridis"
SEQUENTIAL_SPAN = (0.0, 0.9)  # stop before viridis' palest yellow
PANEL_COLUMNS = 3
LEGEND_FONT = 9
DPI = 150


# --- configurations: labels, order, colours ---------------------------------------------------


def _is_number(value: Any) -> bool:
    """A real, non-NaN number; bools are categories, not numbers."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(float(value))
    )


def format_value(value: Any) -> str:
    """Compact text for a swept value: ``0.3``, ``3``, ``arcface``, ``[1, 2]``."""
    if _is_number(value):
        return f"{float(value):g}"
    return str(value)


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers first in numeric order, then everything else by its text."""
    if _is_number(value):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def _configs(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Per run (indexed by run_id): its configuration label and the sort order of that label."""
    rows = list(runs[list(keys)].itertuples(index=False, name=None))
    labels = [
        ", ".join(f"{key}={format_value(value)}" for key, value in zip(keys, row, strict=True))
        or ALL_RUNS
        for row in rows
    ]
    order = [tuple(_sort_key(value) for value in row) for row in rows]
    return pd.DataFrame({"config": labels, "order": order}, index=pd.Index(runs["run_id"]))


def _ordered_configs(configs: pd.DataFrame) -> list[str]:
    first = configs.drop_duplicates("config")
    return [config for _, config in sorted(zip(first["order"], first["config"], strict=True))]


def run_groups(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Per run (indexed by ``run_id``): ``config``, ``label`` and ``done``.

    ``config`` names the combination of the values of ``keys`` (``"all runs"`` when ``keys`` is
    empty); ``label`` is the config, followed by ``" (<status>)"`` when the run is not done, so
    that unfinished runs of a configuration are drawn as a group of their own.
    """
    groups = _configs(runs, keys)[["config"]]
    status = runs["status"].fillna("unknown").astype(str).to_numpy()
    groups["done"] = status == DONE
    groups["label"] = [
        config if done else f"{config} ({state})"
        for config, done, state in zip(groups["config"], groups["done"], status, strict=True)
    ]
    return groups


def _categorical_palette(count: int) -> list[Any]:
    if count <= len(OKABE_ITO):
        return list(OKABE_ITO[:count])
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(index % cmap.N) for index in range(count)]


def config_colours(runs: pd.DataFrame, keys: Sequence[str]) -> dict[str, Any]:
    """Colour per configuration label, in configuration order.

    One numeric swept key: a sequential colormap (viridis) by rank of the value, so that the order
    of e.g. margins reads off the colours.  Otherwise Okabe-Ito (colour-blind safe) for up to 8
    configurations, tab10 / tab20 beyond.  The mapping depends only on the set of values, not on
    the order of the runs.
    """
    configs = _configs(runs, keys)
    ordered = _ordered_configs(configs)
    numeric = len(keys) == 1 and all(_is_number(value) for value in runs[keys[0]])
    if numeric:
        cmap = colormaps[SEQUENTIAL_MAP]
        palette = [cmap(position) for position in np.linspace(*SEQUENTIAL_SPAN, len(ordered))]
    else:
        palette = _categorical_palette(len(ordered))
    return dict(zip(ordered, palette, strict=True))


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


def p_bands(params: pd.DataFrame, runs: pd.DataFrame, swept: Sequence[str]) -> pd.DataFrame:
    """``seed_bands`` of every traced pooling parameter against the training step.

    A scalar parameter contributes its ``value`` rows, a per-channel parameter its ``mean`` rows
    (the channel mean, then averaged over seeds); ``by`` is module, param and stat.
    """
    trace = params[params["stat"].isin(CENTRAL_STATS)]
    return seed_bands(
        trace, run_groups(runs, swept), x="step", y="value", by=("module", "param", "stat")
    )


# --- drawing ----------------------------------------------------------------------------------


def _new_figure(panels: int, title: str | None) -> tuple[Figure, list[Axes]]:
    columns = min(panels, PANEL_COLUMNS)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(4.8 * columns + 2.8, 3.6 * rows), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax in axes:
        ax.grid(True, alpha=0.3, linewidth=0.6)
    if title:
        fig.suptitle(title)
    return fig, axes[:panels]


def _legend_title(keys: Sequence[str], note: str) -> str:
    return f"{', '.join(keys)}\n{note}" if keys else note


def _figure_legend(fig: Figure, title: str, extra: Sequence[Line2D] = ()) -> None:
    """One legend for the whole figure, outside the panels, each label once."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="outside right upper",
        title=title,
        fontsize=LEGEND_FONT,
        title_fontsize=LEGEND_FONT,
        alignment="left",
    )


def _linestyle(done: bool) -> str:
    return "-" if done else "--"


def _ordered_groups(bands: pd.DataFrame, colours: dict[str, Any]):
    """(config, label, done, rows) in colour order, finished runs before unfinished ones."""
    rank = {config: index for index, config in enumerate(colours)}
    grouped = bands.groupby(["config", "label", "done"], sort=False)
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
            label=label,
        )
        ax.fill_between(rows[x], rows["low"], rows["high"], color=colour, alpha=0.2, linewidth=0)


def _band_figure(
    panels: list[tuple[str, str, pd.DataFrame]],
    *,
    x: str,
    xlabel: str,
    colours: dict[str, Any],
    legend_title: str,
    title: str | None,
) -> Figure:
    """One panel per (panel title, y label, bands), lines and bands coloured per configuration."""
    fig, axes = _new_figure(len(panels), title)
    for ax, (panel_title, ylabel, bands) in zip(axes, panels, strict=True):
        _draw_bands(ax, bands, x, colours)
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    _figure_legend(fig, legend_title)
    return fig


def p_trajectory_figure(
    params: pd.DataFrame, runs: pd.DataFrame, swept: Sequence[str], *, title: str | None = None
) -> Figure | None:
    """Each traced pooling parameter against the training step; ``None`` when nothing is traced."""
    if params.empty:
        return None
    bands = p_bands(params, runs, swept)
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
        colours=config_colours(runs, swept),
        legend_title=_legend_title(swept, BAND),
        title=title,
    )


def accuracy_figure(
    metrics: pd.DataFrame, runs: pd.DataFrame, swept: Sequence[str], *, title: str | None = None
) -> Figure | None:
    """Validation and test accuracy against the epoch, one panel each where recorded."""
    columns = [column for column in ACCURACY_COLUMNS if column in metrics.columns]
    if metrics.empty or not columns:
        return None
    long = metrics.melt(id_vars=["run_id", "epoch"], value_vars=columns, var_name="metric")
    bands = seed_bands(long, run_groups(runs, swept), x="epoch", y="value", by=("metric",))
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
        colours=config_colours(runs, swept),
        legend_title=_legend_title(swept, BAND),
        title=title,
    )


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


def _seed_marker() -> Line2D:
    return Line2D(
        [], [], marker="o", linestyle="none", color="grey", alpha=0.4, label="individual seeds"
    )


def p_final_figure(
    runs: pd.DataFrame, swept: Sequence[str], *, title: str | None = None
) -> Figure | None:
    """Final p against the first swept key; ``None`` when no run has a final p.

    Series (colours) are the combinations of the other swept keys; each shows the mean over seeds
    with min-max error bars, and every run as a faint dot.
    """
    if runs["p_final"].isna().all():
        return None
    key, rest = (swept[0], list(swept[1:])) if swept else (None, [])
    x, ticks, tick_labels = (
        _positions(runs[key]) if key else (pd.Series(0.0, index=runs.index), [0.0], [ALL_RUNS])
    )
    frame = runs[["run_id", "p_final"]].assign(_x=x)
    groups = run_groups(runs, rest)
    colours = config_colours(runs, rest)
    bands = seed_bands(frame, groups, x="_x", y="p_final")
    numeric = key is not None and all(_is_number(value) for value in runs[key])
    fig, (ax,) = _new_figure(1, title)
    for config, label, done, rows in _ordered_groups(bands, colours):
        ax.errorbar(
            rows["_x"],
            rows["mean"],
            yerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]],
            color=colours[config],
            linestyle=_linestyle(done) if numeric else "none",
            marker="o",
            markerfacecolor=colours[config] if done else "none",
            capsize=3,
            label=label,
        )
    dots = frame.join(groups, on="run_id")
    ax.scatter(
        dots["_x"],
        dots["p_final"],
        s=16,
        alpha=0.4,
        facecolors=[
            colours[c] if d else "none" for c, d in zip(dots["config"], dots["done"], strict=True)
        ],
        edgecolors=[colours[c] for c in dots["config"]],
    )
    ax.set_xticks(ticks, tick_labels)
    ax.set_xlabel(key or "")
    ax.set_ylabel("final p")
    _figure_legend(fig, _legend_title(rest, ERROR_BARS), extra=[_seed_marker()])
    return fig


def accuracy_vs_p_figure(
    runs: pd.DataFrame, swept: Sequence[str], *, title: str | None = None
) -> Figure | None:
    """Final test accuracy against final p, one dot per run; ``None`` without such runs."""
    both = runs.dropna(subset=["p_final", "test_accuracy"])
    if both.empty:
        return None
    groups = run_groups(both, swept)
    colours = config_colours(runs, swept)
    fig, (ax,) = _new_figure(1, title)
    for config, label, done, rows in _ordered_groups(groups.reset_index(), colours):
        chosen = both[both["run_id"].isin(rows["run_id"])]
        ax.scatter(
            chosen["p_final"],
            chosen["test_accuracy"],
            s=28,
            facecolors=colours[config] if done else "none",
            edgecolors=colours[config],
            label=label,
        )
    ax.set_xlabel("final p")
    ax.set_ylabel("test accuracy")
    _figure_legend(fig, _legend_title(swept, "one dot per run"))
    return fig


# --- saving -----------------------------------------------------------------------------------


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` under ``out_dir``, each atomically."""
    paths = []
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI)
        path = Path(out_dir) / f"{name}.{fmt}"
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
) -> list[Path]:
    """Draw the figures of one sweep into ``out_dir``; return the files written.

    ``p_trajectory`` (traced pooling parameters against the step), ``p_final`` (final p against
    the first swept key), ``accuracy_vs_p`` and ``accuracy`` (accuracy against the epoch), each as
    PNG and PDF.  A figure without data (no trace, no final p, no accuracy) is skipped.
    """
    if runs.empty:
        return []
    figures = {
        "p_trajectory": p_trajectory_figure(params, runs, swept, title=title),
        "p_final": p_final_figure(runs, swept, title=title),
        "accuracy_vs_p": accuracy_vs_p_figure(runs, swept, title=title),
        "accuracy": accuracy_figure(metrics, runs, swept, title=title),
    }
    return [
        path
        for name, fig in figures.items()
        if fig is not None
        for path in _save(fig, out_dir, name)
    ]
