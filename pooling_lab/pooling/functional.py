"""Pooling ops as plain functions of tensors, computed in float32 (float64 stays float64): the
global pools (N, C, H, W) -> (N, C), and the map-to-map steps of the GeM variants."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    ``(mean_window x^p)^(1/p)``, the map divided by its per-channel maximum for stability.

    A window whose powers all underflow is floored at the smallest normal number rather than 0,
    so neither the root nor its gradient is infinite.
    """
    x = _fp32(x).clamp_min(eps)
    scale = x.amax(dim=(2, 3), keepdim=True).detach()
    pad = (kernel_size - 1) // 2
    ratio = F.pad(x / scale, (pad, kernel_size - 1 - pad) * 2, mode="replicate")
    mean_power = F.avg_pool2d(ratio.pow(p), kernel_size, stride=1)
    return scale * mean_power.clamp_min(torch.finfo(mean_power.dtype).tiny).pow(1.0 / p)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The map resized to ``size``, bilinear and antialiased (a non-negative map stays
    non-negative); a map of that size already is returned as it is."""
    if (x.shape[2], x.shape[3]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def rescale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The map resized by ``scale``, to at least 1 x 1."""
    return resize(x, (max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale))))
