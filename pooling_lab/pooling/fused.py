"""GeM as autograd functions with a closed-form backward (README.md, Numerics): the same power
mean as ``functional.gem`` (``functional.power_mean`` over the whole map: clamp to eps, divide by
a detached per-channel scale, power, mean, root, rescale), fused.

With r = x / m (m the per-channel maximum of the clamped map), u = r^p, T = sum u and
g = (T / |X|)^(1/p), the pool is f = m g, and the closed forms
df/dx_i = (1/|X|) f^(1-p) x_i^(p-1) and df/dp = (f/p) (sum x^p ln x / sum x^p - ln f)
become, in the rescaled variables (every term bounded for any p):

    df/dx_i = (g / T) * r_i^(p-1)
    df/dp   = (f / p) * (sum u ln r / T - ln(T / |X|) / p)

The homogeneity of the power mean makes df/dx the same for any per-channel m that does not
overflow; dividing by the maximum keeps every term <= 1 for any p.

Three kernels compute it (``gem_fused`` and ``gem_compiled`` choose):

* ``FusedGeM`` (a learnable or non-integer p) takes one logarithm per element and keeps only
  what the backward needs: the map r^(p-1), zeroed where the input was clamped, when x needs a
  gradient, and two sums per channel when p does.  It works in base 2 (exp2 is several times
  cheaper than exp on CPU; ln 2 is folded into the per-channel terms) and, on CPU, a few samples
  at a time in two small scratch buffers, so the only map-sized allocation is the saved r^(p-1)
  (fresh allocations and cache misses, not arithmetic, dominate there).
* ``IntegerGeM`` (a fixed integer p from 2 to ``MAX_INTEGER_P`` on CPU: the probe's and the
  fixed-p baselines' case) divides by the per-channel *mean* m instead: then r <= |X| and
  mean r = 1, so 1 <= mean r^p <= |X|^p (Jensen), and while p log2|X| stays below
  ``MAX_LOG2_POWER`` nothing overflows or underflows.  The powers are multiplications (no log
  or exp; the mean, a matrix-vector product, is cheaper than the maximum on small maps), and
  the forward keeps no map: the backward recomputes r^(p-1) from x, chunk by chunk, straight
  into the gradient.
* ``CompiledGeM`` (``gem_compiled``, ``impl: compiled``) is ``FusedGeM`` with its per-element
  pass written as whole-map operations that ``torch.compile`` fuses into one loop.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

LN2 = math.log(2.0)
CPU_CHUNK_ELEMENTS = 1 << 18  # 1 MiB of float32 per scratch buffer
MAX_INTEGER_P = 16  # the integer p of the probe and the fixed-p runs; at most 5 passes of products
MAX_LOG2_POWER = 120  # IntegerGeM's bound on p log2|X|, below float32's 2^128
_COMPILER_FAILED: set[str] = set()  # device types on which torch.compile did not work


def _per_channel(p: torch.Tensor, dims: int) -> torch.Tensor:
    """A (C,) exponent viewed to broadcast over the channels of a ``dims``-dimensional tensor."""
    return p.view(1, -1, *([1] * (dims - 2))) if p.dim() else p


def _chunk_rows(x: torch.Tensor) -> int:
    """How many samples the kernels take at a time: on CPU as many as fit CPU_CHUNK_ELEMENTS
    (at least one), elsewhere the whole batch."""
    n = x.shape[0]
    if x.device.type != "cpu":
        return max(1, n)
    return max(1, min(n, CPU_CHUNK_ELEMENTS // max(1, math.prod(x.shape[1:]))))


def _log_domain_sums(
    x: torch.Tensor, p: torch.Tensor, eps: float, need_x: bool, need_p: bool
) -> tuple[torch.Tensor, ...]:
    """With r = max(x, eps) / m: the per-channel maximum m (N, C, 1, 1), T = sum r^p, sum r^p
    log2 r when p needs a gradient, and the map r^(p-1), zeroed where x < eps, when x does."""
    n, c, h, w = x.shape
    p_map = _per_channel(p, 4)
    rows = _chunk_rows(x)
    log_ratio_buffer = x.new_empty((rows, c, h, w))
    power_buffer = torch.empty_like(log_ratio_buffer)
    peak, total = x.new_empty((n, c, 1, 1)), x.new_empty((n, c))
    weighted = x.new_empty((n, c)) if need_p else None
    slope = torch.empty_like(x) if need_x else None
    for start in range(0, n, rows):
        rows_here = slice(start, start + rows)
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
    return peak, total, weighted, slope


def _whole_map_sums(
    x: torch.Tensor, p_map: torch.Tensor, eps: float, need_x: bool, need_p: bool
) -> tuple[torch.Tensor | None, ...]:
    """What ``_log_domain_sums`` returns, written as whole-map operations for ``torch.compile``
    to fuse into one loop (r^(p-1) as r^p / r: a division, cheaper there than a second exp2)."""
    clamped = x.clamp_min(eps)
    peak = clamped.amax(dim=(2, 3), keepdim=True)
    ratio = clamped / peak
    log_ratio = torch.log2(ratio)
    power = torch.exp2(log_ratio * p_map)
    weighted = (power * log_ratio).sum(dim=(2, 3)) if need_p else None
    slope = torch.where(x >= eps, power / ratio, 0.0) if need_x else None
    return peak, power.sum(dim=(2, 3)), weighted, slope


@functools.cache
def _compiled_whole_map_sums():
    """``_whole_map_sums`` compiled for maps of any size: one compilation per dtype, device,
    gradient need and form of p (measured no slower here than kernels for fixed sizes)."""
    return torch.compile(_whole_map_sums, dynamic=True)


def _pool_and_save(
    ctx: FunctionCtx, x: torch.Tensor, p: torch.Tensor, peak: torch.Tensor, total: torch.Tensor,
    weighted: torch.Tensor | None, slope: torch.Tensor | None,
) -> torch.Tensor:
    """f = m (T / |X|)^(1/p) from the sums, saving what ``FusedGeM.backward`` needs."""
    log_mean = total.div(x.shape[2] * x.shape[3]).log2_()
    rescaled = torch.exp2(log_mean / _per_channel(p, 2))
    out = peak.flatten(1) * rescaled
    ctx.save_for_backward(p, out, total, log_mean, weighted, slope, rescaled / total)
    return out


def _row_means(x: torch.Tensor, weights: torch.Tensor, out: torch.Tensor) -> None:
    """The mean over H, W of a contiguous (rows, C, H, W) map into ``out`` (rows, C), as a
    matrix-vector product with ``weights`` = 1/|X| (twice as fast as ``mean`` on small CPU maps;
    no partial sum exceeds the largest element)."""
    torch.mv(x.view(-1, weights.numel()), weights, out=out.view(-1))


def _integer_power(base: torch.Tensor, exponent: int, out: torch.Tensor) -> torch.Tensor:
    """``base ** exponent`` for an integer exponent >= 1, into ``out`` (``base`` itself for 1):
    ``torch.pow`` for the two leading bits (one pass for 2 and 3, which it special-cases), then
    square-and-multiply."""
    if exponent == 1:
        return base
    bits = bin(exponent)[2:]
    torch.pow(base, int(bits[:2], 2), out=out)
    for bit in bits[2:]:
        out.mul_(out)
        if bit == "1":
            out.mul_(base)
    return out


class FusedGeM(torch.autograd.Function):
    """``functional.gem(x, p, eps)`` with the closed-form backward of the module docstring."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        sums = _log_domain_sums(x, p, eps, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return _pool_and_save(ctx, x, p, *sums)

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


