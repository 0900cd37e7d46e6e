"""Figures of the p-drift regime study (``pooling-lab regimes``; the tables are
``pooling_lab.analysis.regimes``), drawn into ``<out>/figures/`` as PNG and PDF:

- ``phase_regret`` and ``phase_log_drift``: for every experiment folder whose runs vary both the
  margin and p's learning-rate multiplier, each cell's mean regret (log drift) as an annotated
  heatmap over the margin (x) and the multiplier (y, one row per value: 1, 10, 100 are log-spaced),
  one panel per combination of the folder's other varying factors (e.g. optimiser x protocol), one
  colour bar for all panels (for the log drift diverging and centred on 0).  An infinite mean
  (p_opt = inf in some seed) takes the bar's end colour and is written as ±∞.
- ``mechanism_<experiment>``: for every folder whose runs recorded the gradient split, the two
  parts of p's gradient (target and non-target logits; positive and negative pairs) against the
  epoch, mean over seeds at each recorded step, one colour per margin, one panel per regime (at
  most ``MECHANISM_PANELS``; further regimes go to ``mechanism_<experiment>_2`` and on).
- ``remedies``: for every folder whose runs include a fixed p or vary a remedy setting
  (``REMEDY_KEYS``), per margin: test mAP and test accuracy of each of its regimes with 95%
  bootstrap intervals, against the centre's learned-p cell of that margin (from that folder, else
  from another) at the learned p (solid line, band: its interval) and, for mAP, at its p_opt
  (dashed: evaluating at p_opt is the test-time remedy).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pooling_lab.analysis import regimes_mechanism as mechanism
from pooling_lab.analysis.groups import DONE, is_number
from pooling_lab.analysis.layout import MARKER_SIZE, PANEL_SIZE_IN, Layout, finish, save_figure
from pooling_lab.analysis.regimes import (
    CENTRE,
    EXPERIMENT,
    LR_MULT,
    MARGIN,
    MISSING,
    REGIME,
    RegimeTables,
    Study,
    name,
    value_text,
)
from pooling_lab.analysis.style import (
    COLOUR_RANGES,
    NEUTRAL,
    OKABE_ITO,
    colour_span,
    sequential_colour,
)

FIGURES = "figures"
MECHANISM_PANELS = 6
REMEDY_KEYS = ("model.pool.learnable", "optim.pool_params.freeze_epochs", "optim.pool_params.clamp")
PHASES = {  # figure -> (cell column, colour bar label, diverging)
    "phase_regret": ("regret", "val mAP regret at the learned p", False),
    "phase_log_drift": ("log_drift", "log drift: ln(learned p) − ln(p_opt)", True),
}
PART_LINES = {"target": "-", "positive": "-", "non_target": "--", "negative": "--"}
REFERENCE = {  # remedies: the centre's learned-p cell, (column, label, colour, line)
    "learned": ("{metric}", "centre, learned p", OKABE_ITO[3], "-"),
    "at_p_opt": ("{metric}_at_p_opt", "centre, evaluated at p_opt", OKABE_ITO[4], "--"),
}
REMEDY_METRICS = {"test_map": "test mAP", "test_accuracy": "test accuracy"}


def regime_figures(study: Study, tables: RegimeTables) -> dict[str, Figure]:
    """Every figure of the study that has data, by file stem."""
    figures = {**phase_figures(study, tables.cells), **mechanism_figures(study, tables.cells)}
    remedies = remedies_figure(study, tables.cells)
    return figures | ({"remedies": remedies} if remedies is not None else {})


def save_figures(figures: dict[str, Figure], out: Path) -> list[Path]:
    dpi = Layout().style.dpi
    return [path for stem, figure in figures.items() for path in save_figure(figure, Path(out) / FIGURES / stem, dpi)]


def _grid(panels: int, columns: int, title: str, size_in: tuple[float, float] = PANEL_SIZE_IN) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` panels in rows of ``columns``, each ``size_in`` large."""
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(size_in[0] * columns, size_in[1] * rows), layout="constrained")
    fig.suptitle(title)
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _folders(cells: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(cells[EXPERIMENT])) if not cells.empty else []


def _panel_title(experiment: str, keys: list[str], values: tuple) -> str:
    """``experiment: key=value, ...``; without the experiment when it is empty."""
    settings = ", ".join(f"{key}={value_text(value)}" for key, value in zip(keys, values, strict=True))
    return ": ".join(part for part in (experiment, settings) if part)


# --- the phase diagrams ----------------------------------------------------------------------------


def phase_panels(study: Study, cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, cells) per combination of the other varying factors of every folder whose runs
    vary both the margin and p's learning-rate multiplier."""
    panels = []
    folders = [experiment for experiment in _folders(cells) if {MARGIN, LR_MULT} <= set(study.varying_in(experiment))]
    for experiment in folders:
        others = [name(key) for key in study.varying_in(experiment) if key not in (MARGIN, LR_MULT)]
        rows = cells[cells[EXPERIMENT] == experiment]
        if not others:
            panels.append((experiment, rows))
            continue
        shown = experiment if len(folders) > 1 else ""  # one folder: its name would only crowd the titles
        for values, panel in rows.groupby(others, sort=False, dropna=False):
            panels.append((_panel_title(shown, others, values), panel))
    return panels


