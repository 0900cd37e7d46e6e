"""Non-finite losses and pooling parameters, watched on the device.

``NonFiniteWatch`` notes, per step and without reading anything back on the host, the first step
at which the loss or a pooling parameter stopped being finite, and keeps the last finite values of
the pooling parameters; the loop reads it at checkpoints and epoch ends.  ``guarded_step`` is
``optimizer.step()`` for ``train.on_nonfinite: skip_step``: an update whose loss or gradients are
non-finite is undone on the device (``torch.where``), so skipping costs no host sync either.
"""

from __future__ import annotations

from typing import Any

import torch

from pooling_lab.models.classifier import Classifier

LOSS, PARAMETER = 1, 2


class Diverged(Exception):
    """A loss or pooling parameter became non-finite at ``step``; ``last_finite`` holds the
    pooling parameters as they were before."""

    def __init__(self, message: str, step: int, last_finite: dict[str, Any]):
        super().__init__(message)
        self.step = step
        self.last_finite = last_finite


def traced_values(model: Classifier) -> dict[str, torch.Tensor]:
    """Every traced pooling parameter, named ``module.param``."""
    return {
        f"{module}.{name}": value.float()
        for module, pool in model.pools()
        for name, (value, _) in pool.traced().items()
    }


class NonFiniteWatch:
    def __init__(self, model: Classifier, device: torch.device):
        self.model = model
        self.first = torch.full((), -1, device=device, dtype=torch.long)
        self.cause = torch.zeros((), device=device, dtype=torch.long)
        self.last_finite = {name: value.clone() for name, value in traced_values(model).items()}

    def observe(self, step: int, loss: torch.Tensor | None) -> None:
        """After an update: are the pooling parameters (and ``loss``, unless None) finite?"""
        values = traced_values(self.model)
        finite = [torch.isfinite(value).all() for value in values.values()]
        params_ok = torch.stack(finite).all() if finite else torch.ones((), dtype=torch.bool, device=self.first.device)
        loss_ok = torch.isfinite(loss) if loss is not None else torch.ones_like(params_ok)
        fresh = self.first < 0
        bad = fresh & ~(loss_ok & params_ok)
        self.first.copy_(torch.where(bad, step, self.first))
        self.cause.copy_(torch.where(bad, torch.where(loss_ok, PARAMETER, LOSS), self.cause))
        keep = fresh & ~bad
        for name, value in values.items():
            self.last_finite[name].copy_(torch.where(keep, value, self.last_finite[name]))

    def check(self) -> None:
        """Raise ``Diverged`` if a step was non-finite (reads two numbers from the device)."""
        first = int(self.first.item())
        if first >= 0:
            what = "loss" if int(self.cause.item()) == LOSS else "pooling parameter"
            raise Diverged(f"non-finite {what} at step {first}", first, self.last_finite_values())

    def last_finite_values(self) -> dict[str, Any]:
        """Scalars as numbers, vectors (per-channel p) as lists."""
        return {
            name: value.item() if value.numel() == 1 else value.flatten().tolist()
            for name, value in self.last_finite.items()
        }


def guarded_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """``optimizer.step()``, undone where the loss or a gradient is non-finite; returns the
    device flag "applied".  State the step created (momentum, Adam moments) is zeroed, which is
    their fresh value; state kept on another device (Adam's step count on CUDA) still counts a
    skipped step."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    applied = torch.isfinite(loss) & torch.isfinite(grad_norm)
    before = {(index, key): tensor.clone() for index, key, tensor in _state(optimizer, params, applied.device)}
    optimizer.step()
    for index, key, tensor in _state(optimizer, params, applied.device):
        kept = before.get((index, key))
        fallback = kept if kept is not None else torch.zeros_like(tensor)
        tensor.copy_(torch.where(applied, tensor, fallback))
    return applied


def _state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], device: torch.device):
    """(param index, state key, tensor) for every parameter and its optimiser state on ``device``."""
    for index, param in enumerate(params):
        yield index, None, param.data
        for key, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor) and value.device == device:
                yield index, key, value
