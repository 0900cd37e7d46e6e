"""What the test-time p probe says about each run (``pooling_lab.evaluate.probe``): p_opt, the
plateau, whether p_opt lies at the grid's edge, the regret and the log drift.

A run probed since the probe records these carries them in its status.json.  For a run probed
before (its grid had neither inf nor the learned p), ``with_probe_summary`` computes them from
its probe.csv plus one point at the learned p: the run's own validation score there (``val_map``,
or ``val_accuracy`` for a probe without mAP), measured on the same split with the trained pool,
so nothing is interpolated.  Its recorded p_opt (the best of its recorded grid) is kept; were
the learned p's point better still, the regret is 0 and the log drift still measures the way to
that p_opt.  Such a run's grid has no inf: its edge is its largest probed p.  Those runs are
marked in ``FROM_TABLE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from pooling_lab.evaluate.probe import ON_GRID, probe_summary, score_column
from pooling_lab.experiment.schema import DEFAULT_PLATEAU_TOLERANCE
from pooling_lab.results import PROBE_SUMMARY

FROM_TABLE = "probe_summary_from_table"  # True where the summary was computed here
TOLERANCE_KEY = "eval.plateau_tolerance"  # in ``Results.configs``


def with_probe_summary(runs: pd.DataFrame, probe: pd.DataFrame, configs: pd.DataFrame | None = None) -> pd.DataFrame:
    """``runs`` with p_opt and every ``PROBE_SUMMARY`` column, computed from ``probe`` (probe.csv
    of every run, with ``run_id``) for the runs that lack a regret but have a probe table (a
    recorded p_opt is kept).  ``p_opt_at_edge`` is 1.0 / 0.0 (NaN: unknown)."""
    runs = runs.copy()
    for column in ("p_opt", *PROBE_SUMMARY):
        runs[column] = pd.to_numeric(runs[column], errors="coerce").astype(float) if column in runs else math.nan
    runs[FROM_TABLE] = False
    if probe.empty or "run_id" not in probe:
        return runs
    tables = dict(tuple(probe.drop(columns=[ON_GRID], errors="ignore").groupby("run_id")))
    tolerances = _tolerances(configs)
    for index in runs.index[runs["regret"].isna() & runs["run_id"].isin(tables)]:
        run = runs.loc[index]
        table = _with_learned_point(tables[run["run_id"]].drop(columns="run_id").dropna(axis=1, how="all"), run)
        learned = run.get("p_final", math.nan)
        summary = probe_summary(table, learned, tolerances.get(run["run_id"], DEFAULT_PLATEAU_TOLERANCE),
                                p_opt=run["p_opt"])
        summary["p_opt_at_edge"] = float(summary["p_opt_at_edge"])
        runs.loc[index, list(summary)] = list(summary.values())
        runs.loc[index, FROM_TABLE] = True
    return runs


def _with_learned_point(table: pd.DataFrame, run: pd.Series) -> pd.DataFrame:
    """A recorded probe table with the learned p's point added from the run's validation score,
    unless the table has it already or the run has no such score."""
    column, learned = score_column(table), run.get("p_final", math.nan)
    score = run.get(f"val_{column}", math.nan)
    if not math.isfinite(learned) or not np.isfinite(score) or (table["p"] == learned).any():
        return table
    return pd.concat([table, pd.DataFrame([{"p": learned, column: score}])], ignore_index=True)


def _tolerances(configs: pd.DataFrame | None) -> Mapping[str, float]:
    """Each run's ``eval.plateau_tolerance`` where its config sets one."""
    if configs is None or TOLERANCE_KEY not in configs or "run_id" not in configs:
        return {}
    return configs.dropna(subset=[TOLERANCE_KEY]).set_index("run_id")[TOLERANCE_KEY].to_dict()
