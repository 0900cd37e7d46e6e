"""Where and how a run computes: device, autocast, threads, seeds."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from pooling_lab.errors import UserError
from pooling_lab.experiment import TrainConfig
from pooling_lab.train.distributed import SINGLE, World


@dataclass(frozen=True)
class Compute:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for full fp32

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{name!r} requested but CUDA is not available", field="train.device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("'mps' requested but MPS is not available", field="train.device")
    return torch.device(name)


def compute_for(config: TrainConfig, world: World = SINGLE) -> Compute:
    """Where a run computes; under torchrun, each rank on CUDA takes the GPU of its local rank."""
    device = resolve_device(config.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return Compute(device, torch.bfloat16 if use_bf16 else None)


def compile_backbone(backbone: torch.nn.Module, sample: torch.Tensor) -> str | None:
    """Replace ``backbone.forward`` by its ``torch.compile``d version (the module and its state
    dict stay as they are) and compile it once on ``sample``; when compilation is unavailable
    or fails, keep the eager forward and return the reason."""
    eager = backbone.forward
    try:
        backbone.forward = torch.compile(eager)
        with torch.no_grad():
            backbone(sample)
    except Exception as error:  # any compiler failure means: train eagerly
        backbone.forward = eager
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None
