"""Run every run of a plan into ``<out>/<experiment>/``, skipping the finished ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pooling_lab import results
from pooling_lab.config import Plan, RunSpec
from pooling_lab.data import DataSplits, load_data
from pooling_lab.results import RunFiles
from pooling_lab.train.loop import ProgressSink, SilentProgress, Trainer

Event = Callable[[str, RunSpec, dict[str, Any]], None]


def experiment_dir(plan: Plan, out_root: Path) -> Path:
    return Path(out_root) / plan.experiment.name


def load_all_data(plan: Plan) -> dict[str, DataSplits]:
    """Every distinct data set of the plan, loaded before anything is written (a missing data
    set is a user error, and it must not leave a half-made results directory behind)."""
    loaded: dict[str, DataSplits] = {}
    for spec in plan.runs:
        key = _data_key(spec)
        if key not in loaded:
            loaded[key] = load_data(spec.config.data)
    return loaded


def _data_key(spec: RunSpec) -> str:
    return json.dumps(spec.config.data.model_dump(mode="json"), sort_keys=True)


def run_plan(
    plan: Plan,
    out_root: Path,
    progress: ProgressSink | None = None,
    on_event: Event | None = None,
) -> list[dict[str, Any]]:
    """Train the plan's runs in order; return each run's final status."""
    progress = progress or SilentProgress()
    notify = on_event or (lambda kind, spec, status: None)
    data = load_all_data(plan)
    root = experiment_dir(plan, out_root)
    results.write_yaml(root / results.EXPERIMENT_FILE, plan.raw)
    statuses = {spec.run_id: _known_status(root, spec) for spec in plan.runs}
    write_runs_table(root, plan, statuses)
    for spec in plan.runs:
        if statuses[spec.run_id].get("status") == "done":
            notify("skipped", spec, statuses[spec.run_id])
            continue
        files = RunFiles(root / spec.dir_name)
        results.write_yaml(files.config, spec.config.model_dump(mode="json", exclude={"sweep"}))
        notify("started", spec, {})
        try:
            statuses[spec.run_id] = Trainer(spec, files, data[_data_key(spec)], progress).run()
        finally:
            statuses[spec.run_id] = results.read_status(files) or statuses[spec.run_id]
            write_runs_table(root, plan, statuses)
        notify(statuses[spec.run_id]["status"], spec, statuses[spec.run_id])
    return [statuses[spec.run_id] for spec in plan.runs]


def _known_status(root: Path, spec: RunSpec) -> dict[str, Any]:
    status = results.read_status(RunFiles(root / spec.dir_name))
    if status is None or status.get("run_id") != spec.run_id:
        return {"status": "pending"}
    return status


def write_runs_table(root: Path, plan: Plan, statuses: dict[str, dict[str, Any]]) -> None:
    rows = []
    for spec in plan.runs:
        status = statuses.get(spec.run_id, {})
        row = {"run_id": spec.run_id, "run_dir": spec.dir_name}
        row |= {key: _cell(value) for key, value in spec.swept.items()}
        row |= {"seed": spec.config.train.seed, "status": status.get("status", "pending")}
        row |= {key: status.get(key) for key in results.summary_columns(status)}
        rows.append(row)
    summary = results.summary_columns(*statuses.values())
    columns = ["run_id", "run_dir", *plan.swept_keys, "seed", "status", *summary]
    results.write_csv(root / results.RUNS_FILE, pd.DataFrame(rows, columns=columns))


def _cell(value: Any) -> Any:
    """Swept values that are lists or mappings are stored as compact JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value
