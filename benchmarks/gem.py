"""Fused GeM against average pooling and plain-autograd GeM: forward + backward.

CPU, fp32: each timing is the median over repeats after warm-up of the CPU time of one thread
(torch is held at one thread while it runs), so other processes on the machine do not distort
the ratios; the contenders are measured in turn within every repeat.  Three exponents: a
learnable shared p, a learnable per-channel p (both ``FusedGeM``) and a fixed p = 3
(``IntegerGeM``); ``compiled`` is ``gem_compiled`` (``CompiledGeM`` where torch.compile works),
whose first call per shape compiles (``compile_s``, wall time; the warm-up absorbs it).

CUDA, bf16 input through the pool modules (which pool in fp32, as in training): CUDA events
around many steps, median of interleaved repeats; skipped, with a line, without CUDA.

Run: ``python -m benchmarks.gem`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

from benchmarks.report import interleaved_medians, main_for
from pooling_lab.pooling import avg_pool, build_pool, gem, gem_fused
from pooling_lab.pooling.fused import gem_compiled

SHAPES = [(256, 512, 4, 4), (128, 512, 8, 8), (64, 2048, 7, 7), (64, 128, 7, 7)]  # last: p_drift_fmnist's map
EXPONENTS = ["shared", "per_channel", "fixed 3"]
Pool = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CONTENDERS: dict[str, Pool] = {
    "avg": lambda x, p: avg_pool(x),
    "fused": gem_fused,
    "compiled": gem_compiled,
    "autograd": gem,
}


def _step_time(pool: Pool, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor) -> float:
    start = time.thread_time()
    pool(x, p).backward(grad)
    elapsed = time.thread_time() - start
    x.grad = p.grad = None
    return elapsed


def _exponent(kind: str, channels: int) -> torch.Tensor:
    if kind == "fixed 3":
        return torch.tensor(3.0)
    return torch.full((channels,) if kind == "per_channel" else (), 3.0, requires_grad=True)


def _compile_seconds(x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor) -> float:
    """Wall time of the compiled contender's first step on this shape (its compilation)."""
    start = time.perf_counter()
    _step_time(CONTENDERS["compiled"], x, p, grad)
    return time.perf_counter() - start


def measure(shape: tuple[int, int, int, int], kind: str, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per forward+backward of every contender on one post-ReLU-like map."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).relu_().requires_grad_()
    p = _exponent(kind, shape[1])
    grad = torch.randn(shape[:2], generator=generator)
    compile_s = _compile_seconds(x, p, grad)
    steps = {name: functools.partial(_step_time, pool, x, p, grad) for name, pool in CONTENDERS.items()}
    median = interleaved_medians(steps, warmup, repeats)
    return {
        "shape": "x".join(map(str, shape)),
        "p": kind,
        **{f"{name}_ms": round(1e3 * seconds, 2) for name, seconds in median.items()},
        "autograd/fused": round(median["autograd"] / median["fused"], 2),
        "fused/avg": round(median["fused"] / median["avg"], 2),
        "compiled/avg": round(median["compiled"] / median["avg"], 2),
        "compile_s": round(compile_s, 1),
    }


def _cuda_step_ms(pool: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, steps: int) -> float:
    """Milliseconds per forward+backward, CUDA events around ``steps`` steps (one sync at the end;
    torch warns of any other, which would be a host sync per step)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.set_sync_debug_mode("warn")
    start.record()
    for _ in range(steps):
        pool(x).backward(grad)
        x.grad = None
    end.record()
    torch.cuda.set_sync_debug_mode("default")
    end.synchronize()
    pool.zero_grad(set_to_none=True)
    return start.elapsed_time(end) / steps


def measure_cuda(shape: tuple[int, int, int, int], mode: str, repeats: int, steps: int) -> dict:
    """GeM (learnable p, fused and compiled) against average pooling on a bf16 CUDA map."""
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).relu_().requires_grad_()
    grad = torch.randn(shape[:2], device="cuda")
    pools = {
        "avg": build_pool("avg", shape[1]).cuda(),
        "fused": build_pool("gem", shape[1], mode=mode).cuda(),
        "compiled": build_pool("gem", shape[1], mode=mode, impl="compiled").cuda(),
    }
    timed = {name: functools.partial(_cuda_step_ms, pool, x, grad, steps) for name, pool in pools.items()}
    median = interleaved_medians(timed, warmup=1, repeats=repeats)  # the warm-up round also compiles
    return {
        "shape": "x".join(map(str, shape)),
        "p": mode,
        **{f"{name}_ms": round(ms, 3) for name, ms in median.items()},
        "fused/avg": round(median["fused"] / median["avg"], 2),
        "compiled/avg": round(median["compiled"] / median["avg"], 2),
    }


def run(quick: bool) -> list[dict]:
    """One row per shape and exponent; ``quick`` shrinks the batch 8x and the repeats to 3."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shapes = [(max(1, n // 8), c, h, w) for n, c, h, w in SHAPES] if quick else SHAPES
        return [measure(shape, kind, repeats=3 if quick else 15) for shape in shapes for kind in EXPONENTS]
    finally:
        torch.set_num_threads(threads)


def run_cuda(quick: bool) -> list[dict]:
    """One row per shape and p mode on CUDA (bf16 input); nothing, with a line, without CUDA."""
    if not torch.cuda.is_available():
        print("GeM on CUDA: skipped, no CUDA device")
        return []
    return [
        measure_cuda(shape, mode, repeats=3 if quick else 11, steps=10 if quick else 50)
        for shape in SHAPES
        for mode in ("shared", "per_channel")
    ]


if __name__ == "__main__":
    main_for(run)
    main_for(run_cuda)
