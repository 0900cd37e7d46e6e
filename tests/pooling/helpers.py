"""What the pooling tests share: seeded input maps, overwriting a parameter, and GeM written out
in float64 numpy, the independent reference the pools are checked against."""

from __future__ import annotations

import numpy as np
import torch


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def positive_map(n: int, c: int, h: int, w: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Strictly positive activations in [0.05, 2.05), well above eps."""
    return (torch.rand(n, c, h, w, generator=seeded(seed), dtype=torch.float64) * 2 + 0.05).to(dtype)


def assign(tensor: torch.Tensor, values) -> None:
    """Overwrite a parameter or buffer in place, outside autograd."""
    with torch.no_grad():
        tensor.copy_(torch.as_tensor(values, dtype=tensor.dtype))


def gem_reference(a: np.ndarray, p) -> np.ndarray:
    """GeM per channel of a float64 (N, C, H, W) array clamped to 1e-6; p a number or one per channel."""
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), (a.shape[1],))
    a = np.maximum(a, 1e-6)
    return np.stack([np.mean(a[:, k] ** p[k], axis=(1, 2)) ** (1 / p[k]) for k in range(a.shape[1])], axis=1)
