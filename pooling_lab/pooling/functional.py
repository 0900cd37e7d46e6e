"""Pooling ops as plain functions of tensors, computed in float32 (float64 stays float64): the
global pools (N, C, H, W) -> (N, C), and the map-to-map steps of the GeM variants.

``power_mean`` is the one stable power mean; ``gem``, ``regional_gem`` and the local ``lp`` pool
are it over the whole map, over sliding windows and over 2x2 regions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 or x.dtype == torch.float64 else x.float()


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    return _fp32(x).mean(dim=(2, 3))


def max_pool(x: torch.Tensor) -> torch.Tensor:
    return _fp32(x).amax(dim=(2, 3))


def power_mean(
    x: torch.Tensor,
    p: torch.Tensor | float,
    dims: tuple[int, ...] = (2, 3),
    window_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The power mean ``(mean x^p)^(1/p)`` of a post-ReLU map, stable for any p > 0.

    The mean runs over ``dims`` (kept, with size 1), or over the windows that ``window_mean``
    averages.  ``p`` is a number or a tensor that broadcasts against ``x``.  The map is clamped to
    ``eps`` and divided by its maximum m over ``dims`` before the power, so no term exceeds 1 and
    nothing overflows for large x or p.  m is detached: the power mean is positively homogeneous,
    ``y(x) = m y(x / m)`` for every constant m, so the gradient is unchanged.  Over ``dims`` the
    largest term is exactly 1, so the mean is at least 1/n; a window without the maximum can
    underflow, and is floored at the smallest normal number so that neither the root nor its
    gradient is infinite.
    """
    x = _fp32(x).clamp_min(eps)
    peak = x.amax(dim=dims, keepdim=True).detach()
    powers = (x / peak).pow(p)
    mean_power = powers.mean(dim=dims, keepdim=True) if window_mean is None else window_mean(powers)
    return peak * mean_power.clamp_min(torch.finfo(mean_power.dtype).tiny).pow(1.0 / p)


def gem(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean ``(mean_hw x^p)^(1/p)`` per channel, (N, C, H, W) -> (N, C): the power
    mean over the whole map, with ``p`` a number, a 0-dim tensor or one per channel, shape (C,)."""
    if isinstance(p, torch.Tensor):
        p = _fp32(p)
        p = p.view(-1, 1, 1) if p.dim() == 1 else p
    return power_mean(x, p, eps=eps).flatten(1)


def lse_pool(x: torch.Tensor, r: torch.Tensor | float) -> torch.Tensor:
    """Log-sum-exp pooling ``(1/r) log(mean_hw exp(r x))`` (Pinheiro & Collobert, CVPR 2015).

    Written as ``m + (1/r) log1p(mean expm1(r (x - m)))`` with m the per-channel maximum: no
    term overflows for large r, and small r loses no digits (r -> 0 is the mean, r -> inf the
    maximum).  ``m`` is detached; the identity holds for any constant m.
    """
    x = _fp32(x)
    peak = x.amax(dim=(2, 3), keepdim=True).detach()
    mean_excess = torch.expm1((x - peak) * r).mean(dim=(2, 3))
    return peak.flatten(1) + torch.log1p(mean_excess) / r


def regional_gem(x: torch.Tensor, p: torch.Tensor | float, kernel_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Lp pooling over each ``kernel_size`` square (stride 1, replicate padding, same size):
    ``(mean_window x^p)^(1/p)``, the power mean of every window, each scaled by the map's
    per-channel maximum (windows far below it are floored, see ``power_mean``)."""
    return power_mean(x, p, window_mean=partial(_sliding_mean, kernel_size=kernel_size), eps=eps)


def _sliding_mean(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The mean of the ``kernel_size`` square at every pixel, the map replicate-padded to keep
    its size."""
    pad = (kernel_size - 1) // 2
    return F.avg_pool2d(F.pad(x, (pad, kernel_size - 1 - pad) * 2, mode="replicate"), kernel_size, stride=1)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The map resized to ``size``, bilinear and antialiased (a non-negative map stays
    non-negative); a map of that size already is returned as it is."""
    if (x.shape[2], x.shape[3]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def rescale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The map resized by ``scale``, to at least 1 x 1."""
    return resize(x, (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale))))
