"""Tests for pooling_lab.analysis.plots.summary: final p, p drift and final accuracy against the
first swept key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from numpy.testing import assert_allclose

from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.plots.summary import (
    BEST,
    PLATEAU,
    final_accuracy_figure,
    p_drift_figure,
    p_final_figure,
)

from ..frames import (
    MARGINS,
    PROBE_P,
    SEEDS,
    errorbar_data,
    legend_labels,
    make_data,
    make_runs,
    one_seed,
    p_final,
    p_opt,
    probe_map,
)


def test_p_final_figure_places_numeric_values_and_shows_seed_extremes():
    fig = p_final_figure(make_data())
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == list(MARGINS)
    (errorbar,) = ax.containers
    x, y, extents = errorbar_data(errorbar)
    finals = [[p_final(m, seed) for seed in SEEDS] for m in MARGINS]
    assert x == list(MARGINS)
    assert y == pytest.approx([np.mean(f) for f in finals])
    assert_allclose(extents, [(min(f), max(f)) for f in finals])


def test_p_final_figure_uses_categorical_slots_for_text_values():
    runs = make_runs()
    runs["head.name"] = ["arcface", "arcface", "cosface", "cosface", "softmax", "softmax"]
    fig = p_final_figure(SweepData(runs, ["head.name", "head.margin"]))
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [0.0, 1.0, 2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["arcface", "cosface", "softmax"]


def test_final_accuracy_figure_per_categorical_value():
    runs = make_runs()
    runs["model.pool"] = ["avg", "avg", "gem", "gem", "max", "max"]
    fig = final_accuracy_figure(SweepData(runs, ["model.pool"]))
    (ax,) = fig.axes
    (errorbar,) = ax.containers
    x, y, extents = errorbar_data(errorbar)
    by_pool = runs.groupby("model.pool")["test_accuracy"]
    assert x == [0.0, 1.0, 2.0]
    assert y == pytest.approx(list(by_pool.mean()))
    assert_allclose(extents, list(zip(by_pool.min(), by_pool.max(), strict=True)))
    assert ax.get_ylabel() == "test accuracy"


def plateau(margin: float, seed: int, tolerance: float = 0.005) -> float:
    """The smallest p of the probe grid or the learned p whose mAP is within ``tolerance`` of the best."""
    points = {p: probe_map(margin, seed, p) for p in (*PROBE_P, p_final(margin, seed))}
    best = max(points.values())
    return min(p for p, value in points.items() if value >= best - tolerance)


def test_p_drift_figure_draws_learned_p_p_opt_and_the_plateau_at_the_same_x():
    fig = p_drift_figure(make_data())
    (ax,) = fig.axes
    learned, best, plateaus = ax.containers
    finals = [[p_final(m, seed) for seed in SEEDS] for m in MARGINS]
    optima = [[p_opt(m, seed) for seed in SEEDS] for m in MARGINS]
    smallest = [[plateau(m, seed) for seed in SEEDS] for m in MARGINS]
    for container, values in ((learned, finals), (best, optima), (plateaus, smallest)):
        x, y, extents = errorbar_data(container)
        assert x == list(MARGINS)
        assert y == pytest.approx([np.mean(v) for v in values])
        assert_allclose(extents, [(min(v), max(v)) for v in values])
    learned_line, best_line = learned.lines[0], best.lines[0]
    assert (learned_line.get_marker(), learned_line.get_linestyle()) == ("o", "-")
    assert (best_line.get_marker(), best_line.get_linestyle()) == ("D", "--")
    dots = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert_allclose(
        sorted(map(tuple, np.vstack(dots).tolist())),
        sorted((m, value) for m in MARGINS for s in SEEDS for value in (p_final(m, s), p_opt(m, s), plateau(m, s))),
    )
    labels = legend_labels(fig)
    assert labels == ["learned p", BEST.label, PLATEAU.label, "individual seeds"]


def test_p_drift_figure_is_skipped_without_p_opt():
    data = make_data()
    no_probe = SweepData(data.runs.assign(p_opt=math.nan), data.swept)
    assert p_drift_figure(no_probe) is None
    assert p_drift_figure(SweepData(data.runs.drop(columns="p_opt"), [])) is None
    assert p_final_figure(no_probe) is not None



def test_one_seed_draws_no_error_bars_and_no_seed_dots():
    ax = p_drift_figure(one_seed(make_data())).axes[0]
    assert not any(container.has_yerr for container in ax.containers)
    assert len(ax.collections) == 0  # the faint per-seed dots would sit on the means