class CompiledGeM(FusedGeM):
    """``FusedGeM`` with its per-element pass compiled into one loop (``_whole_map_sums``)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        need_x, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # detached: a compiled function is specialised on requires_grad, which does not matter here
        sums = _compiled_whole_map_sums()(x.detach(), _per_channel(p, 4).detach(), eps, need_x, need_p)
        return _pool_and_save(ctx, x, p, *sums)


class IntegerGeM(torch.autograd.Function):
    """GeM at a fixed integer p >= 2 on CPU, scaled by the per-channel mean (module docstring)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, exponent: int, eps: float) -> torch.Tensor:
        n, c, h, w = x.shape
        rows = _chunk_rows(x)
        weights = x.new_full((h * w,), 1.0 / (h * w))
        ratio_buffer = x.new_empty((rows, c, h, w))
        power_buffer = torch.empty_like(ratio_buffer)
        scale, mean_power = x.new_empty((n, c)), x.new_empty((n, c))
        for start in range(0, n, rows):
            rows_here = slice(start, start + rows)
            part = x[rows_here]
            ratio = torch.clamp_min(part, eps, out=ratio_buffer[: part.shape[0]])
            _row_means(ratio, weights, scale[rows_here])
            ratio.div_(scale[rows_here, :, None, None])
            _row_means(_integer_power(ratio, exponent, power_buffer[: part.shape[0]]), weights, mean_power[rows_here])
        rescaled = mean_power.pow(1.0 / exponent)
        ctx.save_for_backward(x, scale, rescaled / (mean_power * (h * w)))  # g / T
        ctx.exponent, ctx.eps = exponent, eps
        return scale * rescaled

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        """df/dx_i = (g / T) r_i^(p-1) where x_i >= eps, else 0, recomputed a chunk at a time:
        x is zeroed below eps (``threshold``) instead of clamped, and 0^(p-1) = 0 for p >= 2."""
        x, scale, coefficient = ctx.saved_tensors
        grad_scale = (grad_out * coefficient)[:, :, None, None]
        below_eps = _largest_below(ctx.eps, x.dtype)
        rows = _chunk_rows(x)
        ratio_buffer = x.new_empty((rows, *x.shape[1:]))
        power_buffer = torch.empty_like(ratio_buffer)
        grad_x = torch.empty_like(x)
        for start in range(0, x.shape[0], rows):
            rows_here = slice(start, start + rows)
            part = x[rows_here]
            ratio = torch.threshold(part, below_eps, 0.0, out=ratio_buffer[: part.shape[0]])
            ratio.div_(scale[rows_here, :, None, None])
            slope = _integer_power(ratio, ctx.exponent - 1, power_buffer[: part.shape[0]])
            torch.mul(slope, grad_scale[rows_here], out=grad_x[rows_here])
        return grad_x, None, None


