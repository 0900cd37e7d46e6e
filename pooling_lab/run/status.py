"""Where an experiment stands (``pooling-lab status``): one record per run, from runs.csv, each
run's status.json and its claim.

The state is the status.json state, except that a run some live process holds is ``running``
and a run marked running that no live process holds is ``stopped`` (its process was killed; run
the experiment again to resume it).  A run whose status.json is damaged (cut short by a crash or
a full disk) is ``damaged``, and the file is named in ``Overview.damaged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pooling_lab import results
from pooling_lab.run import claims

FIELDS = ("protocol", "epoch", "epochs", "step", "total_steps", "p_final", "p_opt", *results.PROBE_SUMMARY,
          "test_accuracy", "val_accuracy",
          "attempts", "wall_time_s", "error", "diverged_step", "started", "updated", "finished", "flags")


@dataclass(frozen=True)
class Overview:
    name: str
    path: Path
    swept: list[str]
    runs: list[dict[str, Any]]
    damaged: list[str] = field(default_factory=list)  # one line per damaged file, which was skipped

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: NaN (no value) becomes null, an infinite value (p_opt at max pooling, its
        log drift) the text "inf" or "-inf"."""
        runs = [{key: _plain(value) for key, value in run.items()} for run in self.runs]
        return {"experiment": self.name, "path": str(self.path), "swept": self.swept, "runs": runs,
                "damaged": self.damaged}


def _plain(value: Any) -> Any:
    if not isinstance(value, float) or math.isfinite(value):
        return value
    return None if math.isnan(value) else str(value)


def overview(root: Path) -> Overview:
    experiment, table = results.read_runs(Path(root))
    swept = results.swept_keys(experiment)
    runs: list[dict[str, Any]] = []
    damaged: list[str] = []
    for record in table.to_dict("records"):
        files = results.RunFiles(Path(root) / record["run_dir"])
        status = results.unless_damaged(partial(results.read_status, files), {"status": "damaged"}, damaged) or {}
        if status.get("run_id") not in (None, record["run_id"]):
            status = {}
        owner = claims.holder(files.root)
        state = status.get("status", "pending")
        if owner is not None and state not in ("done", "diverged"):
            state = "running"
        elif state == "running":
            state = "stopped"
        run = {"run": record["run_dir"], "run_id": record["run_id"], **{key: record.get(key) for key in swept}}
        run |= {"seed": record.get("seed"), "state": state, "held_by": f"{owner['host']}:{owner['pid']}" if owner else None}
        run |= {key: status.get(key) for key in FIELDS}
        run["traceback"] = str(files.root / status["traceback"]) if status.get("traceback") else None
        runs.append(run)
    return Overview(str(experiment.get("name", Path(root).name)), Path(root), swept, runs, damaged)
