"""The harness's training step against a hand-written PyTorch step, and recording's cost.

Three contenders train the same model (small_cnn + GeM + 128-d embedding + ArcFace, as in
experiments/p_drift_fmnist.yaml) on the same fixed batches with the same optimiser:
  * ``minimal``: forward, loss, zero_grad, backward, optimiser step; nothing else;
  * ``harness``: ``Trainer._train_step`` (the body of pooling-lab's loop: schedule, clamp,
    device-side loss/accuracy totals, non-finite watch, progress) with recording off;
  * ``recording``: the same with ``record.every_steps: 1``.
CPU time of one thread (torch held at one thread), median over interleaved repeats.
Run: ``python -m benchmarks.training_step``.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.report import interleaved_medians, main_for
from pooling_lab.data import load_data
from pooling_lab.experiment import ExperimentConfig, RunSpec
from pooling_lab.results import RunFiles
from pooling_lab.train.loop import SilentProgress, Trainer
from pooling_lab.train.optim import build_optimizer
from pooling_lab.train.totals import EpochTotals

CONFIG = {
    "name": "bench",
    "data": {"dataset": "synthetic", "val_size": 0.1,
             "synthetic": {"channels": 1, "image_size": 28, "cell_size": 4, "train_size": 2000, "test_size": 200}},
    "model": {"backbone": {"name": "small_cnn", "width": 32, "depth": 3}, "pool": {"name": "gem"}, "embedding_dim": 128},
    "head": {"name": "arcface", "scale": 30.0, "margin": 0.3},
    "optim": {"lr": 0.05, "pool_params": {"lr_mult": 10.0, "clamp": [1.0, None]}},
    "train": {"epochs": 1, "batch_size": 128, "device": "cpu"},
}


def _trainer(every_steps: int, folder: Path, data) -> Trainer:
    config = ExperimentConfig.model_validate(CONFIG | {"record": {"every_steps": every_steps}})
    trainer = Trainer(RunSpec(config, {}, f"bench{every_steps}", "bench"), RunFiles(folder), data, SilentProgress())
    trainer.totals = EpochTotals.zeros(trainer.compute.device)
    trainer.model.train()
    return trainer



def _seconds_per_step(step: Callable[[torch.Tensor, torch.Tensor], object], batches: list) -> float:
    """CPU seconds of this thread per step over ``batches``."""
    start = time.thread_time()
    for images, labels in batches:
        step(images, labels)
    return (time.thread_time() - start) / len(batches)


def _minimal(trainer: Trainer):
    """A plain PyTorch step on a copy of the harness's model, with the same optimiser."""
    model = copy.deepcopy(trainer.model)
    optimizer = build_optimizer(model, trainer.config.optim)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = model.head.loss(model(images, labels)[0], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(steps: int, repeats: int) -> dict:
    data = load_data(ExperimentConfig.model_validate(CONFIG).data)
    with tempfile.TemporaryDirectory() as folder:
        off = _trainer(10**9, Path(folder) / "off", data)
        on = _trainer(1, Path(folder) / "on", data)
        batches = [batch for batch, _ in zip(off.train_batches, range(steps), strict=False)]
        contenders = {"minimal": _minimal(off), "harness": off._train_step, "recording": on._train_step}
        median = interleaved_medians({name: functools.partial(_seconds_per_step, step, batches)
                                      for name, step in contenders.items()}, warmup=1, repeats=repeats)
        on.recorder.drain()
    return {
        "minimal_ms": round(1e3 * median["minimal"], 2),
        "harness_ms": round(1e3 * median["harness"], 2),
        "recording_ms": round(1e3 * median["recording"], 2),
        "harness_overhead_%": round(100 * (median["harness"] / median["minimal"] - 1), 1),
        "recording_overhead_%": round(100 * (median["recording"] / median["harness"] - 1), 1),
    }


def run(quick: bool) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [measure(steps=4 if quick else 10, repeats=3 if quick else 9)]
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main_for(run)
