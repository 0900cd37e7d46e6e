"""How far a training step is from the machine's limit: the harness's step against the same
convolutions alone.

The model, head, optimiser and batch size are those of ``experiments/p_drift_fmnist.yaml`` (the
small CNN with learnable GeM and ArcFace, batches of 64); the images are synthetic 1x28x28, the
shape of Fashion-MNIST, so nothing needs the data set.  Two contenders, in turn within every
repeat, CPU time of one thread (torch held at one thread), median of repeats after a warm-up:
  * ``step``: ``Trainer._train_step`` (forward, loss, backward, optimiser step, and the
    harness's bookkeeping);
  * ``convs``: forward + backward of copies of the model's convolutions on inputs of the shapes
    they see in the step (a gradient for the input wherever the step needs one).
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
products, forward and backward; elementwise work is not counted), so the step's GFLOP/s is the
rate at which it does the arithmetic that matters, and ``step/convs`` the share of the rate that
torch reaches on those convolutions alone.  Run: ``python -m benchmarks.throughput``.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import interleaved_medians, main_for
from pooling_lab.data import load_data
from pooling_lab.experiment import load_plan
from pooling_lab.results import RunFiles
from pooling_lab.train.loop import SilentProgress, Trainer
from pooling_lab.train.totals import EpochTotals

EXPERIMENT = Path(__file__).parent.parent / "experiments" / "p_drift_fmnist.yaml"
SYNTHETIC_FMNIST = ("data={dataset: synthetic, val_size: 0.1, synthetic: {channels: 1, image_size: 28, "
                    "cell_size: 4, train_size: 2000, test_size: 200}}")
Step = Callable[[], None]


def _trainer(folder: Path) -> Trainer:
    """The first run of the experiment, on synthetic images of Fashion-MNIST's shape, on CPU."""
    plan = load_plan(EXPERIMENT, ["sweep=null", SYNTHETIC_FMNIST, "train.device=cpu"])
    spec = plan.runs[0]
    trainer = Trainer(spec, RunFiles(folder), load_data(spec.config.data), SilentProgress())
    trainer.totals = EpochTotals.zeros(trainer.compute.device)
    trainer.model.train()
    return trainer


def _convolutions_alone(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> Step:
    """Forward + backward of copies of every convolution of the model, each on a random input of
    the shape it sees in the step, with a random output gradient."""
    seen: list[tuple[nn.Conv2d, torch.Tensor]] = []
    hooks = [
        module.register_forward_hook(lambda conv, inputs, _: seen.append((conv, inputs[0])))
        for module in trainer.model.modules()
        if isinstance(module, nn.Conv2d)
    ]
    trainer._train_step(images, labels)
    for hook in hooks:
        hook.remove()
    layers = []
    for conv, seen_input in seen:
        layer = copy.deepcopy(conv)
        x = torch.randn(seen_input.shape).requires_grad_(seen_input.requires_grad)
        layers.append((layer, x, torch.randn(layer(x).shape)))

    def step() -> None:
        for layer, x, grad in layers:
            layer(x).backward(grad)
            layer.weight.grad = x.grad = None

    return step



def _thread_seconds(step: Callable[[], object]) -> float:
    """CPU seconds of this thread for one call of ``step``."""
    start = time.thread_time()
    step()
    return time.thread_time() - start


def _flops(step: Step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        trainer = _trainer(Path(folder))
        images, labels = next(iter(trainer.train_batches))
        contenders = {
            "step": lambda: trainer._train_step(images, labels),
            "convs": _convolutions_alone(trainer, images, labels),
        }
        flops = {name: _flops(step) for name, step in contenders.items()}
        seconds = interleaved_medians({name: functools.partial(_thread_seconds, step) for name, step in contenders.items()},
                                      warmup=1, repeats=repeats)
    rate = {name: flops[name] / seconds[name] for name in contenders}
    return {
        "batch": images.shape[0],
        "step_ms": round(1e3 * seconds["step"], 2),
        "images/s": round(images.shape[0] / seconds["step"]),
        "step_GFLOP": round(flops["step"] / 1e9, 3),
        "step_GFLOP/s": round(rate["step"] / 1e9, 1),
        "convs_ms": round(1e3 * seconds["convs"], 2),
        "convs_GFLOP/s": round(rate["convs"] / 1e9, 1),
        "step/convs": round(rate["step"] / rate["convs"], 2),
    }


def run(quick: bool) -> list[dict]:
    """One row, per core: the step's images/s and GFLOP/s, the convolutions' GFLOP/s, the ratio."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [measure(repeats=5 if quick else 30)]
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main_for(run)
