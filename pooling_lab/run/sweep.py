"""Run every run of a plan into ``<out>/<experiment>/``.

Finished runs are skipped and interrupted ones resumed from their checkpoints.  Each run is
claimed first (``claims``), so several processes (``--jobs``, or ``pooling-lab run`` started twice,
on one machine or on several sharing the directory) divide the runs and never run one twice.  A
failed or diverged run is reported at once and the sweep goes on, unless ``fail_fast``.

Under torchrun every rank walks the plan together: rank 0 claims and decides what each run
needs, the other ranks follow its decision (``World.share``) and train the same run with it.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pooling_lab import results
from pooling_lab.data import DataSplits, load_data
from pooling_lab.data.m_per_class import MPerClassOrder
from pooling_lab.errors import UserError
from pooling_lab.experiment import Plan, RunSpec
from pooling_lab.experiment.labels import format_value
from pooling_lab.models import build_model
from pooling_lab.results import RunFiles
from pooling_lab.run import claims, signals
from pooling_lab.train.context import resolve_device
from pooling_lab.train.distributed import SINGLE, World, check_batch_divides, check_sync_batchnorm
from pooling_lab.train.loop import ProgressSink, SilentProgress, Trainer

# (kind, run directory name, status); kinds: skipped, busy, started, done, failed, diverged, interrupted
Event = Callable[[str, str, dict[str, Any]], None]
FINISHED = ("done", "diverged")  # not run again: a diverged run is the outcome of its config
UNSUCCESSFUL = ("failed", "diverged")
DECISIONS = ("train", "skipped", "busy")  # what rank 0 tells the others to do with a run


@dataclass(frozen=True)
class Prepared:
    """A plan checked against its inputs and its results directory, nothing written yet."""

    plan: Plan
    root: Path
    data: dict[str, DataSplits]


def experiment_dir(plan: Plan, out_root: Path) -> Path:
    return Path(out_root) / plan.experiment.name


def prepare(plan: Plan, out_root: Path, world: World = SINGLE) -> Prepared:
    """Everything bad input can break, before anything is written: every run's device (and,
    under torchrun, whether its batches divide among the processes), every distinct data set
    (loaded, or downloaded when allowed), every model (built on the meta device, which allocates
    nothing, so constructor checks such as p > eps or groups dividing the channels fail here),
    the format of results already there, whether the results folder can be written, and that the
    plan keeps every run recorded there in view."""
    for spec in plan.runs:
        train = spec.config.train
        device = resolve_device(train.device)
        check_batch_divides(train.batch_size, train.batch_sampler and train.batch_sampler.m_per_class, world,
                            str(plan.source))
        check_sync_batchnorm(train.sync_batchnorm, device, world, str(plan.source))
    data: dict[str, DataSplits] = {}
    for spec in plan.runs:
        key = _data_key(spec)
        if key not in data:
            data[key] = _load_data(plan, spec)
        check_model(plan, spec, data[key])
        check_batches(plan, spec, data[key])
    root = experiment_dir(plan, out_root)
    results.check_format(root)
    results.check_writable(root)
    check_keeps_recorded_runs(plan, root)
    return Prepared(plan, root, data)


def check_keeps_recorded_runs(plan: Plan, root: Path) -> None:
    """Refuse a plan that leaves out runs recorded in the folder whose run folders are still
    there: its runs table (which ``status``, ``plot`` and ``stats`` read) would hide them.  A plan
    that includes them, such as the same sweep with more values or seeds, is fine."""
    recorded = results.read_csv(root / results.RUNS_FILE, ["run_id", "run_dir"], dtype={"run_id": str})
    planned = {spec.run_id for spec in plan.runs}
    left_out = [run_dir for run_id, run_dir in zip(recorded["run_id"], recorded["run_dir"], strict=True)
                if run_id not in planned and (root / run_dir).is_dir()]
    if left_out:
        shown = ", ".join(left_out[:3]) + (", ..." if len(left_out) > 3 else "")
        runs, them = ("run", "it") if len(left_out) == 1 else ("runs", "them")
        raise UserError(
            f"holds {len(left_out)} {runs} that this plan leaves out ({shown}); to keep every run in view, widen "
            f"the sweep to include {them}, or write this plan elsewhere (--out OTHER, or --set name=OTHER)",
            source=str(root),
        )


def _load_data(plan: Plan, spec: RunSpec) -> DataSplits:
    """The run's data set; a data error is reported against the experiment file."""
    try:
        return load_data(spec.config.data)
    except UserError as error:
        if error.source is not None:
            raise
        raise type(error)(error.detail, source=str(plan.source), field=error.field) from None


