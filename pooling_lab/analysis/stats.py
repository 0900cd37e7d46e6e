"""Drift statistics: what the learned p costs against the best test-time p, per swept value.

Per run (``pooling_lab.analysis.drift``, from the probe on the validation split): first the
``regret``, the validation mAP at p_opt minus that at the learned p (>= 0: the learned p is one
of the probed points), then ``log_drift = ln p_learned - ln p_opt`` and ``log_drift_plateau``
(with the plateau's p, the smallest p within the tolerance of the best), p_opt, the plateau and
how many runs have p_opt at the grid's edge.  p_learned is the trained p, the mean over channels
when per-channel.  Per swept value the mean over seeds gets a 95% percentile-bootstrap interval
(resampling the seeds; with three seeds such an interval is coarse, and the tables say how many
seeds stand behind each mean).  An infinite value (p_opt = inf, max pooling, and so a log drift
of -inf) is kept, not dropped: the mean is then infinite, and so is each resampled mean that
draws it.  Across runs, the Spearman correlations of the swept value with the regret and with
the log drifts get bootstrap intervals (resampling runs) and two-sided permutation p-values.
Everything is seeded, so a report is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pooling_lab import atomic, results
from pooling_lab.analysis.drift import FROM_TABLE, TOLERANCE_KEY, with_probe_summary
from pooling_lab.analysis.groups import DONE, FIXED_P, curve_keys, fixed_p_runs
from pooling_lab.data.spec import CLOSED_SET, OPEN_SET
from pooling_lab.errors import UserError
from pooling_lab.evaluate import best_p
from pooling_lab.experiment.labels import format_value
from pooling_lab.experiment.schema import DEFAULT_PLATEAU_TOLERANCE

RESAMPLES = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Correlation:
    rho: float
    low: float
    high: float
    p_value: float
    runs: int


def bootstrap_mean(values: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> Interval:
    """Mean with a percentile-bootstrap interval at ``LEVEL``; NaN values are left out, infinite
    ones kept (the percentiles of resampled means that include one are then taken without
    interpolating, which between two infinite means would give NaN)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    method = "linear" if np.isfinite(means).all() else "nearest"
    return Interval(float(values.mean()), *map(float, np.percentile(means, [tail, 100 - tail], method=method)))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (axis -1)."""
    return pd.DataFrame(np.atleast_2d(values)).rank(axis=1, method="average").to_numpy()


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of x and y along the last axis (rows are independent samples); NaN where
    either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


def spearman_test(x: np.ndarray, y: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> Correlation:
    """rho, its bootstrap interval (pairs resampled) and the permutation p-value (two-sided);
    pairs with a NaN are left out, infinite values rank at the ends."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return Correlation(math.nan, math.nan, math.nan, math.nan, int(x.size))
    rho = float(spearman(x, y)[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, x.size, size=(resamples, x.size))
    boot = spearman(x[picks], y[picks])
    boot = boot[np.isfinite(boot)]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail]) if boot.size else (math.nan, math.nan)
    shuffled = np.array([rng.permutation(y) for _ in range(resamples)])
    null = spearman(np.broadcast_to(x, shuffled.shape), shuffled)
    extreme = np.sum(np.abs(null) >= abs(rho) - 1e-12)
    return Correlation(rho, float(low), float(high), float((extreme + 1) / (resamples + 1)), int(x.size))


def drift_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs that were probed and have a learned p, with ``map_gain`` (test mAP at
    p_opt minus test mAP at the learned p) where both were measured."""
    probed = runs[(runs["status"] == "done") & runs.get("p_opt", pd.Series(np.nan, index=runs.index)).notna()]
    probed = probed[probed["p_final"].notna()].copy()
    if {"test_map", "test_map_at_p_opt"} <= set(probed.columns):
        probed["map_gain"] = probed["test_map_at_p_opt"] - probed["test_map"]
    return probed


def with_accuracy_optimum(runs: pd.DataFrame, probe: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``p_opt_accuracy``: each run's best probed p by validation accuracy (ties ->
    the smaller p), beside the mAP-based ``p_opt``; a flat or monotone mAP curve can put p_opt at
    the end of the grid while accuracy peaks inside it."""
    if probe.empty or "accuracy" not in probe:
        return runs
    optima = {run_id: best_p(rows[["p", "accuracy"]]) for run_id, rows in probe.groupby("run_id")}
    return runs.assign(p_opt_accuracy=runs["run_id"].map(optima))


DRIFT_COLUMNS = {  # drift.csv column -> drift.md header, in this order
    "regret": "regret (val mAP)", "log_drift": "log drift", "log_drift_plateau": "log drift (plateau)",
    "p_final": "learned p", "p_opt": "p_opt (val mAP)", "p_plateau": "p_plateau",
    "p_opt_accuracy": "best p by val accuracy", "test_map": "test mAP (learned p)",
    "test_map_at_p_opt": "test mAP (p_opt)", "map_gain": "mAP gain at p_opt",
}
CORRELATED = ("regret", "log_drift", "log_drift_plateau")  # the swept value is correlated with these
AT_EDGE = "p_opt_at_edge"