def phase_figures(study: Study, cells: pd.DataFrame) -> dict[str, Figure]:
    panels = phase_panels(study, cells)
    if not panels:
        return {}
    return {stem: _phase_figure(panels, column, label, diverging) for stem, (column, label, diverging) in PHASES.items()
            if column in cells}


def _phase_figure(panels: list[tuple[str, pd.DataFrame]], column: str, label: str, diverging: bool) -> Figure:
    """One heatmap per panel, coloured on one scale (an infinite mean: at the bar's end)."""
    values = pd.concat([panel[column] for _, panel in panels]).to_numpy(float)
    finite = values[np.isfinite(values)]
    if diverging:
        reach = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        norm, cmap = Normalize(-reach, reach), colormaps["PuOr_r"]
    else:
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        norm, cmap = Normalize(low, high if high > low else low + 1e-12), colormaps["viridis"]
    cmap = cmap.with_extremes(bad="lightgrey")
    fig, axes = _grid(len(panels), min(len(panels), math.ceil(math.sqrt(len(panels)))), "mean over the seeds of each cell")
    for ax, (panel_title, panel) in zip(axes, panels, strict=True):
        _heatmap(ax, panel, column, norm, cmap)
        ax.set_title(panel_title)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label=label,
                 extend=extend[bool(np.isneginf(values).any()), bool(np.isposinf(values).any())])
    return finish(fig, Layout(legend="none"), "")


def _heatmap(ax: Axes, panel: pd.DataFrame, column: str, norm: Normalize, cmap: Colormap) -> None:
    """The panel's cell means over margin (x) and multiplier (y), each cell written in."""
    margin, mult = name(MARGIN), name(LR_MULT)
    grid = panel.groupby([mult, margin])[column].first().unstack(margin)
    grid = grid.reindex(index=sorted(grid.index), columns=sorted(grid.columns))
    values = grid.to_numpy(float)
    ax.imshow(np.clip(values, norm.vmin, norm.vmax), origin="lower", aspect="auto", cmap=cmap, norm=norm)
    for (row, col), value in np.ndenumerate(values):
        shade = cmap(norm(np.clip(value, norm.vmin, norm.vmax))) if not np.isnan(value) else (1, 1, 1, 1)
        dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
        ax.text(col, row, _annotation(value), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(grid.columns)), [value_text(value) for value in grid.columns])
    ax.set_yticks(range(len(grid.index)), [value_text(value) for value in grid.index])
    ax.set_xlabel(f"margin {margin}")
    ax.set_ylabel(f"{mult} (p's learning-rate multiplier)")


def _annotation(value: float) -> str:
    if np.isnan(value):
        return MISSING
    if np.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.3g}".replace("-", "−")


# --- the mechanism ----------------------------------------------------------------------------------


def _split_steps(study: Study) -> pd.DataFrame:
    """The finished runs' gradient split of the global pool's p, with each run's folder, regime
    and margin (as text: ``-`` for a head without one)."""
    split = study.grad_split
    split = split[(split["module"] == mechanism.GLOBAL_POOL) & (split["param"] == mechanism.P)]
    margins = study.runs[MARGIN] if MARGIN in study.runs else pd.Series(np.nan, index=study.runs.index)
    runs = study.runs[study.runs["status"] == DONE].assign(_margin=margins.map(value_text))
    return split.merge(runs[["run_id", EXPERIMENT, REGIME, "_margin"]], on="run_id")


def mechanism_figures(study: Study, cells: pd.DataFrame) -> dict[str, Figure]:
    steps = _split_steps(study)
    figures = {}
    for experiment in _folders(cells):
        rows = steps[steps[EXPERIMENT] == experiment]
        regimes = [regime for regime in dict.fromkeys(cells.loc[cells[EXPERIMENT] == experiment, REGIME])
                   if (rows[REGIME] == regime).any()]
        for page, start in enumerate(range(0, len(regimes), MECHANISM_PANELS)):
            stem = f"mechanism_{experiment}" + (f"_{page + 1}" if page else "")
            figures[stem] = _mechanism_figure(experiment, rows, regimes[start:start + MECHANISM_PANELS])
    return figures


def _margin_colours(margins: list[str]) -> dict[str, str]:
    """The colour of each margin (as text) in every figure; one neutral colour for none."""
    values = [float(margin) for margin in margins if margin != MISSING]
    span = colour_span(MARGIN, values, COLOUR_RANGES) if values else (0.0, 1.0)
    return {margin: NEUTRAL if margin == MISSING else sequential_colour(float(margin), span) for margin in margins}