def check_model(plan: Plan, spec: RunSpec, data: DataSplits) -> None:
    try:
        with torch.device("meta"):
            build_model(spec.config, data.train.images.shape[1], data.num_classes)
    except (ValueError, TypeError, UserError) as error:
        where = ", ".join(f"{k}={format_value(v)}" for k, v in spec.swept.items())
        raise UserError(f"the model cannot be built: {error}" + (f" (in the sweep run {where})" if where else ""),
                        source=str(plan.source), field="model") from None


def check_batches(plan: Plan, spec: RunSpec, data: DataSplits) -> None:
    """M-per-class batches that the training split cannot fill (too few classes or images)."""
    sampler = spec.config.train.batch_sampler
    if sampler is not None:
        try:
            MPerClassOrder(data.train.labels, spec.config.train.batch_size, sampler.m_per_class)
        except UserError as error:
            raise UserError(error.detail, source=str(plan.source), field=error.field) from None


def _data_key(spec: RunSpec) -> str:
    return json.dumps(spec.config.data.model_dump(mode="json"), sort_keys=True)


def run_plan(
    prepared: Prepared,
    progress: ProgressSink | None = None,
    on_event: Event | None = None,
    fail_fast: bool = False,
    session: str | None = None,
    world: World = SINGLE,
) -> list[dict[str, Any]]:
    """Train the runs nobody has finished or holds, in plan order, and again while runs whose
    process died are left; return every run's final status (see ``final_statuses``).

    ``session`` names this sweep (a ``--jobs`` parent gives its workers its own) and is kept
    in each run's status.json: a run that failed in this session is not tried a second time in
    it; a new ``pooling-lab run`` retries it.
    """
    plan, root = prepared.plan, prepared.root
    progress = progress if progress and world.is_main else SilentProgress()
    notify = on_event if on_event and world.is_main else (lambda kind, run, status: None)
    session = session or uuid.uuid4().hex
    if world.is_main:
        results.write_yaml(root / results.EXPERIMENT_FILE, plan.raw)
        write_runs_table(root, plan)
    settled: set[str] = set()
    busy: set[str] = set()
    while True:
        attempted = False
        for spec in plan.runs:
            if spec.run_id in settled:
                continue
            signum = world.any_signal(signals.requested())
            if signum is not None:
                raise signals.Interrupted(signum)
            kind, status = _attempt(prepared, spec, progress, notify, session, world)
            if kind == "busy":
                if spec.run_id not in busy:
                    notify(kind, spec.dir_name, status)
                busy.add(spec.run_id)
                continue
            settled.add(spec.run_id)
            attempted |= kind != "skipped"
            notify(kind, spec.dir_name, status)
            if fail_fast and kind in UNSUCCESSFUL:
                world.wait_for_all()  # rank 0 has written every status
                return final_statuses(prepared)
        if not attempted:
            world.wait_for_all()
            return final_statuses(prepared)