def drift_table(runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per value of ``key``: seeds, the mean [95% CI] of each of ``DRIFT_COLUMNS`` that some run
    has, and ``p_opt_at_edge``, the number of runs whose p_opt lies at the grid's edge."""
    probed = drift_runs(runs)
    columns = [column for column in DRIFT_COLUMNS if column in probed and probed[column].notna().any()]
    rows = []
    for value, group in probed.groupby(key, sort=True):
        row = {key: value, "seeds": len(group)}
        for column in columns:
            interval = bootstrap_mean(group[column].to_numpy())
            row |= {column: interval.estimate, f"{column}_low": interval.low, f"{column}_high": interval.high}
        if AT_EDGE in group and group[AT_EDGE].notna().any():
            row[AT_EDGE] = int((group[AT_EDGE] == 1).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def fixed_p_curve(loaded: results.Results) -> pd.DataFrame:
    """The train-time optimum curve of a fixed-p sweep: per fixed p (and per value of the other
    swept keys), mean [95% CI] over seeds of test mAP and test accuracy, and ``best``: whether
    that p has the highest mean test mAP (accuracy without mAP) of its group.  Only finished
    fixed-p baseline runs (``groups.fixed_p_runs``, as the fixed-p figure) are counted."""
    runs = fixed_p_runs(loaded.runs, loaded.configs)
    runs = runs[runs["status"] == DONE]
    if runs.empty:
        return runs
    others = curve_keys(loaded.swept)
    rows = []
    for values, group in runs.groupby([*others, FIXED_P], sort=True):
        row = dict(zip([*others, FIXED_P], values if isinstance(values, tuple) else (values,), strict=True))
        row["seeds"] = len(group)
        for column in ("test_map", "test_accuracy"):
            if column in group:
                interval = bootstrap_mean(group[column].to_numpy())
                row |= {column: interval.estimate, f"{column}_low": interval.low, f"{column}_high": interval.high}
        rows.append(row)
    curve = pd.DataFrame(rows)
    score = "test_map" if "test_map" in curve else "test_accuracy"
    best = curve.groupby(others)[score].transform("max") if others else curve[score].max()
    curve["best"] = curve[score] == best
    return curve


def _first_numeric_key(loaded: results.Results) -> str | None:
    return next((key for key in loaded.swept if pd.api.types.is_numeric_dtype(loaded.runs[key])), None)


def default_key(loaded: results.Results) -> str:
    """The first numeric swept key (e.g. ``head.margin``)."""
    key = _first_numeric_key(loaded)
    if key is None:
        raise UserError("no numeric swept key to relate the drift to; name one with --by", source=str(loaded.path))
    return key


def drift_report_stem(loaded: results.Results, key: str) -> str:
    """``drift`` for the default key, ``drift_by_<key>`` for any other, so that grouping by
    another key (``--by seed``) never overwrites the default report."""
    return "drift" if key == _first_numeric_key(loaded) else f"drift_by_{key}"


def write_reports(loaded: results.Results, key: str | None = None) -> list[Path]:
    """drift.csv and drift.md for probed runs of a learnable p, fixed_p.csv and fixed_p.md for
    runs of a fixed p; whichever the results hold (neither is a user error)."""
    written: list[Path] = []
    if not drift_runs(loaded.runs).empty:
        written += write_drift_report(loaded, key)
    curve = fixed_p_curve(loaded)
    if not curve.empty:
        csv_path, md_path = loaded.path / "fixed_p.csv", loaded.path / "fixed_p.md"
        results.write_csv(csv_path, curve)
        atomic.write_text(md_path, fixed_p_markdown(curve, curve_keys(loaded.swept)))
        written += [csv_path, md_path]
    if not written:
        raise UserError(
            "nothing to analyse: no finished run has p_opt (set eval.probe_p, or run `pooling-lab probe`) "
            "and none was trained with a fixed GeM p (model.pool.learnable: false)",
            source=str(loaded.path),
        )
    return written


def write_drift_report(loaded: results.Results, key: str | None = None) -> list[Path]:
    """drift.csv (one row per value of ``key``) and drift.md (the table and the correlation),
    named after ``key`` when it is not the default one (``drift_report_stem``)."""
    key = key or default_key(loaded)
    if key not in loaded.runs:
        raise UserError(f"{key!r} is not a swept key; swept: {', '.join(loaded.swept) or 'none'}", field="--by")
    runs = with_probe_summary(with_accuracy_optimum(loaded.runs, loaded.probe), loaded.probe, loaded.configs)
    table = drift_table(runs, key)
    probed = drift_runs(runs)
    correlations = {column: spearman_test(probed[key].to_numpy(float), probed[column].to_numpy())
                    for column in CORRELATED if probed[column].notna().any()}
    stem = drift_report_stem(loaded, key)
    csv_path, md_path = loaded.path / f"{stem}.csv", loaded.path / f"{stem}.md"
    results.write_csv(csv_path, table)
    atomic.write_text(md_path, drift_markdown(table, key, correlations, drift_notes(probed, loaded.configs)))
    return [csv_path, md_path]


PROTOCOLS = {
    CLOSED_SET: "closed set (retrieval and the probe on images of the training classes)",
    OPEN_SET: "open set (accuracy on the training classes; retrieval and the probe on classes unseen in training)",
}


def drift_notes(probed: pd.DataFrame, configs: pd.DataFrame) -> list[str]:
    """What the drift table's numbers rest on: the protocol, the plateau tolerance, the runs whose
    probe summary was computed from their recorded probe table."""
    protocols = sorted(set(probed.get(results.PROTOCOL, pd.Series(dtype=str)).fillna(results.UNRECORDED_PROTOCOL)))
    configured = configs[configs["run_id"].isin(probed["run_id"])] if "run_id" in configs else configs
    tolerances = sorted(set(configured.get(TOLERANCE_KEY, pd.Series(dtype=float)).fillna(DEFAULT_PLATEAU_TOLERANCE))
                        or {DEFAULT_PLATEAU_TOLERANCE})
    notes = [
        "Protocol: " + "; ".join(PROTOCOLS.get(protocol, protocol) for protocol in protocols) + ".",
        "Mean over seeds with a 95% percentile-bootstrap interval. regret = validation mAP at p_opt minus "
        "validation mAP at the learned p (>= 0: the probe measures the learned p itself); log drift = "
        "ln(learned p) - ln(p_opt), and with p_plateau, the smallest p whose validation mAP is within "
        f"{' / '.join(f'{t:g}' for t in tolerances)} of the best (-inf where p_opt = inf, max pooling); "
        "p_opt at edge: runs whose p_opt is the smallest, the largest finite or the infinite p probed, "
        "where the optimum may lie beyond the grid.",
    ]
    recomputed = int(probed[FROM_TABLE].sum()) if FROM_TABLE in probed else 0
    if recomputed:
        notes.append(
            f"{recomputed} of {len(probed)} runs were probed before the probe measured inf and the learned p: "
            "their regret, p_plateau and edge flag come from their probe.csv plus their recorded validation mAP "
            "at the learned p (same split, the trained pool); their grid has no inf, so its edge is its largest p."
        )
    return notes


def fixed_p_markdown(curve: pd.DataFrame, others: list[str]) -> str:
    metrics = [(c, label) for c, label in (("test_map", "test mAP"), ("test_accuracy", "test accuracy")) if c in curve]
    lines = [
        "# Train-time optimum of a fixed GeM p",
        "",
        "Models trained with p held fixed; mean over seeds with a 95% percentile-bootstrap interval.",
        "The best p of each group (by test mAP) is marked *.",
        "",
        *markdown_header([*others, "p", "seeds", *[label for _, label in metrics]]),
    ]
    for _, row in curve.iterrows():
        cells = [format_value(row[k]) for k in others] + [f"{row[FIXED_P]:g}{' *' if row['best'] else ''}", str(int(row["seeds"]))]
        cells += [_cell(curve, row, c) for c, _ in metrics]
        lines.append(markdown_row(cells))
    return "\n".join(lines) + "\n"


def markdown_row(cells: list[str]) -> str:
    """One markdown table row; a pipe inside a cell (``|drift|``) is escaped so it does not split it."""
    return "| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |"


def markdown_header(labels: list[str]) -> list[str]:
    """The header row and the separator row of a markdown table."""
    return [markdown_row(labels), "|" + "---|" * len(labels)]


def _cell(table: pd.DataFrame, row: pd.Series, column: str) -> str:
    if column not in table:
        return "-"
    return f"{row[column]:.3f} [{row[f'{column}_low']:.3f}, {row[f'{column}_high']:.3f}]"


def drift_markdown(table: pd.DataFrame, key: str, correlations: dict[str, Correlation], notes: list[str]) -> str:
    columns = [(c, label) for c, label in DRIFT_COLUMNS.items() if c in table]
    edge = AT_EDGE in table
    lines = [
        f"# p drift by {key}",
        "",
        *[line for note in notes for line in (note, "")],
        *markdown_header([key, "seeds", *[label for _, label in columns], *(["p_opt at edge"] if edge else [])]),
    ]
    for _, row in table.iterrows():
        cells = [f"{row[key]:g}", str(int(row["seeds"]))] + [_cell(table, row, c) for c, _ in columns]
        cells += [f"{row[AT_EDGE]:.0f} of {int(row['seeds'])}"] if edge else []
        lines.append(markdown_row(cells))
    if correlations:
        lines += ["", f"Spearman correlation of {key} over the runs with"]
    for column, correlation in correlations.items():
        lines.append(
            f"- {DRIFT_COLUMNS[column]} ({correlation.runs} runs): rho = {correlation.rho:.3f}, 95% bootstrap "
            f"interval [{correlation.low:.3f}, {correlation.high:.3f}], permutation p = {correlation.p_value:.4f}"
        )
    return "\n".join([*lines, ""])
