"""How every figure is laid out: its size, panels, legend, style, the band panels that several
figure families share, and saving.

Only the object API on ``Figure`` objects is used: no pyplot state, no window.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
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

from pooling_lab.analysis.groups import config_colours, ordered_groups, run_groups, several_seeds
from pooling_lab.analysis.style import Style, apply_style
from pooling_lab.atomic import write_bytes

BAND = "band: min–max over seeds"
RUN_METRICS = {"test_accuracy": "test accuracy", "test_map": "test mAP"}
PANEL_COLUMNS = 3
PANEL_SIZE_IN = (3.2, 2.6)  # per panel, when no size is given
LEGEND_WIDTH_IN = 1.8  # added to the width for a legend on the right
LEGEND_PADDING_IN = 0.3  # around a legend below the panels: frame, padding, gap to the axes
MARKER_SIZE = 4.0
LEGEND_PLACES = ("right", "below", "none")
LOG_RATIO = 8.0  # a p axis is log-scaled when its finite values span more than this factor
INF_LABEL = "∞ (max)"  # p = inf: max pooling, GeM's limit
INF_GAP = 2.0  # on a log axis inf sits this factor past the largest finite p ...
INF_SHARE = 0.2  # ... on a linear one this share of the finite span past it
MAX_P_TICKS = 10


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


def new_figure(panels: int, layout: Layout) -> tuple[Figure, list[Axes]]:
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


def legend_title(layout: Layout, keys: Sequence[str], note: str | None) -> str:
    """The swept keys the colours stand for, and what the lines or marks show (``note``):
    on one line above a legend below the panels, on two beside one on the right."""
    parts = [", ".join(map(layout.name, keys)), note or ""]
    return ("; " if layout.legend == "below" else "\n").join(part for part in parts if part)


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


def finish(fig: Figure, layout: Layout, title: str, extra: Sequence[Line2D] = ()) -> Figure:
    """Apply the layout's axis labels, legend (titled ``title``, with ``extra`` entries) and
    style to a drawn figure."""
    for ax in fig.axes:
        if layout.xlabel is not None:
            ax.set_xlabel(layout.xlabel)
        if layout.ylabel is not None:
            ax.set_ylabel(layout.ylabel)
    if layout.legend != "none":
        _figure_legend(fig, layout, title, extra)
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


def linestyle(done: bool, solid: str = "-") -> str:
    """Finished runs are drawn ``solid``, the others dotted."""
    return solid if done else ":"


# --- band panels: a mean line and a min-max band over seeds per configuration --------------------


def draw_bands(ax: Axes, bands: pd.DataFrame, x: str, colours: dict[str, Any]) -> None:
    for config, label, done, rows in ordered_groups(bands, colours):
        colour = colours[config]
        ax.plot(
            rows[x],
            rows["mean"],
            color=colour,
            linestyle=linestyle(done),
            marker="o" if len(rows) == 1 else None,
            markersize=MARKER_SIZE,
            label=label,
        )
        ax.fill_between(rows[x], rows["low"], rows["high"], color=colour, alpha=0.2, linewidth=0)


def band_figure(
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
    fig, axes = new_figure(len(panels), layout)
    for ax, (panel_title, ylabel, bands) in zip(axes, panels, strict=True):
        draw_bands(ax, bands, x, colours)
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    note = BAND if several_seeds(*(bands for _, _, bands in panels)) else None
    return finish(fig, layout, legend_title(layout, keys, note))


# --- p axes: log-scaled when p spans a wide range, with p = inf at a marked position ---------------


@dataclass(frozen=True)
class PAxis:
    """An axis of GeM's p.  p = inf (max pooling) has no place on a number line: it is drawn at
    ``inf_at``, past the largest finite p, labelled ``INF_LABEL``, with a dotted line marking
    the break between them."""

    log: bool
    top: float  # the largest finite p
    inf_at: float | None  # None: no p is infinite

    @classmethod
    def of(cls, values: Iterable[float]) -> PAxis:
        values = np.asarray(list(values), dtype=float)
        finite = values[np.isfinite(values)]
        low, top = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 1.0)
        log = low > 0 and top / low > LOG_RATIO
        inf_at = None
        if np.isposinf(values).any():
            inf_at = top * INF_GAP if log else top + max(top - low, 1.0) * INF_SHARE
        return cls(log, top, inf_at)

    def place(self, values: pd.Series) -> pd.Series:
        """Drawing positions of p values: inf at ``inf_at``."""
        return values if self.inf_at is None else values.replace(np.inf, self.inf_at)

    def draw(self, ax: Axes, axis: str, ticks: Sequence[float] | None = None) -> None:
        """Scale the ``axis`` ("x" or "y") of ``ax``, tick it at ``ticks`` (finite p values; at
        most ``MAX_P_TICKS`` of them, every k-th; default: the axis' own, or powers of 2 on a log
        axis) and at inf."""
        set_scale, set_ticks = (ax.set_xscale, ax.set_xticks) if axis == "x" else (ax.set_yscale, ax.set_yticks)
        if self.log:
            set_scale("log")
            set_ticks([], minor=True)
        if ticks is None:
            ticks = self._default_ticks(ax, axis)
        ticks = list(ticks)[:: math.ceil(len(ticks) / MAX_P_TICKS)] if ticks else []
        positions, labels = list(ticks), [f"{tick:g}" for tick in ticks]
        if self.inf_at is not None:
            positions.append(self.inf_at)
            labels.append(INF_LABEL)
            line = ax.axvline if axis == "x" else ax.axhline
            gap = math.sqrt(self.top * self.inf_at) if self.log else (self.top + self.inf_at) / 2
            line(gap, color="grey", linestyle=":", linewidth=0.8)
        set_ticks(positions, labels)

    def _default_ticks(self, ax: Axes, axis: str) -> list[float]:
        low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
        high = min(high, self.top)
        if self.log:
            return [2.0**k for k in range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1)
                    if low <= 2.0**k <= high]
        getter = ax.get_xticks if axis == "x" else ax.get_yticks
        return [tick for tick in getter() if low <= tick <= high]


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
