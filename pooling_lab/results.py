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
Every file is replaced atomically, so a reader or a resumed run never sees half a file; one
that a crash or a full disk damaged all the same (the file system kept the name but not all the
data) is refused in one line (``DamagedFile``), or, by the readers of a whole experiment, skipped
and named.  Each status.json records the format it was written in (``FORMAT_VERSION``); a
directory written in another format is refused with a one-line error rather than misread.
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

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
GRAD_SPLIT_COLUMNS = ["step", "epoch", "module", "param", "part", "grad"]  # record.gradient_split
PROBE_FIRST_COLUMN = "p"
SUMMARY_FIRST = ["p_final", "p_opt", "test_accuracy", "val_accuracy"]
# what a probe says besides p_opt (``pooling_lab.evaluate.probe``); runs probed before they were
# recorded lack them
PROBE_SUMMARY = ["p_plateau", "p_opt_at_edge", "regret", "log_drift", "log_drift_plateau"]
SUMMARY_LAST = ["epoch", "step", "wall_time_s"]
# where a run's time went (training with its per-epoch accuracy; the final evaluation and probe);
# runs recorded before lack them
TIMES = ["train_time_s", "eval_time_s"]
PROTOCOL = "protocol"  # closed | open: ``DataConfig.protocol``, in status.json and runs.csv
UNRECORDED_PROTOCOL = "closed"  # the only protocol there was before runs recorded theirs
T = TypeVar("T")


def summary_columns(*statuses: dict[str, Any]) -> list[str]:
    """The final numbers of runs, as runs-table columns: p and p_opt, what the probe says
    besides (when some run has it), then test and val metrics (those at p_opt included), then
    progress; in a fixed order whatever the metrics were."""
    keys = {key for status in statuses for key in status}
    metrics = sorted(key for key in keys if key.startswith(("test_", "val_")) and key not in SUMMARY_FIRST)
    probe = [key for key in PROBE_SUMMARY if key in keys]
    return [*SUMMARY_FIRST[:2], *probe, *SUMMARY_FIRST[2:], *sorted(metrics, key=lambda k: (not k.startswith("test_"), k)),
            *SUMMARY_LAST[:2], *(key for key in TIMES if key in keys), *SUMMARY_LAST[2:]]


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
    def grad_split(self) -> Path:
        return self.root / "grad_split.csv"

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
    of a process killed between writing and renaming.  Only the run's owner may call this.  The
    temporaries of claim files are spared: they may belong to a process racing for the claim
    this very moment, whose write would fail if its temporary vanished before the link."""
    for leftover in files.root.glob(".*.tmp"):
        if not leftover.name.startswith(".claim."):
            leftover.unlink(missing_ok=True)


def check_writable(root: Path) -> None:
    """Make the experiment folder and create a file in it (one with no name, gone when closed),
    so that a folder the results cannot go to (a file in the way, a read-only mount, no
    permission) is one line before anything is written."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        blocking = next((path for path in (root, *root.parents) if path.exists() and not path.is_dir()), None)
        if blocking is not None:
            raise UserError(f"is a file, not a folder; the results go to {root}", source=str(blocking)) from None
        raise UserError(f"cannot write the results there: {error.strerror or error}", source=str(root)) from None


# --- reading ------------------------------------------------------------------------------------


class DamagedFile(UserError):
    """A results file that is there but cannot be read whole: a crash or a full disk cut it short
    (a file system may keep a renamed file's name but not all of its data)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"damaged ({reason})", source=str(path))


def _read_text(path: Path) -> str:
    """The text of a results file (``FileNotFoundError`` when it is not there); ``DamagedFile``
    when it is empty or not text."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DamagedFile(path, f"not text: {error.reason}") from None
    if not text:
        raise DamagedFile(path, "empty")
    return text


def _read_lines(path: Path) -> str:
    """The text of a results file of lines (CSV, YAML), which every writer ends with a newline:
    ``DamagedFile`` also when its last line is cut short (a CSV or YAML file cut at any point
    may still parse)."""
    text = _read_text(path)
    if not text.endswith("\n"):
        raise DamagedFile(path, "cut short: its last line is incomplete")
    return text


def read_status(files: RunFiles) -> dict[str, Any] | None:
    try:
        text = _read_text(files.status)
    except FileNotFoundError:
        return None
    try:
        status = json.loads(text)
    except json.JSONDecodeError as error:
        raise DamagedFile(files.status, f"not valid JSON: {error}") from None
    if not isinstance(status, dict):
        raise DamagedFile(files.status, "not a JSON object")
    return status


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(_read_lines(path))
    except yaml.YAMLError as error:
        raise DamagedFile(path, f"not YAML: {' '.join(str(error).split())}") from None


