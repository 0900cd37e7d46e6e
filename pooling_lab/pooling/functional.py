"""Pooling ops as plain functions of tensors: (N, C, H, W) -> (N, C), computed in float32."""

from __future__ import annotations

import torch


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 or x.dtype == torch.float64 else x.float()


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    return _fp32(x).mean(dim=(2, 3))


def max_pool(x: torch.Tensor) -> torch.Tensor:
    return _fp32(x).amax(dim=(2, 3))


def gem(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean ``(mean_hw x^p)^(1/p)`` per channel, stable for any p > 0.

    ``p`` is a scalar or a per-channel tensor of shape (C,).  The map is clamped to ``eps`` (the
    inputs are post-ReLU) and divided by its per-channel maximum ``m`` before the power, so the
    largest term is exactly 1: nothing overflows for large x or p, and the mean is at least
    1/(H*W), so the root never sees 0.  ``m`` is detached: GeM is positively homogeneous,
    ``gem(x) = m * gem(x / m)`` holds for every constant m, so the gradient is unchanged.
    """
    x = _fp32(x).clamp_min(eps)
    scale = x.amax(dim=(2, 3), keepdim=True).detach()
    if isinstance(p, torch.Tensor):
        p = _fp32(p)
        if p.dim() == 1:
            p_map, p_vec = p.view(1, -1, 1, 1), p.view(1, -1)
        else:
            p_map = p_vec = p
    else:
        p_map = p_vec = p
    mean_power = (x / scale).pow(p_map).mean(dim=(2, 3))
    return scale.flatten(1) * mean_power.pow(1.0 / p_vec)
