"""Figures over training: every traced pooling parameter against the step, and accuracy
against the epoch; one mean line and min-max band over seeds per configuration."""

from __future__ import annotations

from matplotlib.figure import Figure

from pooling_lab.analysis.groups import SweepData, p_bands, seed_bands
from pooling_lab.analysis.layout import DEFAULT_LAYOUT, Layout, band_figure

ACCURACY_COLUMNS = ("val_accuracy", "test_accuracy")


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
    return band_figure(
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
    return band_figure(
        panels,
        x="epoch",
        xlabel="epoch",
        colours=layout.colours(data.runs, data.swept),
        keys=data.swept,
        layout=layout,
    )
