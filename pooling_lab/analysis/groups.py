"""Runs grouped into configurations, for every figure and table of the analysis.

A *configuration* is a combination of swept values (seeds pooled); its colour comes from
``pooling_lab.analysis.style`` and depends on the values alone.  Runs whose status is not
``done`` keep what they recorded and form their own group per configuration (labelled e.g.
``head.margin=0.5 (diverged)``).  Over the runs of a group, ``seed_bands`` gives the mean and
min-max band of any column.

``fixed_p_runs`` is the one definition of a fixed-p baseline run, which the fixed-p curve
(``plots.fixed_p``) and its table (``stats``) both use: a run whose configured ``model.pool`` holds
GeM's p fixed, as ``pooling_lab.pooling.exponent.fixed_p`` decides.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from pooling_lab.analysis.style import (
    COLOUR_RANGES,
    NEUTRAL,
    category_colours,
    colour_span,
    sequential_colour,
)
from pooling_lab.errors import UserError
from pooling_lab.experiment.labels import format_value
from pooling_lab.pooling.exponent import fixed_p

DONE = "done"
ALL_RUNS = "all runs"
CENTRAL_STATS = ("value", "mean")  # a scalar parameter's value; a per-channel parameter's mean
POOL_PREFIX = "model.pool."  # the global pool's options in the flattened configs
FIXED_P_KEY = "model.pool.p"  # the swept key of a fixed-p sweep: the curve's x, not a line
FIXED_P = "p"  # the column ``fixed_p_runs`` adds


@dataclass(frozen=True)
class SweepData:
    """The frames of one or more results directories (see ``pooling_lab.results.Results``)."""

    runs: pd.DataFrame
    swept: Sequence[str] = ()
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    params: pd.DataFrame = field(default_factory=pd.DataFrame)
    probe: pd.DataFrame = field(default_factory=pd.DataFrame)
    final_params: pd.DataFrame = field(default_factory=pd.DataFrame)
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)


def is_number(value: Any) -> bool:
    """A real, non-NaN number; bools are categories, not numbers."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(float(value))
    )


def sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers first in numeric order, then everything else by its text."""
    if is_number(value):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def has_values(frame: pd.DataFrame, *columns: str) -> bool:
    """Whether some row has a finite value in every one of ``columns``."""
    if not set(columns) <= set(frame.columns):
        return False
    values = frame[list(columns)].replace([np.inf, -np.inf], np.nan)
    return not values.dropna().empty


# --- configurations: labels, order, colours ---------------------------------------------------


def _configs(
    runs: pd.DataFrame, keys: Sequence[str], names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Per run (indexed by run_id): its configuration label, the sort order of that label, and
    the value of the single key (``None`` with several keys)."""
    names = names or {}
    rows = list(runs[list(keys)].itertuples(index=False, name=None))
    labels = [
        ", ".join(
            f"{names.get(key, key)}={format_value(value)}"
            for key, value in zip(keys, row, strict=True)
        )
        or ALL_RUNS
        for row in rows
    ]
    order = [tuple(sort_key(value) for value in row) for row in rows]
    single = [row[0] if len(keys) == 1 else None for row in rows]
    return pd.DataFrame(
        {"config": labels, "order": order, "value": single}, index=pd.Index(runs["run_id"])
    )


