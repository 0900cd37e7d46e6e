"""Figures of a sweep, drawn from the tidy frames that ``results`` loads, one module per family.

Every figure is a function ``(SweepData, Layout) -> Figure | None`` listed in ``PLOTS`` (``None``
when the frames hold nothing to draw), so ``plot_results`` (one results directory, screen
sizes) and ``pooling_lab.analysis.figures`` (paper figures from a YAML spec) draw the same
pictures:

- ``p_trajectory``: every traced pooling parameter against the training step (``trajectory``);
- ``p_final``: final learned p against the first swept key (``summary``);
- ``p_drift``: the same with ``p_opt`` (the probe's best test-time p) and the plateau's p beside
  it, p = inf (max pooling) at a marked position (``summary``);
- ``regret``: validation mAP at p_opt minus at the learned p, against the first swept key (``summary``);
- ``probe_curves``: validation mAP and accuracy against test-time p, learned p starred (``probe``);
- ``p_histograms``: final per-channel p, one histogram per configuration (``params``);
- ``metric_vs_p``: test accuracy and mAP against final p, one dot per run (``params``);
- ``accuracy``: validation and test accuracy against the epoch (``trajectory``);
- ``final_accuracy``: final test accuracy against the first swept key (``summary``);
- ``fixed_p_curve``: test metrics of fixed-p baseline runs against their p (``fixed_p``).

Configurations, their colours and the aggregation over seeds are ``pooling_lab.analysis.groups``;
sizes, legends and saving are ``pooling_lab.analysis.layout``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.layout import Layout, save_figure
from pooling_lab.analysis.plots.fixed_p import fixed_p_curve_figure
from pooling_lab.analysis.plots.params import metric_vs_p_figure, p_histograms_figure
from pooling_lab.analysis.plots.probe import probe_curves_figure
from pooling_lab.analysis.plots.summary import (
    final_accuracy_figure,
    p_drift_figure,
    p_final_figure,
    regret_figure,
)
from pooling_lab.analysis.plots.trajectory import accuracy_figure, p_trajectory_figure

PLOTS: dict[str, Callable[[SweepData, Layout], Figure | None]] = {
    "p_trajectory": p_trajectory_figure,
    "p_final": p_final_figure,
    "p_drift": p_drift_figure,
    "regret": regret_figure,
    "probe_curves": probe_curves_figure,
    "p_histograms": p_histograms_figure,
    "metric_vs_p": metric_vs_p_figure,
    "accuracy": accuracy_figure,
    "final_accuracy": final_accuracy_figure,
    "fixed_p_curve": fixed_p_curve_figure,
}


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
