"""Trace of the learnable pooling parameters, buffered on the device.

Every pooling module declares what it wants traced (``Pool.traced``).  A scalar parameter is
recorded as its value; a vector (per-channel p) as its distribution: mean, std, min, the 5/25/
50/75/95% quantiles and max, with the same statistic of its gradient beside it.  Rows are
written into a preallocated device tensor and copied to the host only when the buffer is full or
drained (at checkpoints and epoch ends), so recording adds no host-device synchronisation to a training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from pooling_lab.models.classifier import Classifier

VECTOR_STATS = ("mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class Column:
    module: str
    param: str
    stat: str


def summarise(values: torch.Tensor) -> torch.Tensor:
    """The statistics of ``VECTOR_STATS`` for a 1-D tensor, as one tensor (no host sync)."""
    values = values.float().flatten()
    quantiles = torch.quantile(values, torch.tensor(QUANTILES, device=values.device, dtype=values.dtype))
    spread = values.std(correction=0).reshape(1)
    return torch.cat([values.mean().reshape(1), spread, values.min().reshape(1), quantiles, values.max().reshape(1)])


class ParamRecorder:
    def __init__(self, model: Classifier, device: torch.device, capacity: int = 512):
        self.model = model
        self.columns: list[Column] = []
        for module_name, pool in model.pools():
            for param_name, (value, _) in pool.traced().items():
                stats = ("value",) if value.numel() == 1 else VECTOR_STATS
                self.columns += [Column(module_name, param_name, stat) for stat in stats]
        self.capacity = capacity
        self._values = torch.empty(capacity, len(self.columns), device=device)
        self._grads = torch.empty(capacity, len(self.columns), device=device)
        self._steps: list[tuple[int, float]] = []
        self._host: list[pd.DataFrame] = []

    @property
    def active(self) -> bool:
        return bool(self.columns)

    def capture(self, step: int, epoch: float, with_grad: bool = True) -> None:
        """Record the current values (and gradients) as the state after ``step`` updates."""
        if not self.active:
            return
        values, grads = [], []
        for _, pool in self.model.pools():
            for value, parameter in pool.traced().values():
                grad = parameter.grad if with_grad else None
                if grad is None:
                    grad = torch.full_like(parameter, float("nan"))
                if value.numel() == 1:
                    values.append(value.float().reshape(1))
                    grads.append(grad.float().flatten()[:1])
                else:
                    values.append(summarise(value))
                    grads.append(summarise(grad))
        row = len(self._steps)
        self._values[row] = torch.cat(values)
        self._grads[row] = torch.cat(grads)
        self._steps.append((step, epoch))
        if len(self._steps) == self.capacity:
            self._to_host()

    def drain(self) -> pd.DataFrame:
        """All rows captured since the last drain, as a tidy frame (one host copy)."""
        self._to_host()
        frames, self._host = self._host, []
        if not frames:
            return pd.DataFrame(columns=["step", "epoch", "module", "param", "stat", "value", "grad"])
        return pd.concat(frames, ignore_index=True)

    def _to_host(self) -> None:
        count = len(self._steps)
        if count == 0:
            return
        # float64 on the host: a resumed run's rows, read back from params.csv, are float64 too,
        # so the file is written the same way whether or not the run was interrupted
        values = self._values[:count].cpu().double().numpy()
        grads = self._grads[:count].cpu().double().numpy()
        width = len(self.columns)
        steps = [s for s, _ in self._steps]
        epochs = [e for _, e in self._steps]
        self._host.append(pd.DataFrame({
            "step": [s for s in steps for _ in range(width)],
            "epoch": [round(e, 6) for e in epochs for _ in range(width)],
            "module": [c.module for c in self.columns] * count,
            "param": [c.param for c in self.columns] * count,
            "stat": [c.stat for c in self.columns] * count,
            "value": values.reshape(-1),
            "grad": grads.reshape(-1),
        }))
        self._steps = []
