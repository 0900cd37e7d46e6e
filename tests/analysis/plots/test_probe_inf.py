"""p = inf (max pooling) in the figures: a marked position past the largest finite p, labelled
"∞ (max)"; the learned p's own probe point kept out of the curves; p_opt = inf in the p-drift
figure; the regret figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.layout import INF_GAP, INF_LABEL
from pooling_lab.analysis.plots.probe import probe_curves_figure
from pooling_lab.analysis.plots.summary import p_drift_figure, regret_figure

from ..frames import (
    MARGINS,
    PROBE_P,
    SEEDS,
    errorbar_data,
    label,
    lines_by_label,
    make_data,
    p_final,
    run_id,
)

AT_INF = {0.0: 0.9, 2.0: 0.3, 10.0: 0.2}  # validation mAP at p = inf per margin, + 0.01 per seed


def with_inf_and_learned_points(data: SweepData) -> SweepData:
    """The frames' probe on the grid, plus a row at inf and one at the learned p (off the grid,
    an outlier that must not reach the curves)."""
    extra = [
        {"run_id": run_id(m, s), "p": p, "map": value, "accuracy": value, "on_grid": on_grid}
        for m in MARGINS for s in SEEDS
        for p, value, on_grid in ((math.inf, AT_INF[m] + 0.01 * s, True), (p_final(m, s), 5.0, False))
    ]
    probe = pd.concat([data.probe.assign(on_grid=True), pd.DataFrame(extra)], ignore_index=True)
    return SweepData(data.runs, data.swept, probe=probe)


def test_inf_sits_past_the_grid_with_its_own_tick_and_learned_points_stay_off_the_curves():
    fig = probe_curves_figure(with_inf_and_learned_points(make_data()))
    fig.draw_without_rendering()
    inf_at = max(PROBE_P) * INF_GAP
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        labels = [text.get_text() for text in ax.get_xticklabels()]
        assert labels[-1] == INF_LABEL and ax.get_xticks()[-1] == pytest.approx(inf_at)
        assert labels[:-1] == [f"{p:g}" for p in PROBE_P]
        lines = lines_by_label(ax)
        for margin in MARGINS:
            assert list(lines[label(margin)].get_xdata()) == list(PROBE_P)  # no learned point, no inf
            assert max(lines[label(margin)].get_ydata()) < 1  # the off-grid outlier (5.0) is not drawn
        points = [c for c in ax.containers if list(errorbar_data(c)[0]) == [pytest.approx(inf_at)]]
        assert sorted(errorbar_data(c)[1][0] for c in points) == pytest.approx(
            sorted(np.mean([AT_INF[m] + 0.01 * s for s in SEEDS]) for m in MARGINS))


def test_p_opt_at_inf_is_drawn_at_the_marked_position_of_the_p_drift_figure():
    data = make_data()
    runs = data.runs.assign(p_opt=np.where(data.runs["head.margin"] == 10.0, math.inf, data.runs["p_opt"]),
                            regret=0.01, p_plateau=4.0)
    fig = p_drift_figure(SweepData(runs, data.swept))
    fig.draw_without_rendering()
    (ax,) = fig.axes
    learned, best, _ = ax.containers
    top = max(max(runs["p_final"]), max(runs["p_opt"][np.isfinite(runs["p_opt"])]), 4.0)
    inf_at = top + (top - min(runs["p_final"])) * 0.2  # a linear axis: a fifth of the span past the top
    assert errorbar_data(best)[1][-1] == pytest.approx(inf_at)  # margin 10: inf in both seeds
    assert [text.get_text() for text in ax.get_yticklabels()][-1] == INF_LABEL
    assert ax.get_yticks()[-1] == pytest.approx(inf_at)
    assert all(value < inf_at for value in errorbar_data(learned)[1])


def test_the_regret_figure_draws_the_mean_regret_per_margin():
    data = make_data()
    runs = data.runs.assign(regret=[0.01 * (i + 1) for i in range(len(data.runs))])
    (ax,) = regret_figure(SweepData(runs, data.swept)).axes
    x, y, _ = errorbar_data(ax.containers[0])
    assert x == list(MARGINS)
    assert y == pytest.approx(list(runs.groupby("head.margin")["regret"].mean()))
    assert ax.get_ylabel() == "mAP regret (val)"
    assert regret_figure(SweepData(data.runs.assign(regret=np.nan), data.swept)) is None
