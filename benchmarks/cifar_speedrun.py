"""Time to 94% CIFAR-10 test accuracy with ``experiments/fast_cifar.yaml`` (needs CUDA and the
CIFAR-10 data; it is skipped elsewhere).  The time is the training time the harness records in
metrics.csv (``time_s``: training steps only, evaluation excluded) at the first epoch whose
test accuracy reaches the target.  Run: ``python -m benchmarks.cifar_speedrun``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.report import main_for
from pooling_lab import results
from pooling_lab.experiment import load_plan
from pooling_lab.run.sweep import prepare, run_plan

EXPERIMENT = Path(__file__).parent.parent / "experiments" / "fast_cifar.yaml"
TARGET = 0.94


def run(seeds: int = 1) -> list[dict]:
    """One row per seed; nothing without CUDA."""
    if not torch.cuda.is_available():
        print("cifar_speedrun: skipped, it needs a CUDA GPU")
        return []
    plan = load_plan(EXPERIMENT, [f"sweep.seeds={list(range(seeds))}"])
    with tempfile.TemporaryDirectory() as out:
        run_plan(prepare(plan, Path(out)))
        loaded = results.load(Path(out) / plan.experiment.name)
    rows = []
    for run_id, metrics in loaded.metrics.groupby("run_id"):
        reached = metrics[metrics["test_accuracy"] >= TARGET]
        rows.append({
            "run": run_id,
            "final_test_accuracy": round(float(metrics["test_accuracy"].iloc[-1]), 4),
            f"seconds_to_{TARGET:.0%}": round(float(reached["time_s"].iloc[0]), 2) if len(reached) else "not reached",
            "gpu": torch.cuda.get_device_name(),
        })
    return rows


if __name__ == "__main__":
    main_for(lambda quick: run())
