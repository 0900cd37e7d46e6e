"""An experiment's results as TensorBoard event files (``pooling-lab export tensorboard``).

The CSVs stay the source of truth; the export is a view of them that can be redrawn at any time.
One event-file folder per run, named by the run folder, holds:

- ``metrics/<column>``: every column of metrics.csv (per epoch), at its training step;
- ``<module>.<param>``: a scalar pooling parameter of params.csv (``pool.p``), and
  ``<module>.<param>/<stat>`` the recorded statistics of a vector one (``pool.p/mean``,
  ``pool.p/q05``, ...); their gradients as ``<module>.<param>/grad`` (``/grad/<stat>``);
- the test-time p probe (probe.csv): p is not an integer, and TensorBoard's x axis is, so the
  curve is a text table (``probe``) plus series indexed by the grid position, ``probe/p`` (the p at
  that position) beside ``probe/<metric>``;
- hparams: the swept values, seed and state of the run against its final numbers
  (``final/<column>``, the runs table's summary columns).

Missing values (NaN) are left out.  TensorBoard keeps scalars as float32.  The export is written
into a staging folder beside ``--out`` and swapped in whole, so a half export never remains; an
existing ``--out`` is replaced only when it is an earlier export (it holds ``MARKER``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from pooling_lab import __version__, atomic, results
from pooling_lab.analysis.compare import final_columns
from pooling_lab.errors import UserError
from pooling_lab.evaluate.probe import ON_GRID
from pooling_lab.experiment.labels import format_value

MARKER = "pooling_lab_export.json"  # names the results an export was written from
SCALAR_STAT = "value"  # params.csv: the stat of a scalar parameter
FINAL = "final/"
RUN_HPARAMS = ("seed", "status")  # beside the swept keys


def export(loaded: results.Results, out: Path) -> list[Path]:
    """Write one event-file folder per run of ``loaded`` into ``out`` (replacing an earlier export
    there whole); return the run folders written."""
    out = Path(out)
    _check_replaceable(out, loaded.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:12]}")
    try:
        folders = [_write_run(staging, loaded, run) for _, run in loaded.runs.iterrows()]
        marker = {"results": str(loaded.path.resolve()), "experiment": loaded.experiment.get("name"),
                  "runs": len(folders), "pooling_lab": __version__, "written": results.now()}
        atomic.write_text(staging / MARKER, json.dumps(marker, indent=2) + "\n")
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / folder.name for folder in folders]


def _check_replaceable(out: Path, source: Path) -> None:
    """``out`` may be new, empty or an earlier export, and must not hold the results."""
    if source.resolve().is_relative_to(out.resolve()):
        raise UserError(f"holds the results being exported ({source}); choose another --out", source=str(out))
    if out.exists() and not out.is_dir():
        raise UserError("is a file, not a folder; choose another --out", source=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(f"is not empty and is not an earlier export (no {MARKER}); choose another --out or "
                        "remove it", source=str(out))


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder at ``out``, the earlier export (if any) moved aside first
    and removed after, so ``out`` is always a whole export or none."""
    if not out.exists():
        staging.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
    out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old)


def _write_run(root: Path, loaded: results.Results, run: pd.Series) -> Path:
    folder = root / str(run["run_dir"])
    of_run = {name: frame[frame["run_id"] == run["run_id"]] for name, frame in
              (("metrics", loaded.metrics), ("params", loaded.params), ("probe", loaded.probe))}
    with contextlib.closing(SummaryWriter(log_dir=str(folder))) as writer:
        _add_series(writer, _metric_points(of_run["metrics"]))
        _add_series(writer, _param_points(of_run["params"]))
        _add_probe(writer, of_run["probe"])
        _add_hparams(writer, loaded, run)
    return folder


def _add_series(writer: SummaryWriter, points: Iterable[tuple[str, float, int]]) -> None:
    for tag, value, step in points:
        if not np.isnan(value):
            writer.add_scalar(tag, value, step)


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _metric_points(metrics: pd.DataFrame) -> Iterable[tuple[str, float, int]]:
    """(tag, value, step) of every metrics.csv column at its row's training step."""
    for column in metrics.columns.drop(["run_id", "step"]):
        for value, step in zip(_numeric(metrics, column), metrics["step"], strict=True):
            yield f"metrics/{column}", value, int(step)


def param_tag(module: str, param: str, stat: str, gradient: bool = False) -> str:
    """``pool.p`` for a scalar parameter, ``pool.p/mean`` for a statistic of a vector one;
    ``pool.p/grad``, ``pool.p/grad/mean`` for their gradients."""
    parts = [f"{module}.{param}", *(["grad"] if gradient else []), *([] if stat == SCALAR_STAT else [stat])]
    return "/".join(parts)


def _param_points(params: pd.DataFrame) -> Iterable[tuple[str, float, int]]:
    """(tag, value, step) of every traced value and gradient of params.csv."""
    for row in params.itertuples(index=False):
        yield param_tag(row.module, row.param, row.stat), float(row.value), int(row.step)
        yield param_tag(row.module, row.param, row.stat, gradient=True), float(row.grad), int(row.step)


def probe_metrics(probe: pd.DataFrame) -> list[str]:
    """The metric columns of a run's probe table (``map``, ``accuracy``, ...)."""
    return [column for column in probe.columns if column not in ("run_id", "p", ON_GRID)
            and probe[column].notna().any()]


def _add_probe(writer: SummaryWriter, probe: pd.DataFrame) -> None:
    """The probe curve as a text table and as series indexed by the position in p (``probe/p``
    says which p each position is)."""
    if probe.empty:
        return
    probe = probe.sort_values("p", kind="stable", ignore_index=True)
    metrics = probe_metrics(probe)
    for position, row in probe.iterrows():
        _add_series(writer, [("probe/p", float(row["p"]), int(position)),
                             *((f"probe/{metric}", float(row[metric]), int(position)) for metric in metrics)])
    writer.add_text("probe", _probe_table(probe, metrics))


def _probe_table(probe: pd.DataFrame, metrics: list[str]) -> str:
    lines = ["Validation split at each test-time p (position: the step of the probe/* series; "
             "* the learned p, measured beside the grid)", "",
             "| position | p | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for position, row in probe.iterrows():
        learned = " *" if row.get(ON_GRID) in (False,) else ""  # NaN: a probe before on_grid
        cells = [str(position), f"{row['p']:.6g}{learned}", *(f"{row[metric]:.4f}" for metric in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _hparam_value(value: Any) -> bool | int | float | str:
    """A value TensorBoard's hparams take: a number, a bool or text (other values as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, bool | int | float | str) else format_value(value)


def _add_hparams(writer: SummaryWriter, loaded: results.Results, run: pd.Series) -> None:
    """The run's swept values, seed and state against its final numbers; every run declares the
    same metrics (all of the experiment's), so the hparams table has every column."""
    keys = [key for key in (*loaded.swept, *RUN_HPARAMS) if key in run]
    finals = {FINAL + column: float(run[column]) for column in final_columns(loaded.runs.columns)}
    for summary in hparams({key: _hparam_value(run[key]) for key in keys}, finals):
        writer.file_writer.add_summary(summary)
    step = int(run["step"]) if "step" in run and pd.notna(run["step"]) else 0
    _add_series(writer, ((tag, value, step) for tag, value in finals.items()))
