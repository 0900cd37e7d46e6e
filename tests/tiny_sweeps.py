"""A tiny experiment that learns in a second on a CPU, and ways to run it: in this process
(``run_cli``) or as a real ``pooling-lab`` process (``start``), which a test may pause, signal or
kill (``pause_at_checkpoint``)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from typer.testing import CliRunner

from pooling_lab.cli import app
from pooling_lab.experiment import load_plan

# 360 train images (40 held out) in batches of 16: 22 steps an epoch, 66 in all
TINY: dict[str, Any] = {
    "name": "tiny",
    "data": {
        "dataset": "synthetic",
        "val_size": 0.1,
        "augment": {"crop_padding": 2, "flip": True},
        "synthetic": {"image_size": 16, "cell_size": 4, "num_classes": 4, "signal_strength": 20.0,
                      "train_size": 400, "test_size": 100},
    },
    "model": {"backbone": {"name": "small_cnn", "width": 8, "depth": 2}, "pool": {"name": "gem", "p": 3.0}},
    "head": {"name": "linear"},
    "optim": {"lr": 0.05, "pool_params": {"lr_mult": 5.0, "clamp": [1.0, None]}},
    "train": {"epochs": 3, "batch_size": 16, "checkpoint_every_steps": 5, "threads": 1},
    "record": {"every_steps": 2},
}
STEPS_PER_EPOCH = 22


def experiment(directory: Path, **sections: Any) -> Path:
    """TINY with whole sections replaced (``sweep={...}``) or merged (``train={...}``), as a file."""
    config = copy.deepcopy(TINY)
    for key, value in sections.items():
        config[key] = config[key] | value if isinstance(config.get(key), dict) and value is not None else value
    path = directory / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def keeping_threads() -> Iterator[None]:
    """Put back the thread count a run in this process sets (``train.threads``)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_cli(*args: str) -> Any:
    """``pooling-lab ARGS`` in this process."""
    with keeping_threads():
        return CliRunner().invoke(app, [str(arg) for arg in args])


def start(*args: str) -> subprocess.Popen:
    """``pooling-lab ARGS`` as a separate process, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "pooling_lab", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )


def pause_at_checkpoint(process: subprocess.Popen, checkpoint: Path, wanted: Any = lambda state: True) -> dict:
    """Stop ``process`` (SIGSTOP) at a moment its checkpoint satisfies ``wanted``; return that
    checkpoint.  The process is left stopped: signal it, kill it, or SIGCONT it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before the checkpoint wanted: {process.communicate()}"
        if checkpoint.exists():
            process.send_signal(signal.SIGSTOP)
            state = torch.load(checkpoint, weights_only=False)
            if wanted(state):
                return state
            process.send_signal(signal.SIGCONT)
        time.sleep(0.003)
    raise AssertionError("no such checkpoint within two minutes")


def run_dirs(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.glob("*/config.yaml"))


def frames(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """params.csv, and metrics.csv without its wall-clock column."""
    return pd.read_csv(run_dir / "params.csv"), pd.read_csv(run_dir / "metrics.csv").drop(columns="time_s")


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def run_dir_of(out: Path, path: Path, index: int) -> Path:
    """The folder of run ``index`` of the experiment file ``path`` under the results root ``out``."""
    return out / "tiny" / load_plan(path).runs[index].dir_name
