"""The p-drift regime study (``pooling-lab regimes STUDY_DIR``): many experiment folders, each
varying one or two factors around a centre point, read as one table of cells.

- **Experiments**: every folder directly inside STUDY_DIR that holds a runs.csv (a folder with an
  experiment.yaml but no runs.csv, or one that cannot be read, is skipped with a warning; other
  folders, such as the report's own ``figures/``, are not experiments).
- **Factors**: the margin (``head.margin``, whenever a run has one) and the keys of the runs'
  resolved configs (``Results.configs``) whose values differ across the study's runs, plus the
  protocol (closed or open set), minus bookkeeping (``name``, ``description``, ``train.seed``,
  where the data sit, and what a run id leaves out: ``TrainConfig.NOT_IN_RUN_ID``,
  ``RecordConfig.NOT_IN_RUN_ID``).  Taken in the order of ``NAMES``, then as the configs list
  them, a varied key whose value is implied by the factors before it, the margin aside
  (``optim.lr`` zipped with ``optim.name``; a backbone width that goes with the data set) is an
  *implied* key, named in the report but not a column: grouping by it as well would give the
  same cells.  A run not started yet has no config.yaml and varies nothing.
- **Cells**: the runs of one experiment folder with equal values of every factor (the seeds);
  a *regime* is a cell without the margin.  Runs of two folders never share a cell, so an arm that
  repeats the centre point keeps its own rows.  A regime is labelled by the factors whose value
  differs from the study's *centre*, the most common value of each factor over the runs (factors
  that do not apply to a run, such as the scale of a head without one, are left out); ``centre``
  when none differs.
- **Per cell** (finished runs only, at least one; the others are counted in one line): mean over seeds with a
  95% percentile-bootstrap interval (``stats.bootstrap_mean``) of ``CELL_NUMBERS``, of the
  gradient-split numbers (``regimes_mechanism``), and ``p_opt_at_edge``: k of the n probed runs.
- **Per regime** with two or more margins: the Spearman correlation of the margin with the regret
  and with the log drift across its runs (``stats.spearman_test``: bootstrap interval,
  permutation p-value); per regime with a gradient split, the measures of
  ``regimes_mechanism.regime_mechanism``.

Written: regimes.csv (one row per cell), regimes_correlations.csv (one row per regime and measure)
and regimes.md (both tables, with what the numbers mean); the figures are
``pooling_lab.analysis.plots.regimes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pooling_lab import atomic, results
from pooling_lab.analysis import regimes_mechanism as mechanism
from pooling_lab.analysis.drift import with_probe_summary
from pooling_lab.analysis.groups import DONE, is_number, sort_key
from pooling_lab.analysis.stats import (
    Correlation,
    bootstrap_mean,
    markdown_header,
    markdown_row,
    spearman_test,
)
from pooling_lab.errors import UserError
from pooling_lab.experiment.labels import format_value
from pooling_lab.experiment.schema import RecordConfig, TrainConfig

MARGIN = "head.margin"
LEARNABLE, POOL_P = "model.pool.learnable", "model.pool.p"
LR_MULT = "optim.pool_params.lr_mult"
NAMES = {  # config key -> the name tables and figures show; the order in which factors are taken
    MARGIN: "m",
    "optim.name": "optimiser",
    LR_MULT: "p lr x",
    "head.name": "loss",
    "head.scale": "s",
    "model.pool.p": "p (init or fixed)",
    "model.pool.learnable": "p learnable",
    "optim.pool_params.freeze_epochs": "p frozen epochs",
    "optim.pool_params.clamp": "p clamp",
    results.PROTOCOL: "protocol",
    "data.dataset": "data",
    "data.synthetic.signal_fraction": "signal fraction",
    "optim.lr": "lr",
    "optim.weight_decay": "weight decay",
}
BOOKKEEPING = frozenset({
    "run_id", "name", "description", "train.seed", "data.root", "data.download", "data.cache_root",
    *(f"train.{key}" for key in TrainConfig.NOT_IN_RUN_ID), *(f"record.{key}" for key in RecordConfig.NOT_IN_RUN_ID),
})
CELL_NUMBERS = {  # regimes.csv column -> regimes.md header, in this order
    "p_final": "learned p", "p_opt": "p_opt", "p_plateau": "p_plateau", "log_drift": "log drift",
    "regret": "regret (val mAP)", "test_accuracy": "test accuracy", "test_map": "test mAP",
    "test_map_at_p_opt": "test mAP at p_opt",
}
EXPERIMENT, REGIME, SEEDS, PROBED, AT_EDGE = "experiment", "regime", "seeds", "probed", "p_opt_at_edge"
CENTRE = "centre"
CONFIGURED = "configured"  # whether a run has its config.yaml (a run not started yet has none)
MISSING = "-"  # the text of a factor that does not apply to a run
FILES = ("regimes.csv", "regimes_correlations.csv", "regimes.md")


def name(key: str) -> str:
    """The name a factor is shown by."""
    return NAMES.get(key, key)


def value_text(value: Any) -> str:
    """One text per value, so that values compare alike across experiments (10 and 10.0, lists)."""
    if not isinstance(value, list | tuple | dict) and pd.isna(value):
        return MISSING
    return format_value(value)


@dataclass(frozen=True)
class Study:
    """Every run of the study's experiment folders (run ids prefixed ``<experiment>/``), their
    factors and what was skipped."""

    path: Path
    runs: pd.DataFrame  # runs.csv columns, the probe summary, the configs' values and the mechanism numbers
    texts: pd.DataFrame  # per run (same index) the text of every factor
    grad_split: pd.DataFrame
    factors: list[str]  # shown as columns: the margin (when some run has one), then the regime's factors
    implied: list[str]
    centre: dict[str, str]  # the most common text of each factor but the margin
    warnings: list[str]

    @property
    def regime_factors(self) -> list[str]:
        return [key for key in self.factors if key != MARGIN]

    @property
    def margin(self) -> list[str]:
        """``[MARGIN]`` when some run has a margin, else ``[]``."""
        return [key for key in self.factors if key == MARGIN]

    def varying_in(self, experiment: str) -> list[str]:
        """The factors whose value differs between the runs of one experiment folder."""
        texts = self.texts[self.runs[EXPERIMENT] == experiment]
        return [key for key in self.factors if texts[key].nunique() > 1]


# --- reading the study ------------------------------------------------------------------------------


def load_study(path: Path) -> Study:
    """Read every experiment folder of ``path``; a folder that cannot be read is a warning."""
    root = Path(path)
    if not root.is_dir():
        raise UserError("not a folder" if root.exists() else "no such folder", source=str(root))
    loaded, warnings = [], []
    for folder in sorted(child for child in root.iterdir() if child.is_dir()):
        if not (folder / results.RUNS_FILE).is_file():
            if (folder / results.EXPERIMENT_FILE).is_file():
                warnings.append(f"{folder}: no {results.RUNS_FILE}; skipped")
            continue
        try:
            one = results.load(folder)
        except UserError as error:
            warnings.append(f"{error.one_line()}; skipped")
            continue
        warnings += one.damaged
        loaded.append(one)
    if not loaded:
        hint = " (it is an experiment folder itself: give the folder that holds experiments)" if (
            root / results.RUNS_FILE).is_file() else ""
        raise UserError(f"no experiment folder (a folder with {results.RUNS_FILE}) in it{hint}", source=str(root))
    runs = pd.concat([_experiment_runs(one) for one in loaded], ignore_index=True)
    splits = pd.concat([_prefixed(one.grad_split, one.path.name) for one in loaded], ignore_index=True)
    runs = runs.merge(mechanism.run_mechanism(splits), on="run_id", how="left")
    return _with_factors(root, runs, splits, warnings)


def _prefixed(frame: pd.DataFrame, experiment: str) -> pd.DataFrame:
    return frame.assign(run_id=experiment + "/" + frame["run_id"].astype(str))


def _experiment_runs(loaded: results.Results) -> pd.DataFrame:
    """One experiment's runs with the probe summary and their configs' values (runs.csv may hold
    a swept value's label, e.g. ``fixed_3``, where the config holds the value)."""
    runs = with_probe_summary(loaded.runs, loaded.probe, loaded.configs).drop(columns=loaded.swept, errors="ignore")
    configs = loaded.configs if "run_id" in loaded.configs else pd.DataFrame({"run_id": runs["run_id"]})
    configured = configs.set_index("run_id").notna().any(axis=1)
    runs = runs.merge(configs.drop(columns=[c for c in configs if c in runs and c != "run_id"]), on="run_id", how="left")
    runs[CONFIGURED] = runs["run_id"].map(configured).fillna(False).astype(bool)
    return _prefixed(runs, loaded.path.name).assign(**{EXPERIMENT: loaded.path.name})


def _with_factors(root: Path, runs: pd.DataFrame, splits: pd.DataFrame, warnings: list[str]) -> Study:
    candidates = [key for key in [*NAMES, *runs.columns] if key in runs and ("." in key or key == results.PROTOCOL)]
    candidates = [key for key in dict.fromkeys(candidates) if key not in BOOKKEEPING]
    texts = pd.DataFrame({key: runs[key].map(value_text) for key in candidates}, index=runs.index)
    known = texts[runs[CONFIGURED]]  # a run not started yet has no config to vary
    varied = [key for key in candidates if known[key].nunique() > 1 and key != MARGIN]
    regime_keys, implied = [], []
    for key in varied:
        determined = bool(regime_keys) and known.groupby(regime_keys)[key].nunique().max() <= 1
        (implied if determined else regime_keys).append(key)
    factors = [MARGIN] * (MARGIN in texts) + regime_keys
    centre = {key: _most_common(known[key]) for key in regime_keys}
    runs = runs.assign(**{REGIME: [_label(row, centre) for row in texts[list(centre)].to_dict("records")]})
    return Study(root, runs, texts[factors], splits, factors, implied, centre, warnings)


def _most_common(texts: pd.Series) -> str:
    counts = texts.value_counts()
    return min(counts.index, key=lambda text: (-counts[text], text))


def _label(texts: dict[str, str], centre: dict[str, str]) -> str:
    """The factors that differ from the centre; a fixed p always with its value (p fixed at the
    centre's initial value would otherwise read as just "p learnable=False")."""
    fixed_p = texts.get(LEARNABLE) == "False"
    differing = [f"{name(key)}={text}" for key, text in texts.items()
                 if text not in (centre[key], MISSING) or (fixed_p and key == POOL_P)]
    return ", ".join(differing) or CENTRE


# --- the tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegimeTables:
    cells: pd.DataFrame  # regimes.csv
    correlations: pd.DataFrame  # regimes_correlations.csv
    markdown: str  # regimes.md


def finished(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished runs and their factor texts."""
    done = study.runs["status"] == DONE
    return study.runs[done], study.texts[done]


def _groups(runs: pd.DataFrame, texts: pd.DataFrame, keys: list[str]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """(runs, texts) per group of equal experiment and ``keys`` texts, in the order of the
    experiments and then of the factors' values."""
    positions = runs.groupby([runs[EXPERIMENT], *(texts[key] for key in keys)], sort=False).indices.values()
    folders = list(dict.fromkeys(runs[EXPERIMENT]))

    def order(rows: np.ndarray) -> tuple:
        first = runs.iloc[rows[0]]
        return folders.index(first[EXPERIMENT]), tuple(sort_key(first[key]) for key in keys)
    return [(runs.iloc[rows], texts.iloc[rows]) for rows in sorted(positions, key=order)]


def _intervals(group: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    row = {}
    for column in columns:
        interval = bootstrap_mean(pd.to_numeric(group[column], errors="coerce").to_numpy(float))
        row |= {column: interval.estimate, f"{column}_low": interval.low, f"{column}_high": interval.high}
    return row


def _factor_values(group: pd.DataFrame, texts: pd.DataFrame, keys: list[str]) -> dict[str, Any]:
    """The group's value of each factor: a number as a number, NaN where the factor does not
    apply, anything else as its text."""
    values = {}
    for key in keys:
        value, text = group[key].iloc[0], texts[key].iloc[0]
        values[name(key)] = float(value) if is_number(value) else math.nan if text == MISSING else text
    return values


def cell_table(study: Study) -> pd.DataFrame:
    """One row per cell: experiment, regime, the factors, seeds, mean [95% CI] of every number of
    ``CELL_NUMBERS`` and of the mechanism (``split_runs`` of the seeds recorded the split), and
    ``p_opt_at_edge`` of ``probed`` runs."""
    runs, texts = finished(study)
    numbers = [c for c in [*CELL_NUMBERS, *mechanism.NUMBERS] if c in runs and runs[c].notna().any()]
    rows = []
    for group, group_texts in _groups(runs, texts, [*study.regime_factors, *study.margin]):
        row = {EXPERIMENT: group[EXPERIMENT].iloc[0], REGIME: group[REGIME].iloc[0],
               **_factor_values(group, group_texts, study.factors), SEEDS: len(group)}
        row |= _intervals(group, numbers)
        edge = pd.to_numeric(group.get(AT_EDGE, pd.Series(dtype=float)), errors="coerce").dropna()
        row |= {AT_EDGE: int((edge == 1).sum()), PROBED: len(edge)}
        if mechanism.BALANCE in group:
            row[mechanism.SPLIT_RUNS] = int(group[mechanism.BALANCE].notna().sum())
        rows.append(row)
    return pd.DataFrame(rows)


def correlation_table(study: Study) -> pd.DataFrame:
    """Per regime: with two or more margins, the margin's Spearman correlation with the regret and
    with the log drift; with a gradient split, ``regimes_mechanism.regime_mechanism``."""
    runs, texts = finished(study)
    rows = []
    for group, group_texts in _groups(runs, texts, study.regime_factors):
        head = {EXPERIMENT: group[EXPERIMENT].iloc[0], REGIME: group[REGIME].iloc[0],
                **_factor_values(group, group_texts, study.regime_factors)}
        margins = pd.to_numeric(group.get(MARGIN, pd.Series(np.nan, index=group.index)), errors="coerce")
        if margins[np.isfinite(margins)].nunique() >= 2:
            for column in ("regret", "log_drift"):
                if column in group:
                    test = spearman_test(margins.to_numpy(float), group[column].to_numpy(float))
                    rows.append(head | {"x": name(MARGIN), "y": column} | _correlation(test))
        if mechanism.BALANCE in group and group[mechanism.BALANCE].notna().any():
            test, agree, counted = mechanism.regime_mechanism(group)
            rows.append(head | {"x": mechanism.BALANCE, "y": "log_drift"} | _correlation(test)
                        | {mechanism.AGREE: agree, mechanism.COUNTED: counted})
    return pd.DataFrame(rows)


def _correlation(test: Correlation) -> dict[str, float]:
    return {"rho": test.rho, "low": test.low, "high": test.high, "p_value": test.p_value, "runs": test.runs}


def regime_tables(study: Study) -> RegimeTables:
    """The cells, the correlations and regimes.md; a study without a finished run is a user error."""
    if not (study.runs["status"] == DONE).any():
        raise UserError(f"no finished run in its {len(study.runs)} runs: nothing to analyse yet", source=str(study.path))
    cells, correlations = cell_table(study), correlation_table(study)
    return RegimeTables(cells, correlations, markdown(study, cells, correlations))


def write_tables(tables: RegimeTables, out: Path) -> list[Path]:
    paths = [Path(out) / file for file in FILES]
    results.write_csv(paths[0], tables.cells)
    results.write_csv(paths[1], tables.correlations)
    atomic.write_text(paths[2], tables.markdown)
    return paths


# --- regimes.md ---------------------------------------------------------------------------------------


def interval_text(row: pd.Series | dict, column: str) -> str:
    """``mean [low, high]`` to three significant digits; ``-`` where there is no mean."""
    mean = row.get(column, math.nan)
    if pd.isna(mean):
        return MISSING
    return f"{mean:.3g} [{row[f'{column}_low']:.3g}, {row[f'{column}_high']:.3g}]"


def _notes(study: Study) -> list[str]:
    runs = study.runs
    left_out = runs.loc[runs["status"] != DONE, "status"].value_counts().sort_index()
    experiments = list(dict.fromkeys(runs[EXPERIMENT]))
    notes = [
        f"Study folder {study.path}: {len(experiments)} experiment folder(s) ({', '.join(experiments)}), "
        f"{len(runs)} runs.",
        f"Left out: {left_out.sum()} of {len(runs)} runs are not done ("
        + ", ".join(f"{state} {count}" for state, count in left_out.items()) + ")."
        if len(left_out) else f"All {len(runs)} runs are done.",
        "Factors (config keys whose values differ across the study's runs): "
        + (", ".join(f"{name(key)} ({key})" if name(key) != key else key for key in study.factors) or "none") + "."
        + (f" Implied by those, so not columns of their own: {', '.join(study.implied)}." if study.implied else ""),
        "Centre (each factor's most common value; a regime is named by the factors that differ from it): "
        + (", ".join(f"{name(key)}={text}" for key, text in study.centre.items()) or "none") + ".",
        "Each cell: the finished runs of one experiment folder with equal factors (its seeds); mean over seeds "
        "with a 95% percentile-bootstrap interval. regret = validation mAP at p_opt minus at the learned p; "
        "log drift = ln(learned p) - ln(p_opt); p_opt at edge: runs whose p_opt is the smallest, the largest "
        "finite or the infinite p probed, of the runs probed.",
    ]
    return [*notes, *(f"Warning: {line}" for line in study.warnings)]


def _factor_cells(row: pd.Series, keys: list[str]) -> list[str]:
    return [value_text(row.get(name(key))) for key in keys]


def _cells_section(cells: pd.DataFrame, study: Study) -> list[str]:
    numbers = [c for c in CELL_NUMBERS if c in cells]
    lines = ["## Cells", "", *markdown_header([EXPERIMENT, REGIME, *map(name, study.factors), SEEDS,
                                                 *(CELL_NUMBERS[c] for c in numbers), "p_opt at edge"])]
    for _, row in cells.iterrows():
        lines.append(markdown_row([row[EXPERIMENT], row[REGIME], *_factor_cells(row, study.factors),
                                   str(row[SEEDS]), *(interval_text(row, c) for c in numbers),
                                   f"{row[AT_EDGE]} of {row[PROBED]}"]))
    return lines


def _correlations_section(correlations: pd.DataFrame) -> list[str]:
    lines = ["## The margin against the regret and the log drift", "",
             "Per regime with two or more margins: Spearman's rho across its runs, 95% bootstrap interval "
             "(runs resampled), two-sided permutation p-value, number of runs.", ""]
    margin_rows = correlations[correlations["x"] == name(MARGIN)] if not correlations.empty else correlations
    if margin_rows.empty:
        return [*lines, "No regime has two or more margins."]
    lines += markdown_header([EXPERIMENT, REGIME, "y", "rho [95% CI]", "permutation p", "runs"])
    for _, row in margin_rows.iterrows():
        lines.append(markdown_row([row[EXPERIMENT], row[REGIME], row["y"], *_test_cells(row)]))
    return lines


def _test_cells(row: pd.Series) -> list[str]:
    """rho [interval], the permutation p-value and the number of runs of a correlation row."""
    if pd.isna(row["rho"]):
        return [MISSING, MISSING, str(int(row["runs"]))]
    return [f"{row['rho']:.3f} [{row['low']:.3f}, {row['high']:.3f}]", f"{row['p_value']:.4f}", str(int(row["runs"]))]


def _mechanism_section(cells: pd.DataFrame, correlations: pd.DataFrame, study: Study) -> list[str]:
    lines = ["## Mechanism: where the pull on p comes from", "", mechanism.DESCRIPTION, ""]
    if mechanism.SPLIT_RUNS not in cells or not (cells[mechanism.SPLIT_RUNS] > 0).any():
        return [*lines, "No finished run recorded the gradient split."]
    parts = [(c, c.removeprefix("grad_").replace("_", "-") + " part") for c in mechanism.PART_COLUMNS
             if c in cells and not c.endswith(mechanism.LAST_HALF)]
    numbers = [*parts, (mechanism.BALANCE, "balance"), (mechanism.PUSH_LAST_HALF, "push (last half)")]
    lines += markdown_header([EXPERIMENT, REGIME, *map(name, study.margin), "runs with split",
                              *(label for _, label in numbers)])
    for _, row in cells[cells[mechanism.SPLIT_RUNS] > 0].iterrows():
        lines.append(markdown_row([row[EXPERIMENT], row[REGIME], *_factor_cells(row, study.margin),
                                   str(row[mechanism.SPLIT_RUNS]), *(interval_text(row, c) for c, _ in numbers)]))
    lines += ["", *markdown_header([EXPERIMENT, REGIME, "rho(balance, log drift) [95% CI]", "permutation p", "runs",
                                    "sign agreement"])]
    for _, row in correlations[correlations["x"] == mechanism.BALANCE].iterrows():
        lines.append(markdown_row([row[EXPERIMENT], row[REGIME], *_test_cells(row),
                                   f"{int(row[mechanism.AGREE])} of {int(row[mechanism.COUNTED])}"]))
    return lines


def markdown(study: Study, cells: pd.DataFrame, correlations: pd.DataFrame) -> str:
    lines = [f"# p-drift regimes: {study.path.name}", "", *[line for note in _notes(study) for line in (note, "")],
             *_cells_section(cells, study), "", *_correlations_section(correlations), "",
             *_mechanism_section(cells, correlations, study)]
    return "\n".join([*lines, ""])
