"""The train-time optimum curve: test metrics of fixed-p baseline runs (``groups.fixed_p_runs``)
against their fixed p."""

from __future__ import annotations

from matplotlib.figure import Figure

from pooling_lab.analysis.groups import (
    FIXED_P,
    SweepData,
    curve_keys,
    fixed_p_runs,
    has_values,
    seed_bands,
)
from pooling_lab.analysis.layout import DEFAULT_LAYOUT, RUN_METRICS, Layout, band_figure


def fixed_p_curve_figure(data: SweepData, layout: Layout = DEFAULT_LAYOUT) -> Figure | None:
    """The train-time optimum curve: test mAP and accuracy of models trained with a fixed GeM p,
    against that p (mean and min-max band over seeds, one line per value of the other swept
    keys); ``None`` when no run had a fixed p."""
    runs = fixed_p_runs(data.runs, data.configs)
    if runs.empty:
        return None
    others = curve_keys(data.swept)
    groups = layout.groups(runs, others)
    panels = [
        (label, label, seed_bands(runs, groups, x=FIXED_P, y=column))
        for column, label in RUN_METRICS.items()
        if has_values(runs, column)
    ]
    if not panels:
        return None
    return band_figure(
        panels,
        x=FIXED_P,
        xlabel="fixed p (the same in training and test)",
        colours=layout.colours(runs, others),
        keys=others,
        layout=layout,
    )
