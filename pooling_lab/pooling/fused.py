"""GeM as one autograd function with a closed-form backward (README.md, Numerics): the same
power mean as ``functional.gem`` (``functional.power_mean`` over the whole map: clamp to eps,
divide by the detached per-channel maximum, power, mean, root, rescale), fused.

With r = x / m (m the per-channel maximum of the clamped map), u = r^p, T = sum u and
g = (T / |X|)^(1/p), the pool is f = m g, and the closed forms
df/dx_i = (1/|X|) f^(1-p) x_i^(p-1) and df/dp = (f/p) (sum x^p ln x / sum x^p - ln f)
become, in the rescaled variables (every term bounded for any p):

    df/dx_i = (g / T) * r_i^(p-1)
    df/dp   = (f / p) * (sum u ln r / T - ln(T / |X|) / p)

The forward takes one logarithm per element and keeps only what the backward needs: the map
r^(p-1), zeroed where the input was clamped, when x needs a gradient, and two sums per channel
when p does.  It works in base 2 (exp2 is several times cheaper than exp on CPU; ln 2 is folded
into the per-channel terms) and, on CPU, a few samples at a time in two small scratch buffers,
so the only map-sized allocation is the saved r^(p-1) (fresh allocations and cache misses, not
arithmetic, dominate there).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

LN2 = math.log(2.0)
CPU_CHUNK_ELEMENTS = 1 << 18  # 1 MiB of float32 per scratch buffer


def _per_channel(p: torch.Tensor, dims: int) -> torch.Tensor:
    """A (C,) exponent viewed to broadcast over the channels of a ``dims``-dimensional tensor."""
    return p.view(1, -1, *([1] * (dims - 2))) if p.dim() else p


class FusedGeM(torch.autograd.Function):
    """``functional.gem(x, p, eps)`` with the closed-form backward of the module docstring."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, c, h, w = x.shape
        p_map = _per_channel(p, 4)
        rows = max(1, CPU_CHUNK_ELEMENTS // max(1, c * h * w)) if x.device.type == "cpu" else n
        log_ratio_buffer = x.new_empty((min(rows, n), c, h, w))
        power_buffer = torch.empty_like(log_ratio_buffer)
        peak, total = x.new_empty((n, c, 1, 1)), x.new_empty((n, c))
        weighted = x.new_empty((n, c)) if need_p else None
        slope = torch.empty_like(x) if need_x else None
        for start in range(0, n, rows):
            rows_here = slice(start, min(start + rows, n))
            part = x[rows_here]
            log_ratio, power = log_ratio_buffer[: part.shape[0]], power_buffer[: part.shape[0]]
            torch.clamp_min(part, eps, out=log_ratio)
            torch.amax(log_ratio, dim=(2, 3), keepdim=True, out=peak[rows_here])
            log_ratio.div_(peak[rows_here]).log2_()
            torch.sum(torch.mul(log_ratio, p_map, out=power).exp2_(), dim=(2, 3), out=total[rows_here])
            if need_p:  # sum u log2 r
                torch.sum(power.mul_(log_ratio), dim=(2, 3), out=weighted[rows_here])
            if need_x:  # r^(p-1), times the clamp's gradient mask (x >= eps)
                torch.mul(log_ratio, p_map - 1, out=slope[rows_here]).exp2_()
                slope[rows_here].mul_(torch.ge(part, eps, out=power))
        log_mean = total.div(h * w).log2_()
        rescaled = torch.exp2(log_mean / _per_channel(p, 2))
        out = peak.flatten(1) * rescaled
        ctx.save_for_backward(p, out, total, log_mean, weighted, slope, rescaled / total)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        p, out, total, log_mean, weighted, slope, coefficient = ctx.saved_tensors
        grad_x = grad_p = None
        if ctx.needs_input_grad[0]:
            grad_x = slope * (grad_out * coefficient)[:, :, None, None]
        if ctx.needs_input_grad[1]:
            p_vec = _per_channel(p, 2)
            dfdp = (out / p_vec) * LN2 * (weighted / total - log_mean / p_vec)
            grad_p = (grad_out * dfdp).sum(dim=0) if p.dim() else (grad_out * dfdp).sum()
        return grad_x, grad_p, None


def gem_fused(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """GeM of a float32/float64 map (N, C, H, W) with scalar or (C,) ``p``, as ``FusedGeM``
    (the same values as ``functional.gem``; its backward is not itself differentiable)."""
    if not isinstance(p, torch.Tensor):
        p = torch.tensor(float(p), dtype=x.dtype, device=x.device)
    return FusedGeM.apply(x, p.to(x.dtype), eps)