def _ordered_configs(configs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, in configuration order."""
    first = configs.drop_duplicates("config")
    return first.iloc[sorted(range(len(first)), key=lambda i: first["order"].iloc[i])]


def run_groups(
    runs: pd.DataFrame, keys: Sequence[str], names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Per run (indexed by ``run_id``): ``config``, ``label`` and ``done``.

    ``config`` names the combination of the values of ``keys`` (``"all runs"`` when ``keys`` is
    empty; a key is shown by its display name in ``names``); ``label`` is the config, followed by
    ``" (<status>)"`` when the run is not done, so that unfinished runs of a configuration are
    drawn as a group of their own.
    """
    groups = _configs(runs, keys, names)[["config"]]
    status = runs["status"].fillna("unknown").astype(str).to_numpy()
    groups["done"] = status == DONE
    groups["label"] = [
        config if done else f"{config} ({state})"
        for config, done, state in zip(groups["config"], groups["done"], status, strict=True)
    ]
    return groups


def config_colours(
    runs: pd.DataFrame,
    keys: Sequence[str],
    *,
    names: Mapping[str, str] | None = None,
    ranges: Mapping[str, tuple[float, float]] = COLOUR_RANGES,
) -> dict[str, str]:
    """Colour per configuration label, in configuration order.

    One swept key: the colour of its value (``pooling_lab.analysis.style``): viridis over the
    key's declared range for numbers, fixed Okabe-Ito colours for well-known names; so the same
    value has the same colour in every figure and every results directory.  Several keys:
    Okabe-Ito by configuration order.  No key: one neutral colour.
    """
    configs = _ordered_configs(_configs(runs, keys, names))
    labels, values = list(configs["config"]), list(configs["value"])
    if not keys:
        return {ALL_RUNS: NEUTRAL}
    if len(keys) > 1:
        return category_colours(labels)
    if all(is_number(value) for value in values):
        span = colour_span(keys[0], [float(value) for value in values], ranges)
        return {
            label: sequential_colour(float(value), span)
            for label, value in zip(labels, values, strict=True)
        }
    texts = [format_value(value) for value in values]
    by_text = category_colours(texts)
    return {label: by_text[text] for label, text in zip(labels, texts, strict=True)}


def ordered_groups(frame: pd.DataFrame, colours: dict[str, Any]):
    """(config, label, done, rows) in colour order, finished runs before unfinished ones;
    ``frame`` has the columns of ``run_groups``."""
    rank = {config: index for index, config in enumerate(colours)}
    grouped = frame.groupby(["config", "label", "done"], sort=False)
    return sorted(
        ((config, label, done, rows) for (config, label, done), rows in grouped),
        key=lambda item: (rank[item[0]], not item[2], item[1]),
    )


# --- aggregation over seeds ---------------------------------------------------------------------


def seed_bands(
    frame: pd.DataFrame, groups: pd.DataFrame, *, x: str, y: str, by: Sequence[str] = (), keep_infinite: bool = False
) -> pd.DataFrame:
    """Mean and min-max band of ``y`` over the runs of each group, at each ``x``.

    ``frame`` has ``run_id``, ``x``, ``y`` and the ``by`` columns; ``groups`` comes from
    ``run_groups``.  Infinite values of ``y`` count as missing unless ``keep_infinite`` (a p_opt
    of inf: the mean of a group with one is then inf), and a run with several rows at one ``x``
    counts once (their mean).  Returns the ``by`` columns, ``config``, ``label``, ``done``, ``x``,
    ``mean``, ``low``, ``high`` and ``seeds`` (how many runs had a value), sorted by group and
    ``x``; points where no run had a value are left out.
    """
    keys = [*by, "config", "label", "done"]
    values = frame[["run_id", x, *by]].assign(_y=frame[y] if keep_infinite else frame[y].replace([np.inf, -np.inf], np.nan))
    values = values.join(groups, on="run_id", how="inner").dropna(subset=["_y", x])
    per_run = values.groupby([*keys, x, "run_id"], sort=False)["_y"].mean()
    bands = per_run.groupby(level=[*keys, x]).agg(mean="mean", low="min", high="max", seeds="count")
    return bands.reset_index().sort_values([*keys, x], ignore_index=True)


def several_seeds(*bands: pd.DataFrame) -> bool:
    """Whether some point of ``seed_bands`` pools more than one run (else there is no spread
    over seeds to show or name)."""
    return any(bool((band["seeds"] > 1).any()) for band in bands)


def p_bands(params: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """``seed_bands`` of every traced pooling parameter against the training step.

    A scalar parameter contributes its ``value`` rows, a per-channel parameter its ``mean`` rows
    (the channel mean, then averaged over seeds); ``by`` is module, param and stat.
    """
    trace = params[params["stat"].isin(CENTRAL_STATS)]
    return seed_bands(trace, groups, x="step", y="value", by=("module", "param", "stat"))


def learned_p(runs: pd.DataFrame, groups: pd.DataFrame) -> pd.Series:
    """Mean final p over the runs of each group label (NaN where no run has one)."""
    finals = runs.set_index("run_id")["p_final"]
    return finals.groupby(groups["label"].reindex(finals.index)).mean()


# --- fixed-p baselines --------------------------------------------------------------------------


def pool_spec(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """A run's ``model.pool`` mapping, from its record of the flattened configs (where an option
    that only another run's pool has reads NaN, and an integer that some run lacks reads as a
    float); ``None`` when the record names no pool."""
    spec = {
        key.removeprefix(POOL_PREFIX): value
        for key, value in config.items()
        if key.startswith(POOL_PREFIX) and not (pd.api.types.is_scalar(value) and pd.isna(value))
    }
    return spec if "name" in spec else None


def _why(error: Exception) -> str:
    if isinstance(error, ValidationError):
        detail = error.errors()[0]
        return f"{'.'.join(map(str, detail['loc']))}: {detail['msg']}"
    return str(error.args[0])


def run_fixed_p(config: Mapping[str, Any]) -> float | None:
    """The fixed GeM p of a run (its record of ``Results.configs``), or ``None``: the one
    predicate of a fixed-p baseline run."""
    spec = pool_spec(config)
    if spec is None:
        return None
    try:
        return fixed_p(spec)
    except (KeyError, ValueError) as error:  # an unknown pool, or options it rejects
        raise UserError(f"not a pool this version can build ({_why(error)})",
                        source=f"run {config['run_id']}", field="model.pool") from None


def fixed_p_runs(runs: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """The runs trained with a fixed GeM p (``run_fixed_p``), with that p in column ``p``;
    ``configs`` is ``Results.configs``."""
    records = configs.to_dict("records") if "run_id" in configs else []
    fixed = [(record["run_id"], run_fixed_p(record)) for record in records]
    return runs.merge(
        pd.DataFrame([(run_id, p) for run_id, p in fixed if p is not None], columns=["run_id", FIXED_P]),
        on="run_id",
    )


def curve_keys(swept: Sequence[str]) -> list[str]:
    """The swept keys that split a fixed-p curve into lines: all but the fixed p itself."""
    return [key for key in swept if key != FIXED_P_KEY]
