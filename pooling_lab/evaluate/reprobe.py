"""Probe an existing run again (``pooling-lab probe RUN_DIR --p 1:8:0.25``), from its checkpoint,
without touching what the run recorded unless asked to (``--replace``)."""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pooling_lab import results
from pooling_lab.data import DataSplits, load_data
from pooling_lab.errors import UserError
from pooling_lab.evaluate.final import EvalBatches, evaluate_trained
from pooling_lab.experiment import ExperimentConfig, Plan, load_plan
from pooling_lab.models import Classifier, build_model
from pooling_lab.pooling.exponent import global_p
from pooling_lab.results import RunFiles
from pooling_lab.run.sweep import write_runs_table
from pooling_lab.train.checkpoint import load_checkpoint
from pooling_lab.train.context import compute_for


def parse_p_values(text: str) -> list[float]:
    """``1:8:0.25`` (start:stop:step, stop included) or ``1,2,3.5``; the probe adds inf and the
    learned p to either."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not (0 < step < math.inf and start <= stop < math.inf):
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"expected start:stop:step or a comma list of positive numbers, got {text!r}",
                        field="--p") from None
    if not values or not all(value > 0 for value in values):
        raise UserError(f"p values must be positive, got {text!r}", field="--p")
    return values


PROBED = ("p_opt", *results.PROBE_SUMMARY)  # what --replace rewrites, with the test metrics at p_opt
GRID_NAME_LIMIT = 100  # characters of a probe file's grid name; a longer grid is named by a hash


@dataclass(frozen=True)
class Reprobed:
    """A re-probe's outcome: the probe table written, the learned p, the metrics of
    ``evaluate_trained`` (p_opt, the test metrics at the learned p and at p_opt) and a
    ``warning`` when the learned p lies outside the grid."""

    path: Path
    p_final: float
    final: dict[str, Any]
    warning: str | None


def reprobe(run_dir: Path, p_values: list[float] | None = None, replace: bool = False) -> Reprobed:
    """Rerun a trained run's probe over ``p_values`` (default: the run's own ``eval.probe_p``).
    The table goes to probe_<grid>.csv beside the recorded probe.csv, which stays as it is; with
    ``replace`` it replaces probe.csv, and p_opt, the rest of ``PROBED`` and the test metrics at
    p_opt in status.json and runs.csv."""
    files = RunFiles(Path(run_dir))
    config, data, model = trained_model(files)
    if config.data.val_size == 0:
        raise UserError("the run has no validation split to choose p_opt on", source=str(files.config))
    if p_values is None:
        p_values = config.eval.probe_p
        if not p_values:
            raise UserError("the run was not probed; give the test-time p values with --p",
                            source=str(files.config), field="eval.probe_p")
    compute = compute_for(config.train)
    batches = EvalBatches.of(data, config.train.eval_batch_size, compute.device, compute.device.type == "cuda")
    evaluation = evaluate_trained(model.to(compute.device), batches, config.eval, p_values, compute.autocast())
    final, table = evaluation.metrics, evaluation.probe
    if replace:
        path, plan = files.probe, experiment_plan(files.root.parent)  # a bad experiment.yaml stops it here
        results.write_csv(path, table)
        results.update_status(files, **{k: v for k, v in final.items() if k in PROBED or k.endswith("_at_p_opt")})
        if plan is not None:
            write_runs_table(files.root.parent, plan)
    else:
        path = files.root / f"probe_{grid_name(p_values)}.csv"
        results.write_csv(path, table)
    p_final = global_p(model.pool)
    return Reprobed(path, p_final, final, outside_grid_warning(p_final, p_values))


def trained_model(files: RunFiles) -> tuple[ExperimentConfig, DataSplits, Classifier]:
    """The run's config, its data and its model at the end of training (from checkpoint.pt)."""
    status = results.read_status(files)
    if status is None or not files.config.exists():
        raise UserError("not a run directory (no status.json / config.yaml)", source=str(files.root))
    if not files.checkpoint.exists():
        raise UserError("the run has no checkpoint.pt to evaluate", source=str(files.root))
    try:
        config = ExperimentConfig.model_validate(yaml.safe_load(files.config.read_text()))
    except ValidationError as error:
        raise UserError(f"config.yaml no longer validates: {error.errors()[0]['msg']}", source=str(files.config)) from None
    state = load_checkpoint(files, status["run_id"])
    if state is None or state["epoch"] < config.train.epochs:
        raise UserError("the run has not finished training; run the experiment to complete it", source=str(files.root))
    data = load_data(config.data)
    model = build_model(config, data.train.images.shape[1], data.num_classes)
    model.load_state_dict(state["model"])
    return config, data, model


def outside_grid_warning(p_final: float, p_values: list[float]) -> str | None:
    low, high = min(p_values), max(p_values)
    if not math.isfinite(p_final) or low <= p_final <= high:
        return None
    return (f"the learned p = {p_final:.4g} lies outside the probed grid [{low:g}, {high:g}]: "
            "the probe measured it and inf, but nothing between it and the grid")


def grid_name(p_values: list[float]) -> str:
    """A probe grid as a file-name part, exact and short: ``1-8_step0.25`` for three or more
    evenly spaced values, else the values (``1,2,3.5``); a hash when that is too long."""
    steps = {round(b - a, 9) for a, b in itertools.pairwise(p_values)}
    if len(p_values) >= 3 and len(steps) == 1 and steps.pop() > 0:
        name = f"{_exact(p_values[0])}-{_exact(p_values[-1])}_step{_exact(round(p_values[1] - p_values[0], 9))}"
    else:
        name = ",".join(map(_exact, p_values))
    if len(name) > GRID_NAME_LIMIT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{_exact(min(p_values))}-{_exact(max(p_values))}_{len(p_values)}values_{digest}"
    return name


def _exact(value: float) -> str:
    """The shortest text that reads back as ``value`` (``1``, ``0.25``, ``2.438003301620483``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def experiment_plan(experiment_dir: Path) -> Plan | None:
    """The plan of the experiment a run belongs to, whose runs.csv the sweep writes (None for a
    run outside an experiment directory)."""
    experiment_file = experiment_dir / results.EXPERIMENT_FILE
    if (experiment_dir / results.RUNS_FILE).exists() and experiment_file.exists():
        return load_plan(experiment_file)
    return None