def _largest_below(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` below ``value`` in ``dtype``: x > it exactly when x >= value."""
    of_dtype = torch.tensor(value, dtype=dtype)
    return torch.nextafter(of_dtype, torch.tensor(-math.inf, dtype=dtype)).item()


def _integer_exponent(x: torch.Tensor, p: torch.Tensor) -> int | None:
    """p as an int where ``IntegerGeM`` applies, else None: p is fixed (no gradient), on the CPU
    (reading it there costs no device sync), one integer from 2 to MAX_INTEGER_P for every
    channel, and p log2|X| < MAX_LOG2_POWER."""
    if p.requires_grad or x.device.type != "cpu" or p.device.type != "cpu":
        return None
    value = float(p.flatten()[0])
    if not (value.is_integer() and 2 <= value <= MAX_INTEGER_P) or not bool((p == value).all()):
        return None
    return int(value) if value * math.log2(x.shape[2] * x.shape[3]) < MAX_LOG2_POWER else None


def _exponent_tensor(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        return torch.tensor(float(p), dtype=x.dtype, device=x.device)
    return p.to(x.dtype)


def gem_fused(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """GeM of a float32/float64 map (N, C, H, W) with scalar or (C,) ``p``: ``IntegerGeM`` where
    it applies, else ``FusedGeM`` (the same values as ``functional.gem``; the backward is not
    itself differentiable)."""
    p = _exponent_tensor(x, p)
    exponent = _integer_exponent(x, p)
    return FusedGeM.apply(x, p, eps) if exponent is None else IntegerGeM.apply(x, exponent, eps)


def gem_compiled(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """``gem_fused`` with the per-element pass compiled by ``torch.compile`` (``CompiledGeM``).
    The first call compiles (benchmarks/RESULTS.md: seconds, more with an empty compile cache);
    where no compiler works it warns once and runs ``gem_fused``, as it does wherever that takes
    ``IntegerGeM`` (faster than any log-domain pass)."""
    # imported here: torch._dynamo takes a second to import, and only this path needs it
    from torch._dynamo.exc import BackendCompilerFailed

    p = _exponent_tensor(x, p)
    if x.device.type not in _COMPILER_FAILED and _integer_exponent(x, p) is None:
        try:
            return CompiledGeM.apply(x, p, eps)
        except BackendCompilerFailed as error:
            _COMPILER_FAILED.add(x.device.type)
            warnings.warn(
                f"GeM: torch.compile does not work on {x.device.type} ({error.inner_exception!r:.200}); "
                "running the eager fused kernel", stacklevel=2,
            )
    return gem_fused(x, p, eps)