def _attempt(
    prepared: Prepared, spec: RunSpec, progress: ProgressSink, notify: Event, session: str, world: World
) -> tuple[str, dict[str, Any]]:
    """Run one run if it is still to do and this process can claim it: (event kind, status)."""
    files = RunFiles(prepared.root / spec.dir_name)
    decision, status, claim = _claim_if_due(prepared, spec, session) if world.is_main else ("train", {}, None)
    decision = DECISIONS[world.share(DECISIONS.index(decision))]
    if decision != "train":
        return decision, status
    with claim or contextlib.nullcontext():
        if world.is_main:
            results.remove_partial_writes(files)
            results.write_yaml(files.config, spec.config.model_dump(mode="json", exclude={"sweep"}))
        notify("started", spec.dir_name, status)
        try:
            status = Trainer(spec, files, prepared.data[_data_key(spec)], progress, world).run(session=session)
        except signals.Interrupted:
            notify("interrupted", spec.dir_name, known_status(prepared.root, spec))
            raise
        finally:
            if world.is_main:
                write_runs_table(prepared.root, prepared.plan)
    return status["status"], status


def _claim_if_due(prepared: Prepared, spec: RunSpec, session: str) -> tuple[str, dict[str, Any], claims.Claim | None]:
    """(decision, status, claim): train a run this process has claimed, skip a finished one, or
    leave one to the live process that holds it."""
    root = prepared.root / spec.dir_name
    status = known_status(prepared.root, spec)
    if _settled(status, session):
        return "skipped", status, None
    claim = claims.try_claim(root)
    if claim is None:
        return "busy", status | {"held_by": _owner(claims.holder(root))}, None
    status = known_status(prepared.root, spec)  # it may have finished while we looked
    if _settled(status, session):
        claim.release()
        return "skipped", status, None
    return "train", status, claim


def _settled(status: dict[str, Any], session: str) -> bool:
    """Finished, or failed in this session already (by this process or a sibling)."""
    return status.get("status") in FINISHED or (status.get("status") == "failed" and status.get("session") == session)


def _owner(owner: dict[str, Any] | None) -> str:
    return f"{owner['host']}:{owner['pid']}" if owner else "another process"


def known_status(root: Path, spec: RunSpec) -> dict[str, Any]:
    status = results.read_status(RunFiles(root / spec.dir_name))
    if status is None or status.get("run_id") != spec.run_id:
        return {"status": "pending"}
    return status


def final_statuses(prepared: Prepared) -> list[dict[str, Any]]:
    """Every run's status as on disk now; a run another live process holds carries ``held_by``."""
    statuses = []
    for spec in prepared.plan.runs:
        status = known_status(prepared.root, spec)
        owner = claims.holder(prepared.root / spec.dir_name)
        statuses.append(status | {"held_by": _owner(owner)} if owner and status["status"] not in FINISHED else status)
    return statuses


def unfinished(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that did not end done and that no other process is still running."""
    return [status for status in statuses if status.get("status") != "done" and "held_by" not in status]


def write_runs_table(root: Path, plan: Plan) -> None:
    """runs.csv from the runs' status.json files (the truth, whichever process wrote them); a
    run's ``flags`` (what looks wrong in a finished run's numbers) are joined by "; "."""
    rows, statuses = [], []
    for spec in plan.runs:
        status = known_status(root, spec)
        statuses.append(status)
        row = {"run_id": spec.run_id, "run_dir": spec.dir_name}
        row |= {key: _cell(value) for key, value in spec.swept.items()}
        row |= {"seed": spec.config.train.seed, results.PROTOCOL: spec.config.data.protocol}
        row |= {"status": status.get("status", "pending")}
        row |= {"flags": "; ".join(status.get("flags") or [])}
        row |= {key: status.get(key) for key in results.summary_columns(status)}
        rows.append(row)
    summary = results.summary_columns(*statuses)
    columns = ["run_id", "run_dir", *plan.swept_keys, "seed", results.PROTOCOL, "status", "flags", *summary]
    results.write_csv(root / results.RUNS_FILE, pd.DataFrame(rows, columns=columns))


def _cell(value: Any) -> Any:
    """Swept values that are lists or mappings are stored as compact JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value
