"""The results directory: written and read here, nowhere else.

```
results/<experiment>/experiment.yaml   the file as given, plus overrides
results/<experiment>/runs.csv          one row per run: id, swept values, status, final metrics
results/<experiment>/<run>/config.yaml fully resolved config of the run
                          status.json   state, error, times, versions
                          metrics.csv   one row per evaluation (epoch)
                          params.csv    tidy pooling-parameter trace
                          checkpoint.pt last state (model, optimiser, scheduler, RNG, step)
                          claim.<n>.json which process runs it now (see ``claims``)
```
Every file is replaced atomically, so a reader or a resumed run never sees half a file.  Each
status.json records the format it was written in (``FORMAT_VERSION``); a directory written in
another format is refused with a one-line error rather than misread.
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pooling_lab import __version__, atomic
from pooling_lab.errors import UserError

EXPERIMENT_FILE = "experiment.yaml"
RUNS_FILE = "runs.csv"
FORMAT_VERSION = 1
STATES = ("pending", "running", "done", "failed", "diverged", "interrupted")
METRIC_COLUMNS = [
    "epoch", "step", "train_loss", "train_accuracy", "val_accuracy", "test_accuracy",
    "lr", "lr_pool", "p", "time_s",
]
PARAM_COLUMNS = ["step", "epoch", "module", "param", "stat", "value", "grad"]
FINAL_PARAM_COLUMNS = ["module", "param", "index", "value"]
PROBE_FIRST_COLUMN = "p"
SUMMARY_FIRST = ["p_final", "p_opt", "test_accuracy", "val_accuracy"]
SUMMARY_LAST = ["epoch", "step", "wall_time_s"]


def summary_columns(*statuses: dict[str, Any]) -> list[str]:
    """The final numbers of runs, as runs-table columns: p, then test and val metrics (those
    at p_opt included), then progress; in a fixed order whatever the metrics were."""
    metrics = sorted({key for status in statuses for key in status if key.startswith(("test_", "val_"))})
    metrics = [key for key in metrics if key not in SUMMARY_FIRST]
    return [*SUMMARY_FIRST, *sorted(metrics, key=lambda k: (not k.startswith("test_"), k)), *SUMMARY_LAST]


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def params(self) -> Path:
        return self.root / "params.csv"

    @property
    def probe(self) -> Path:
        return self.root / "probe.csv"

    @property
    def final_params(self) -> Path:
        return self.root / "final_params.csv"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def traceback(self) -> Path:
        return self.root / "traceback.txt"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pooling_lab": __version__,
        "git_commit": _git_commit(),
        "format": str(FORMAT_VERSION),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# --- writing -----------------------------------------------------------------------------------


def write_yaml(path: Path, data: Any) -> None:
    atomic.write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_json(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    atomic.write_text(path, buffer.getvalue())


def update_status(files: RunFiles, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into status.json (created on first call) and return the result."""
    status = read_status(files) or {"versions": versions()}
    status.update(fields)
    status["updated"] = now()
    write_json(files.status, status)
    return status


def remove_partial_writes(files: RunFiles) -> None:
    """Delete what writes cut short left behind: the temporary files (``atomic``: ``.NAME.*.tmp``)
    of a process killed between writing and renaming.  Only the run's owner may call this."""
    for leftover in files.root.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def read_status(files: RunFiles) -> dict[str, Any] | None:
    try:
        return json.loads(files.status.read_text())
    except FileNotFoundError:
        return None


def check_format(root: Path) -> None:
    """Refuse an experiment directory whose runs were written in another results format."""
    for path in sorted(Path(root).glob("*/status.json")):
        try:
            found = (json.loads(path.read_text()).get("versions") or {}).get("format")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise UserError("not a readable status file", source=str(path)) from None
        if found != str(FORMAT_VERSION):
            raise UserError(
                f"written in results format {found or 'unknown'}, but this pooling-lab reads format "
                f"{FORMAT_VERSION}: choose another --out or move {Path(root)} away",
                source=str(path),
            )


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=columns)


# --- reading a whole experiment ------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """An experiment's results as tidy pandas frames (each carries ``run_id``)."""

    path: Path
    experiment: dict[str, Any]
    swept: list[str]
    runs: pd.DataFrame
    metrics: pd.DataFrame
    params: pd.DataFrame
    probe: pd.DataFrame
    final_params: pd.DataFrame
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Each run's resolved config.yaml flattened to dotted columns (``model.pool.learnable``)."""


def swept_keys(experiment: dict[str, Any]) -> list[str]:
    sweep = experiment.get("sweep") or {}
    return list(sweep.get("grid") or {}) + list(sweep.get("zip") or {})


def read_runs(root: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """An experiment directory's experiment.yaml and runs.csv, after ``check_format``."""
    runs_file = root / RUNS_FILE
    if not runs_file.exists():
        raise UserError(f"not a results directory: {runs_file} is missing", source=str(root))
    check_format(root)
    experiment = yaml.safe_load((root / EXPERIMENT_FILE).read_text()) or {}
    return experiment, pd.read_csv(runs_file, dtype={"run_id": str})


def load(path: Path | str) -> Results:
    """Read ``results/<experiment>`` into frames: ``runs``, ``metrics``, ``params``."""
    root = Path(path)
    experiment, runs = read_runs(root)
    metrics, params, probes, finals, statuses, configs = [], [], [], [], [], []
    for run_id, run_dir in zip(runs["run_id"], runs["run_dir"], strict=True):
        files = RunFiles(root / run_dir)
        statuses.append(read_status(files) or {"status": "pending"})
        configs.append({"run_id": run_id, **_flat_config(files)})
        metrics.append(read_csv(files.metrics, METRIC_COLUMNS).assign(run_id=run_id))
        params.append(read_csv(files.params, PARAM_COLUMNS).assign(run_id=run_id))
        probes.append(read_csv(files.probe, [PROBE_FIRST_COLUMN]).assign(run_id=run_id))
        finals.append(read_csv(files.final_params, FINAL_PARAM_COLUMNS).assign(run_id=run_id))
    runs = _with_statuses(runs, statuses)
    return Results(
        path=root,
        experiment=experiment,
        swept=swept_keys(experiment),
        runs=runs,
        metrics=_concat(metrics, ["run_id", *METRIC_COLUMNS]),
        params=_concat(params, ["run_id", *PARAM_COLUMNS]),
        probe=_concat(probes, ["run_id", PROBE_FIRST_COLUMN]),
        final_params=_concat(finals, ["run_id", *FINAL_PARAM_COLUMNS]),
        configs=pd.DataFrame(configs),
    )


def _flat_config(files: RunFiles) -> dict[str, Any]:
    try:
        config = yaml.safe_load(files.config.read_text()) or {}
    except FileNotFoundError:
        return {}
    return pd.json_normalize(config, sep=".").iloc[0].to_dict()


def _with_statuses(runs: pd.DataFrame, statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table with each run's state and final numbers taken from its status.json,
    which is written last and so is newer than runs.csv when a run was cut short."""
    runs = runs.copy()
    runs["status"] = [status.get("status", "pending") for status in statuses]
    for column in summary_columns(*statuses):
        runs[column] = pd.to_numeric(pd.Series([s.get(column) for s in statuses], index=runs.index), errors="coerce")
    return runs


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    combined = pd.concat(frames, ignore_index=True)
    return combined[["run_id", *[c for c in combined.columns if c != "run_id"]]]