def _mechanism_figure(experiment: str, rows: pd.DataFrame, regimes: list[str]) -> Figure:
    margins = sorted(rows["_margin"].unique(), key=lambda m: (m == MISSING, 0.0 if m == MISSING else float(m)))
    colours = _margin_colours(margins)
    fig, axes = _grid(len(regimes), min(len(regimes), 3), f"{experiment}: p's gradient by part")
    for ax, regime in zip(axes, regimes, strict=True):
        mean = (rows[rows[REGIME] == regime].groupby(["_margin", "part", "step"])
                .agg(epoch=("epoch", "mean"), grad=("grad", "mean")).reset_index())
        for (margin, part), line in mean.groupby(["_margin", "part"]):
            ax.plot(line["epoch"], line["grad"], color=colours[margin], linestyle=PART_LINES.get(part, ":"))
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.grid(True, alpha=0.3, linewidth=0.5)
        ax.set_title(regime)
        ax.set_xlabel("epoch")
        ax.set_ylabel("part of dloss/dp (< 0 raises p)")
    parts = [part for part in PART_LINES if (rows["part"] == part).any()]
    legend = [Line2D([], [], color=colours[m], label="no margin" if m == MISSING else f"{name(MARGIN)}={m}")
              for m in margins]
    legend += [Line2D([], [], color="grey", linestyle=PART_LINES[part], label=part.replace("_", "-")) for part in parts]
    return finish(fig, Layout(), "mean over seeds", legend)


# --- the remedies -----------------------------------------------------------------------------------


def _has_remedies(runs: pd.DataFrame) -> bool:
    """Whether a folder's runs include a fixed p or vary a remedy setting."""
    texts = {key: runs[key].map(value_text) for key in REMEDY_KEYS if key in runs}
    fixed = "model.pool.learnable" in texts and (texts["model.pool.learnable"] == "False").any()
    return fixed or any(text.nunique() > 1 for text in texts.values())


def remedy_rows(study: Study, cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.Series | None]]:
    """(title, the folder's cells at one margin, the centre's cell at that margin or None) per
    remedy folder and margin."""
    margin = name(MARGIN)
    margins = cells[margin] if margin in cells else pd.Series(np.nan, index=cells.index)
    centre = cells[cells[REGIME] == CENTRE]
    rows = []
    for experiment in _folders(cells):
        if not _has_remedies(study.runs[study.runs[EXPERIMENT] == experiment]):
            continue
        mine = cells[cells[EXPERIMENT] == experiment]
        for value in dict.fromkeys(margins[mine.index]):
            same = margins.isna() if pd.isna(value) else margins == value
            reference = centre[same[centre.index]]
            reference = reference.sort_values(EXPERIMENT, key=lambda column: column != experiment)
            rows.append((_panel_title(experiment, [margin] if margin in cells else [], (value,)),
                         mine[same[mine.index]], reference.iloc[0] if len(reference) else None))
    return rows


def remedies_figure(study: Study, cells: pd.DataFrame) -> Figure | None:
    rows = remedy_rows(study, cells)
    metrics = [metric for metric in REMEDY_METRICS if metric in cells]
    if not rows or not metrics:
        return None
    tallest = max(len(panel) for _, panel, _ in rows)
    fig, axes = _grid(len(rows) * len(metrics), len(metrics), "Remedies for p drift",
                      (PANEL_SIZE_IN[0] + 0.6, 0.9 + 0.3 * tallest))
    for index, (title, panel, reference) in enumerate(rows):
        for column, (ax, metric) in enumerate(zip(axes[index * len(metrics):], metrics, strict=False)):
            _remedy_panel(ax, panel, reference, metric, labels=column == 0)
            ax.set_title(title)
    legend = [Line2D([], [], color=NEUTRAL, marker="o", linestyle="none", markersize=MARKER_SIZE,
                     label="each regime at its own p (learned or fixed)")]
    legend += [Line2D([], [], color=colour, linestyle=line, label=label) for _, label, colour, line in REFERENCE.values()]
    return finish(fig, Layout(), "mean over seeds, 95% bootstrap interval", legend)


def _remedy_panel(ax: Axes, panel: pd.DataFrame, reference: pd.Series | None, metric: str, labels: bool) -> None:
    positions = np.arange(len(panel))
    mean, low, high = (panel[metric + suffix].to_numpy(float) for suffix in ("", "_low", "_high"))
    ax.errorbar(mean, positions, xerr=[np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)], color=NEUTRAL,
                marker="o", linestyle="none", markersize=MARKER_SIZE, capsize=2)
    ax.set_yticks(positions, list(panel[REGIME]) if labels else [])
    ax.set_ylim(len(panel) - 0.5, -0.5)
    ax.set_xlabel(REMEDY_METRICS[metric])
    ax.grid(True, axis="x", alpha=0.3, linewidth=0.5)
    if reference is None:
        return
    for pattern, _, colour, line in REFERENCE.values():
        column = pattern.format(metric=metric)
        if is_number(reference.get(column)):
            ax.axvline(reference[column], color=colour, linestyle=line, linewidth=1.0)
            ax.axvspan(reference[f"{column}_low"], reference[f"{column}_high"], color=colour, alpha=0.12, linewidth=0)
