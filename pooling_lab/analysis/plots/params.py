"""Figures of the trained pooling parameters: histograms of the final per-channel values, and
the final test metrics against the final learned p, one dot per run."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pooling_lab.analysis.groups import SweepData, has_values, ordered_groups
from pooling_lab.analysis.layout import (
    DEFAULT_LAYOUT,
    RUN_METRICS,
    Layout,
    finish,
    legend_title,
    new_figure,
)

HIST_BINS = 20


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
        for config, label, done, group in ordered_groups(vectors, colours)
        for (module, param), rows in group.groupby(["module", "param"])
    ]
    bins = np.histogram_bin_edges(vectors["value"], bins=HIST_BINS)
    fig, axes = new_figure(len(panels), layout)
    for ax, (colour, label, done, name, values) in zip(axes, panels, strict=True):
        ax.hist(values, bins=bins, color=colour, histtype="bar" if done else "step")
        ax.axvline(values.mean(), color="black", linestyle="--", linewidth=1, label="mean")
        ax.set_xlim(bins[0], bins[-1])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{label}\n{name}" if several else label)
        ax.set_xlabel(f"final {name.rsplit('.', 1)[-1]}")
        ax.set_ylabel("channels")
    seeds = bool((vectors.groupby("label")["run_id"].nunique() > 1).any())
    return finish(fig, layout, "channels of all seeds" if seeds else "")


def metric_vs_p_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """Test accuracy and test mAP (one panel each, where measured) against final p, one dot
    per run coloured by configuration; ``None`` when no run has both."""
    runs = data.runs
    columns = [column for column in RUN_METRICS if has_values(runs, "p_final", column)]
    if not columns:
        return None
    groups = layout.groups(runs, data.swept)
    colours = layout.colours(runs, data.swept)
    fig, axes = new_figure(len(columns), layout)
    for ax, column in zip(axes, columns, strict=True):
        both = runs.dropna(subset=["p_final", column]).join(groups, on="run_id", how="inner")
        for config, label, done, rows in ordered_groups(both, colours):
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
    return finish(fig, layout, legend_title(layout, data.swept, "one dot per run"))
