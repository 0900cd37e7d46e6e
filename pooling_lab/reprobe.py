"""Probe an existing run again (``pooling-lab probe RUN_DIR --p 1:8:0.25``), from its checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from pooling_lab import results
from pooling_lab.config import ExperimentConfig, RunSpec
from pooling_lab.data import load_data
from pooling_lab.errors import UserError
from pooling_lab.results import RunFiles
from pooling_lab.train.loop import SilentProgress, Trainer


def parse_p_values(text: str) -> list[float]:
    """``1:8:0.25`` (start:stop:step, stop included) or ``1,2,3.5``."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"expected start:stop:step or a comma list of positive numbers, got {text!r}",
                        field="--p") from None
    if not values or min(values) <= 0:
        raise UserError(f"p values must be positive, got {text!r}", field="--p")
    return values


def reprobe(run_dir: Path, p_values: list[float]) -> dict[str, Any]:
    """Rerun the final evaluation of a trained run with a new p grid; returns its new status."""
    files = RunFiles(Path(run_dir))
    status = results.read_status(files)
    if status is None or not files.config.exists():
        raise UserError("not a run directory (no status.json / config.yaml)", source=str(run_dir))
    if not files.checkpoint.exists():
        raise UserError("the run has no checkpoint.pt to probe", source=str(run_dir))
    try:
        config = ExperimentConfig.model_validate(yaml.safe_load(files.config.read_text()))
    except ValidationError as error:
        raise UserError(f"config.yaml no longer validates: {error.errors()[0]['msg']}", source=str(files.config)) from None
    if config.data.val_size == 0:
        raise UserError("the run has no validation split to choose p_opt on", source=str(files.config))
    spec = RunSpec(config, {}, status["run_id"], files.root.name)
    trainer = Trainer(spec, files, load_data(config.data), SilentProgress())
    if not trainer.resume() or trainer.epoch < config.train.epochs:
        raise UserError("the run has not finished training; run the experiment to complete it", source=str(run_dir))
    final = trainer.evaluate_final(p_values)
    refresh_runs_table(files.root.parent)
    return final


def refresh_runs_table(experiment_dir: Path) -> None:
    """Bring runs.csv up to date with the runs' status.json files."""
    if (experiment_dir / results.RUNS_FILE).exists():
        loaded = results.load(experiment_dir)
        results.write_csv(experiment_dir / results.RUNS_FILE, pd.DataFrame(loaded.runs))
