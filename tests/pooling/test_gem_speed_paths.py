"""The faster GeM kernels against plain autograd of the formula (mean max(x, eps)^p)^(1/p) in
float64: ``IntegerGeM`` (what ``gem_fused`` takes for a fixed integer p on CPU), where it
applies and where not, its numerics at the edges; ``CompiledGeM`` (``gem_compiled``, ``impl:
compiled``), its gradients in x and p, and its fallback where torch.compile does not work."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from pooling_lab.pooling import build_pool, fused, gem, gem_fused
from pooling_lab.pooling.fused import gem_compiled

from .helpers import positive_map, seeded

C = 3
EPS = 1e-6
# torch.compile's own machinery still calls a deprecated torch.jit decorator
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def formula(x: torch.Tensor, p) -> torch.Tensor:
    """GeM written out, differentiated by autograd: the reference."""
    p = torch.as_tensor(p, dtype=x.dtype)
    p_map = p.view(1, -1, 1, 1) if p.dim() else p
    return x.clamp_min(EPS).pow(p_map).mean(dim=(2, 3)).pow(1 / p)


def post_relu_map(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """About half exact zeros, and elements at and just below eps, where the clamp's gradient
    switches off."""
    x = torch.randn(n, C, h, w, generator=seeded(seed), dtype=torch.float64).relu()
    x[0, 0, :3, 0] = torch.tensor([EPS, EPS * (1 - 1e-9), EPS * (1 + 1e-9)], dtype=torch.float64)
    return x


def values_and_gradients(pool, x: torch.Tensor, p, weights: torch.Tensor, p_learns: bool = False):
    """The pooled values, their kernel (grad_fn class) and the gradients of sum(weights * out) in
    x and (when it learns) in p."""
    a = x.clone().requires_grad_()
    q = torch.tensor(p, dtype=x.dtype, requires_grad=p_learns)
    out = pool(a, q)
    (out * weights).sum().backward()
    return out.detach(), type(out.grad_fn).__name__, a.grad, q.grad


# --- IntegerGeM -------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2.0, 3.0, 4.0, 5.0, 7.0, 16.0])
def test_fixed_integer_p_takes_the_integer_kernel_with_the_formulas_numbers(p):
    x = post_relu_map(4, 5, 6, seed=20)
    weights = torch.randn(4, C, generator=seeded(21), dtype=torch.float64)
    out, kernel, grad_x, _ = values_and_gradients(gem_fused, x, p, weights)
    expected, _, expected_grad_x, _ = values_and_gradients(formula, x, p, weights)
    assert kernel == "IntegerGeMBackward"
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=1e-12, atol=1e-15)
    assert torch.equal(grad_x == 0, expected_grad_x == 0)  # the clamp's mask, to the last element


@pytest.mark.parametrize("p", [3.0, 16.0])
def test_integer_kernel_in_float32_is_as_close_as_float32_allows(p):
    x = post_relu_map(4, 7, 7, seed=22)
    weights = torch.randn(4, C, generator=seeded(23), dtype=torch.float64)
    out, kernel, grad_x, _ = values_and_gradients(gem_fused, x.float(), p, weights.float())
    expected, _, expected_grad_x, _ = values_and_gradients(formula, x, p, weights)
    assert kernel == "IntegerGeMBackward"
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_x.double(), expected_grad_x, rtol=1e-5, atol=1e-7)


def test_integer_kernel_gradcheck():
    x = positive_map(2, C, 3, 4, seed=24, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: gem_fused(a, 3.0), (x,))


def test_integer_kernel_keeps_huge_tiny_and_dead_channels_finite():
    """Activations of 1e30 next to 1e-30, and a channel of zeros (GeM = eps), at p = 16 on a 7x7
    map: the mean scaling keeps every power in range.  (x^16 overflows even float64 here, so the
    reference is the max-scaled ``functional.gem``.)"""
    x = positive_map(2, C, 7, 7, seed=25, dtype=torch.float64)
    x[0, 0] *= 1e30
    x[0, 1] *= 1e-30
    x[1, 2] = 0.0
    out, kernel, grad_x, _ = values_and_gradients(gem_fused, x.float(), 16.0, torch.ones(2, C))
    expected, _, expected_grad_x, _ = values_and_gradients(gem, x, 16.0, torch.ones(2, C, dtype=torch.float64))
    assert kernel == "IntegerGeMBackward"
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=0)
    assert out[1, 2] == pytest.approx(EPS, rel=1e-6)
    assert torch.isfinite(grad_x).all()
    torch.testing.assert_close(grad_x.double(), expected_grad_x, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    ("p", "learns", "size", "why"),
    [
        (3.0, True, 4, "p learns"),
        (2.5, False, 4, "not an integer"),
        (1.0, False, 4, "below 2: the recomputed gradient needs 0^(p-1) = 0"),
        (17.0, False, 4, "above MAX_INTEGER_P"),
        (16.0, False, 256, "p log2|X| = 16 * 16 >= MAX_LOG2_POWER: the powers could overflow"),
        ([3.0, 3.0, 4.0], False, 4, "channels differ"),
    ],
)
def test_the_integer_kernel_is_left_where_it_does_not_apply(p, learns, size, why):
    x = post_relu_map(2, size, 1, seed=26)
    weights = torch.randn(2, C, generator=seeded(27), dtype=torch.float64)
    out, kernel, grad_x, _ = values_and_gradients(gem_fused, x, p, weights, p_learns=learns)
    expected, _, expected_grad_x, _ = values_and_gradients(formula, x, p, weights, p_learns=learns)
    assert kernel == "FusedGeMBackward", why
    torch.testing.assert_close(out, expected, rtol=1e-11, atol=0)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=1e-9, atol=1e-15)


def test_per_channel_p_with_one_integer_takes_the_integer_kernel():
    x = post_relu_map(2, 4, 4, seed=28)
    _, kernel, _, _ = values_and_gradients(gem_fused, x, [3.0] * C, torch.ones(2, C, dtype=torch.float64))
    assert kernel == "IntegerGeMBackward"


@pytest.mark.parametrize("chunk", [1, 50])
def test_integer_kernel_chunks_do_not_change_the_result(monkeypatch, chunk):
    x = post_relu_map(5, 4, 3, seed=29)
    weights = torch.randn(5, C, generator=seeded(30), dtype=torch.float64)
    whole = values_and_gradients(gem_fused, x, 3.0, weights)
    monkeypatch.setattr(fused, "CPU_CHUNK_ELEMENTS", chunk)
    chunked = values_and_gradients(gem_fused, x, 3.0, weights)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(chunked[2], whole[2], rtol=1e-14, atol=0)


def test_an_exponent_off_the_cpu_is_never_read():
    """Reading p off the CPU would be a host sync per step on CUDA; a meta tensor has no values
    to read, so the kernel choice must work without them (and take FusedGeM)."""
    x = torch.empty(2, C, 4, 4, device="meta", requires_grad=True)
    out = gem_fused(x, torch.tensor(3.0, device="meta"))
    assert out.shape == (2, C) and type(out.grad_fn).__name__ == "FusedGeMBackward"


# --- CompiledGeM ------------------------------------------------------------------------------


def compiler_present() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None


@pytest.mark.parametrize("p", [3.0, [1.5, 3.0, 7.0]], ids=["shared", "per_channel"])
def test_compiled_equals_float64_autograd_in_x_and_p(p):
    x = post_relu_map(3, 5, 6, seed=31)
    weights = torch.randn(3, C, generator=seeded(32), dtype=torch.float64)
    out, kernel, grad_x, grad_p = values_and_gradients(gem_compiled, x, p, weights, p_learns=True)
    expected, _, expected_grad_x, expected_grad_p = values_and_gradients(formula, x, p, weights, p_learns=True)
    assert kernel == ("CompiledGeMBackward" if compiler_present() else "FusedGeMBackward")
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(grad_p, expected_grad_p, rtol=1e-10, atol=1e-15)


def test_compiled_leaves_a_fixed_integer_p_to_the_integer_kernel():
    x = post_relu_map(2, 4, 4, seed=35)
    weights = torch.ones(2, C, dtype=torch.float64)
    out, kernel, grad_x, _ = values_and_gradients(gem_compiled, x, 3.0, weights)
    expected, _, expected_grad_x, _ = values_and_gradients(formula, x, 3.0, weights)
    assert kernel == "IntegerGeMBackward"
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=1e-12, atol=1e-15)


def test_impl_compiled_selects_the_compiled_kernel_with_the_fused_numbers():
    x = positive_map(2, C, 4, 4, seed=33)
    compiled, eager = build_pool("gem", C, impl="compiled"), build_pool("gem", C)
    out = compiled(x)
    assert type(out.grad_fn).__name__ == ("CompiledGeMBackward" if compiler_present() else "FusedGeMBackward")
    torch.testing.assert_close(out, eager(x), rtol=1e-6, atol=0)
    out.sum().backward()
    eager(x).sum().backward()
    torch.testing.assert_close(compiled.p.grad, eager.p.grad, rtol=1e-5, atol=0)


def test_compiled_falls_back_to_the_eager_kernel_once_where_no_compiler_works(monkeypatch):
    """A compiler that does not exist: one warning, then the eager kernel's numbers, and no second
    attempt (no second warning)."""
    import torch._dynamo
    import torch._inductor.config

    monkeypatch.setattr(fused, "_COMPILER_FAILED", set())
    fused._compiled_whole_map_sums.cache_clear()
    torch._dynamo.reset()
    x = post_relu_map(2, 3, 5, seed=34)
    p = torch.tensor([2.5, 3.0, 4.5], dtype=torch.float64)
    try:
        with torch._inductor.config.patch({"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False}):
            with pytest.warns(UserWarning, match="torch.compile does not work on cpu"):
                first = gem_compiled(x, p)
            second = gem_compiled(x, p)
    finally:
        fused._compiled_whole_map_sums.cache_clear()
        torch._dynamo.reset()
    assert "cpu" in fused._COMPILER_FAILED
    torch.testing.assert_close(first, gem_fused(x, p), rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
