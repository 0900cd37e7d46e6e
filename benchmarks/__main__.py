"""Run every benchmark and print its ratio table: ``python -m benchmarks [--quick]``.

Each benchmark measures ours against a baseline side by side in this one process (CPU time of
one thread, median of interleaved repeats), so the ratios hold on a busy machine too.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import torch

from benchmarks import data_path, evaluation, gem, throughput, training_step
from benchmarks.report import print_table

BENCHMARKS = {
    "GeM forward+backward (fused, compiled, autograd vs avg pooling)": gem.run,
    "GeM on CUDA, bf16 input (fused, compiled vs avg pooling; CUDA events)": gem.run_cuda,
    "data path (tensor-resident batches vs per-sample DataLoader)": data_path.run,
    "training step (harness vs minimal loop; recording every step vs off)": training_step.run,
    "throughput (the p-drift training step vs its convolutions alone)": throughput.run,
    "evaluation (one sort per row, metrics from the ranks of the relevant items, vs full-row argsort)": evaluation.run,
}


def machine_line() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}; "
            f"python {platform.python_version()}, torch {torch.__version__}")


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    print(machine_line())
    for title, run in BENCHMARKS.items():
        started = time.perf_counter()
        rows = run(quick)
        print(f"\n== {title} ({time.perf_counter() - started:.0f} s)")
        if rows:  # a benchmark that cannot run here says so and has none
            print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