def check_format(root: Path, skip_damaged: bool = False) -> None:
    """Refuse an experiment directory whose runs were written in another results format, and one
    with a damaged status.json unless ``skip_damaged`` (a reader reports it with its run)."""
    for path in sorted(Path(root).glob("*/status.json")):
        try:
            status = read_status(RunFiles(path.parent)) or {}
        except DamagedFile:
            if skip_damaged:
                continue
            raise
        versions = status.get("versions")
        found = versions.get("format") if isinstance(versions, dict) else None
        if found != str(FORMAT_VERSION):
            raise UserError(
                f"written in results format {found or 'unknown'}, but this pooling-lab reads format "
                f"{FORMAT_VERSION}: choose another --out or move {Path(root)} away",
                source=str(path),
            )


def read_csv(path: Path, columns: list[str], dtype: dict[str, type] | None = None) -> pd.DataFrame:
    """A results table; an empty one with ``columns`` when the file is not there."""
    try:
        return pd.read_csv(io.StringIO(_read_lines(path)), dtype=dtype)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=columns)
    except pd.errors.ParserError as error:
        raise DamagedFile(path, f"not CSV: {' '.join(str(error).split())}") from None


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
    damaged: list[str] = field(default_factory=list)
    """One line per run file that is damaged (``DamagedFile``) and so was skipped: the run's
    state is then ``damaged`` (status.json) or its frame lacks the run."""
    grad_split: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["run_id", *GRAD_SPLIT_COLUMNS]))
    """``grad_split.csv`` of the runs that recorded it (``record.gradient_split``)."""


def swept_keys(experiment: dict[str, Any]) -> list[str]:
    sweep = experiment.get("sweep") or {}
    return list(sweep.get("grid") or {}) + list(sweep.get("zip") or {})


def read_runs(root: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """An experiment directory's experiment.yaml and runs.csv, after ``check_format``."""
    runs_file = root / RUNS_FILE
    if not runs_file.exists():
        raise UserError(f"not a results directory: {runs_file} is missing", source=str(root))
    check_format(root, skip_damaged=True)
    experiment = _read_yaml(root / EXPERIMENT_FILE) or {}
    return experiment, read_csv(runs_file, [], dtype={"run_id": str})


def unless_damaged(read: Callable[[], T], instead: T, damaged: list[str]) -> T:
    """What ``read`` returns, or ``instead`` when the file it reads is damaged (which is then
    noted in ``damaged``, one line naming the file and the reason)."""
    try:
        return read()
    except DamagedFile as error:
        damaged.append(f"{error.one_line()}; skipped")
        return instead


def load(path: Path | str) -> Results:
    """Read ``results/<experiment>`` into frames: ``runs``, ``metrics``, ``params``; a damaged
    run file is skipped and noted in ``damaged``."""
    root = Path(path)
    experiment, runs = read_runs(root)
    metrics, params, probes, finals, splits, statuses, configs, damaged = [], [], [], [], [], [], [], []
    tables = ((metrics, "metrics", METRIC_COLUMNS), (params, "params", PARAM_COLUMNS),
              (probes, "probe", [PROBE_FIRST_COLUMN]), (finals, "final_params", FINAL_PARAM_COLUMNS),
              (splits, "grad_split", GRAD_SPLIT_COLUMNS))
    for run_id, run_dir in zip(runs["run_id"], runs["run_dir"], strict=True):
        files = RunFiles(root / run_dir)
        statuses.append(unless_damaged(partial(read_status, files), {"status": "damaged"}, damaged) or {"status": "pending"})
        configs.append({"run_id": run_id, **unless_damaged(partial(_flat_config, files), {}, damaged)})
        for frames, name, columns in tables:
            read = partial(read_csv, getattr(files, name), columns)
            frames.append(unless_damaged(read, pd.DataFrame(columns=columns), damaged).assign(run_id=run_id))
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
        grad_split=_concat(splits, ["run_id", *GRAD_SPLIT_COLUMNS]),
        configs=pd.DataFrame(configs),
        damaged=damaged,
    )


def _flat_config(files: RunFiles) -> dict[str, Any]:
    try:
        config = _read_yaml(files.config) or {}
    except FileNotFoundError:
        return {}
    return pd.json_normalize(config, sep=".").iloc[0].to_dict()


def _with_statuses(runs: pd.DataFrame, statuses: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table with each run's state and final numbers taken from its status.json,
    which is written last and so is newer than runs.csv when a run was cut short."""
    runs = runs.copy()
    runs["status"] = [status.get("status", "pending") for status in statuses]
    recorded = runs[PROTOCOL].fillna(UNRECORDED_PROTOCOL) if PROTOCOL in runs else [UNRECORDED_PROTOCOL] * len(runs)
    runs[PROTOCOL] = [status.get(PROTOCOL) or protocol for status, protocol in zip(statuses, recorded, strict=True)]
    for column in summary_columns(*statuses):
        runs[column] = pd.to_numeric(pd.Series([s.get(column) for s in statuses], index=runs.index), errors="coerce")
    return runs


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    combined = pd.concat(frames, ignore_index=True)
    return combined[["run_id", *[c for c in combined.columns if c != "run_id"]]]
