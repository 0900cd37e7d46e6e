"""The test-time p probe: a trained model evaluated with its pool replaced by a fixed GeM at
each p of a grid, without retraining.

The grid always holds p = inf (max pooling, GeM's limit) and the learned p itself, besides the
configured values, so that the grid cannot decide the outcome alone: ``p_opt`` is the arg-max
(by mAP, accuracy without mAP; ties -> the smaller p), ``p_plateau`` the smallest p within the
plateau tolerance of the best, ``p_opt_at_edge`` whether p_opt is the smallest p, the largest
finite p or inf (the optimum may then lie beyond what was probed), ``regret`` the best score
minus the score at the learned p (>= 0, both on the probed split), ``log_drift`` and
``log_drift_plateau`` log p_learned - log p_opt (or p_plateau).  For a per-channel or grouped p
the learned p is their mean, probed as one shared p like every other point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from pooling_lab.evaluate.passes import SplitPass, split_metrics
from pooling_lab.pooling.exponent import probe_pool
from pooling_lab.results import PROBE_SUMMARY

ON_GRID = "on_grid"  # probe.csv: whether a row's p is one of the grid's (else: the learned p, added)


def probe_points(p_values: Sequence[float], learned: float) -> list[tuple[float, bool]]:
    """(p, on the grid) in increasing p: the grid's values and inf, and the learned p when it is
    finite and not one of them."""
    grid = {float(p) for p in p_values} | {math.inf}
    extra = {learned} if math.isfinite(learned) and learned > 0 else set()
    return [(p, p in grid) for p in sorted(grid | extra)]


def probe(split: SplitPass, p_values: Sequence[float], metrics: list[str], learned: float = math.nan) -> pd.DataFrame:
    """Metrics of the trained model with its pool replaced by a fixed, shared GeM at each p of
    ``probe_points`` (max pooling at inf), without retraining: the test-time p sweep."""
    rows = [{"p": p, **metrics_at(split, p, metrics), ON_GRID: on_grid} for p, on_grid in probe_points(p_values, learned)]
    return pd.DataFrame(rows, columns=["p", *metrics, ON_GRID])


def metrics_at(split: SplitPass, p: float, metrics: list[str]) -> dict[str, float]:
    """The metrics of one pass with the model's pool replaced by ``probe_pool(p)`` (same eps)."""
    device = next(split.model.parameters()).device
    eps = getattr(split.model.pool, "eps", 1e-6)
    return split_metrics(split.outputs(probe_pool(p, eps).to(device)), metrics)


def score_column(table: pd.DataFrame) -> str:
    """The column p_opt is chosen by: mAP, else accuracy, else the first metric measured."""
    metrics = [column for column in table.columns if column not in ("p", ON_GRID, "run_id")]
    return next((column for column in ("map", "accuracy") if column in metrics), metrics[0] if metrics else "map")


def _curve(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows with a score, in increasing p (a stable order: ties keep the smaller p first)."""
    if column not in table:
        return table.iloc[0:0]
    return table[table[column].map(math.isfinite)].sort_values("p", kind="stable")


def best_p(table: pd.DataFrame, column: str | None = None) -> float:
    """The probe's best p by ``column`` (``score_column`` by default); ties -> the smaller p."""
    column = column or score_column(table)
    curve = _curve(table, column)
    return math.nan if curve.empty else float(curve.loc[curve[column].idxmax(), "p"])


def probe_summary(table: pd.DataFrame, learned: float, tolerance: float, p_opt: float = math.nan) -> dict[str, Any]:
    """p_opt and ``PROBE_SUMMARY`` (see the module docstring) of a probe table; NaN where it
    cannot say (no score, or no row at the learned p).  A given ``p_opt`` (one recorded before)
    is kept instead of the table's arg-max."""
    column = score_column(table)
    curve = _curve(table, column)
    if curve.empty:
        return {"p_opt": math.nan, **dict.fromkeys(PROBE_SUMMARY, math.nan)}
    p, score = curve["p"], curve[column]
    best = score.max()
    p_opt = float(p[score.idxmax()]) if math.isnan(p_opt) else float(p_opt)
    plateau = float(p[score >= best - tolerance].min())
    finite = p[p < math.inf]
    edges = {float(p.min()), float(finite.max()) if len(finite) else math.nan, math.inf}
    at_learned = score[p == learned]
    return {
        "p_opt": p_opt,
        "p_plateau": plateau,
        "p_opt_at_edge": p_opt in edges,
        "regret": float(best - at_learned.iloc[0]) if len(at_learned) else math.nan,
        "log_drift": log_ratio(learned, p_opt),
        "log_drift_plateau": log_ratio(learned, plateau),
    }


def log_ratio(learned: float, other: float) -> float:
    """log learned - log other (-inf for other = inf); NaN without a positive learned p."""
    if not learned > 0 or math.isinf(learned):
        return math.nan
    return math.log(learned) - math.log(other)
