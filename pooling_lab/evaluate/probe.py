"""The test-time p probe: a trained model evaluated with its pool replaced by a fixed GeM at
each p of a grid, without retraining; p_opt is the grid's best p."""

from __future__ import annotations

import math

import pandas as pd

from pooling_lab.evaluate.passes import SplitPass, split_metrics
from pooling_lab.pooling.exponent import fixed_gem


def probe(split: SplitPass, p_values: list[float], metrics: list[str]) -> pd.DataFrame:
    """Metrics of the trained model with its pool replaced by a fixed, shared GeM at each p
    (same eps), without retraining: the test-time p sweep."""
    device = next(split.model.parameters()).device
    eps = getattr(split.model.pool, "eps", 1e-6)
    rows = []
    for p in p_values:
        stand_in = fixed_gem(p, eps).to(device)
        rows.append({"p": p, **split_metrics(split.outputs(stand_in), metrics)})
    return pd.DataFrame(rows, columns=["p", *metrics])


def best_p(table: pd.DataFrame) -> float:
    """The probe's best p: highest mAP (accuracy if mAP was not measured); ties -> smaller p."""
    column = "map" if "map" in table else "accuracy"
    ordered = table[table[column].map(math.isfinite)].sort_values("p")
    if ordered.empty:
        return float("nan")
    return float(ordered.loc[ordered[column].idxmax(), "p"])
