"""An experiment file becomes a ``Plan``: the validated base and one ``RunSpec`` per run
(grid x zip x seeds), each fully resolved, with a stable id (a hash of the resolved config) and a
readable directory name.  Every problem is raised as a one-line ``UserError`` naming the file,
the YAML line where known, the dotted field and the bad value, before anything is trained or
written.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pooling_lab.errors import UserError
from pooling_lab.experiment.errors import validate, yaml_line
from pooling_lab.experiment.labels import format_value
from pooling_lab.experiment.overrides import override_path, parse_override, set_dotted
from pooling_lab.experiment.schema import (
    SEED_KEY,
    ExperimentConfig,
    RecordConfig,
    SweepConfig,
    TrainConfig,
    axis_items,
)
from pooling_lab.experiment.yaml_file import read_yaml


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan: its resolved config and where it sits in the sweep."""

    config: ExperimentConfig
    swept: dict[str, Any]
    run_id: str
    dir_name: str


@dataclass(frozen=True)
class Plan:
    source: Path
    raw: dict[str, Any]
    experiment: ExperimentConfig
    swept_keys: list[str]
    runs: list[RunSpec]


def load_plan(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    """Read, override, validate and expand an experiment file."""
    path = Path(path)
    raw, text = read_yaml(path)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, override_path(key), value, source="--set")
    experiment = validate(raw, path, text)
    swept_keys, runs = _expand(raw, experiment, path, text)
    return Plan(path, raw, experiment, swept_keys, runs)


def _expand(raw: dict[str, Any], experiment: ExperimentConfig, path: Path, text: str) -> tuple[list[str], list[RunSpec]]:
    sweep = experiment.sweep or SweepConfig()
    grid_keys = list(sweep.grid)
    zip_keys = list(sweep.zip)
    zip_rows = list(zip(*map(axis_items, sweep.zip.values()), strict=True)) if zip_keys else [()]
    seeds = sweep.seeds if sweep.seeds is not None else [None]
    base = {key: value for key, value in raw.items() if key != "sweep"}
    lines = {key: yaml_line(text, ["sweep", kind, key]) for kind in ("grid", "zip") for key in getattr(sweep, kind)}
    sweep_source = _located(path, yaml_line(text, ["sweep"]))

    runs: list[RunSpec] = []
    seen: dict[str, dict[str, Any]] = {}
    for grid_items in itertools.product(*map(axis_items, sweep.grid.values())):
        for zip_items in zip_rows:
            for seed in seeds:
                items = dict(zip([*grid_keys, *zip_keys], [*grid_items, *zip_items], strict=True))
                swept = {key: shown for key, (shown, _) in items.items()}
                resolved = copy.deepcopy(base)
                for key, (_, value) in items.items():
                    set_dotted(resolved, key.split("."), copy.deepcopy(value), source=_located(path, lines[key]))
                if seed is not None:
                    set_dotted(resolved, SEED_KEY.split("."), seed, source=sweep_source)
                context = f"in the sweep run {_describe(swept)}" if swept else ""
                config = validate(resolved, path, text, context, lines)
                run_id = run_id_of(config)
                if run_id in seen:
                    raise UserError(
                        f"the sweep produces the same run twice ({_describe(seen[run_id])} and "
                        f"{_describe(swept | {SEED_KEY: config.train.seed})}): remove the repeated value",
                        source=sweep_source,
                        field="sweep",
                    )
                seen[run_id] = swept | {SEED_KEY: config.train.seed}
                runs.append(RunSpec(config, swept, run_id, dir_name_of(swept, config.train.seed, run_id)))
    return grid_keys + zip_keys, runs


def _located(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def run_id_of(config: ExperimentConfig) -> str:
    """A stable id: the hash of everything that can change a run's result.  Where the data sit
    (``data.root``, ``data.download``, ``data.cache_root``), ``TrainConfig.NOT_IN_RUN_ID`` (threads, checkpoint
    frequency) and ``RecordConfig.NOT_IN_RUN_ID`` (the gradient split) do not count, so moving the data or the machine does not orphan finished runs."""
    payload = config.model_dump(
        mode="json",
        exclude={"name": True, "description": True, "sweep": True, "data": {"root", "download", "cache_root"},
                 "train": set(TrainConfig.NOT_IN_RUN_ID), "record": set(RecordConfig.NOT_IN_RUN_ID)},
    )
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def dir_name_of(swept: dict[str, Any], seed: int, run_id: str) -> str:
    """Readable run folder name: last key parts with their values, the seed and a short id."""
    leaves = [key.rsplit(".", 1)[-1] for key in swept]
    parts = []
    for key, leaf in zip(swept, leaves, strict=True):
        label = leaf if leaves.count(leaf) == 1 else key
        parts.append(f"{label}={format_value(swept[key])}")
    parts.append(f"seed={seed}")
    name = "_".join(parts)
    name = re.sub(r"[^A-Za-z0-9_.=+,-]+", "-", name).strip("-")[:120]
    return f"{name}_{run_id[:6]}"
