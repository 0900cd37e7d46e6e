"""Fused GeM against plain-autograd GeM and average pooling: forward + backward, fp32, CPU.

Each timing is the median over repeats after warm-up of the CPU time of one thread (torch is
held at one thread while it runs), so other processes on the machine do not distort the
ratios.  The three contenders are measured in turn within every repeat.  Run:
``python -m benchmarks.gem`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.report import main_for
from pooling_lab.pooling import avg_pool, gem, gem_fused

SHAPES = [(256, 512, 4, 4), (128, 512, 8, 8), (64, 2048, 7, 7)]
Pool = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CONTENDERS: dict[str, Pool] = {
    "avg": lambda x, p: avg_pool(x),
    "fused": gem_fused,
    "autograd": gem,
}


def _step_time(pool: Pool, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor) -> float:
    start = time.thread_time()
    pool(x, p).backward(grad)
    elapsed = time.thread_time() - start
    x.grad = p.grad = None
    return elapsed


def measure(shape: tuple[int, int, int, int], mode: str, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per forward+backward of every contender on one post-ReLU-like map."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).relu_().requires_grad_()
    p = torch.full((shape[1],) if mode == "per_channel" else (), 3.0, requires_grad=True)
    grad = torch.randn(shape[:2], generator=generator)
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for repeat in range(warmup + repeats):
        for name, pool in CONTENDERS.items():
            elapsed = _step_time(pool, x, p, grad)
            if repeat >= warmup:
                times[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "shape": "x".join(map(str, shape)),
        "p": mode,
        **{f"{name}_ms": round(1e3 * seconds, 2) for name, seconds in median.items()},
        "autograd/fused": round(median["autograd"] / median["fused"], 2),
        "fused/avg": round(median["fused"] / median["avg"], 2),
    }


def run(quick: bool) -> list[dict]:
    """One row per shape and p mode; ``quick`` shrinks the batch 8x and the repeats to 3."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shapes = [(max(1, n // 8), c, h, w) for n, c, h, w in SHAPES] if quick else SHAPES
        return [
            measure(shape, mode, repeats=3 if quick else 15)
            for shape in shapes
            for mode in ("shared", "per_channel")
        ]
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main_for(run)
