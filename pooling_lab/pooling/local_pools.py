"""Local pools: a 2x downsampling inside a backbone, (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)).

Regions.  Unless its docstring says otherwise, a pool cuts each channel into 2x2 regions R with
stride 2; on an odd-sized map the last row / column of regions is one pixel wide (``ceil_mode``).
So ``max`` is exactly the native 2x2 max pool of ``small_cnn``, and a 1x1 map stays 1x1.  Means
divide by the number of pixels in R (``count_include_pad=False``); learned filters see a region
zero-padded to 2x2.  ``conv`` (a 3x3 stride-2 convolution) and ``fractional_max`` (pseudo-random
overlapping windows) use their own windows with the same output size.

Inputs are post-ReLU (non-negative).  Every pool computes in float32 with autocast off (the
base ``Pool.forward``).  The exponent p of ``lp`` and the blend alpha of ``mixed`` are pooling
parameters (traced, in the optimiser's pooling group); the learned filters of ``gated`` and
``tree`` are traced but train as ordinary weights, like the weights of ``conv``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pooling_lab.pooling.base import FixedPool, MixedMaxAvg, Pool
from pooling_lab.pooling.functional import power_mean
from pooling_lab.registry import Registry

LOCAL_POOLS = Registry("local_pool", context=("channels",))

LocalPoolFactory = Callable[[int], nn.Module]
"""Given a channel count, a module that halves the map: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)).
A backbone given one uses it at every downsampling point instead of its own downsampling."""


def halved(size: int) -> int:
    return -(-size // 2)


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """y = max_R x."""
    return F.max_pool2d(x, 2, ceil_mode=True)


def avg_pool2(x: torch.Tensor) -> torch.Tensor:
    """y = (1/|R|) sum_R x, |R| counting only pixels inside the map."""
    return F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)


def lp_pool2(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Power mean over each region, y = ((1/|R|) sum_R x^p)^(1/p), stable for any p > 0:
    ``functional.power_mean`` over the four pixels of each region, stacked on a new axis, so
    every region is divided by its own maximum.  An odd edge is padded with a copy of the last
    row / column, which counts each pixel of a one-wide region twice and so keeps its mean."""
    corners = blocks(x, "replicate").permute(0, 1, 3, 5, 2, 4).flatten(2, 3)  # (N, C, 4, H', W')
    return power_mean(corners, p, dims=(2,), eps=eps).squeeze(2)


def blocks(x: torch.Tensor, pad: str = "constant") -> torch.Tensor:
    """The 2x2 regions as axes 3 and 5: (N, C, H, W) -> (N, C, H', 2, W', 2); an odd edge is
    padded with zeros (``constant``) or with a copy of the last row / column (``replicate``)."""
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode=pad)
    return x.view(n, c, halved(h), 2, halved(w), 2)


def regions(x: torch.Tensor) -> torch.Tensor:
    """The 2x2 regions as a last axis: (N, C, H, W) -> (N, C, H', W', 4), zero-padded at odd edges."""
    return blocks(x).permute(0, 1, 2, 4, 3, 5).flatten(4)


def rounded(values: torch.Tensor) -> list:
    return torch.round(values.detach().double(), decimals=4).tolist()


@LOCAL_POOLS.register("max")
class LocalMaxPool(FixedPool):
    """Max pooling, y = max_R x over 2x2 regions.

    Boureau, Ponce & LeCun, ICML 2010, "A Theoretical Analysis of Feature Pooling in Visual
    Recognition".
    """

    function = staticmethod(max_pool2)


@LOCAL_POOLS.register("avg")
class LocalAvgPool(FixedPool):
    """Average pooling, y = (1/|R|) sum_R x over 2x2 regions.

    Boureau, Ponce & LeCun, ICML 2010, "A Theoretical Analysis of Feature Pooling in Visual
    Recognition".
    """

    function = staticmethod(avg_pool2)


@LOCAL_POOLS.register("lp")
class LocalLpPool(Pool):
    """Lp (GeM) pooling over 2x2 regions, y = ((1/|R|) sum_R x^p)^(1/p), one p per layer.

    p = 1 is average pooling, p -> inf max pooling (Sermanet et al., ICPR 2012, "Convolutional
    neural networks applied to house numbers digit classification"; the region form of GeM,
    Radenovic et al., TPAMI 2018).  ``learnable: false`` keeps p as a fixed buffer.
    """

    def __init__(
        self,
        channels: int,
        p: Annotated[float, Field(gt=0, description="initial exponent")] = 3.0,
        learnable: bool = True,
        eps: Annotated[float, Field(gt=0, lt=1, description="clamp floor of the input")] = 1e-6,
    ):
        super().__init__()
        self.eps = eps
        self.declare("p", p, 1, "direct", learnable, exponent=True)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return lp_pool2(x, self.effective("p")[0], self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps:g}"


@LOCAL_POOLS.register("mixed")
class LocalMixedPool(MixedMaxAvg):
    """Mixed max-average pooling, y = alpha max_R x + (1 - alpha) mean_R x over 2x2 regions,
    one alpha per layer (Lee, Gallagher & Tu, AISTATS 2016)."""

    average, maximum = staticmethod(avg_pool2), staticmethod(max_pool2)


@LOCAL_POOLS.register("gated")
class LocalGatedPool(Pool):
    """Gated max-average pooling, y = s max_R x + (1 - s) mean_R x with s = sigmoid(w . x_R).

    Lee, Gallagher & Tu, AISTATS 2016 ("Mixed, Gated, and Tree"): the mix responds to each
    region through one learned 2x2 gating mask w per layer, shared by all channels; w starts at
    0 (s = 1/2).  w is traced, and trains as an ordinary weight (base optimiser group).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(4))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lerp(avg_pool2(x), max_pool2(x), torch.sigmoid(regions(x) @ self.gate))

    def traced(self) -> dict[str, tuple[torch.Tensor, nn.Parameter]]:
        return {"gate": (self.gate.detach(), self.gate)}

    def group_parameters(self) -> list[nn.Parameter]:
        return []

    def extra_repr(self) -> str:
        return f"gate={rounded(self.gate)}"


@LOCAL_POOLS.register("tree")
class LocalTreePool(Pool):
    """Tree pooling: learned pooling filters at the leaves of a binary tree, merged by gates.

    Lee, Gallagher & Tu, AISTATS 2016 ("Mixed, Gated, and Tree").  A leaf m is a 2x2 filter,
    f_m = v_m . x_R; an internal node n with children a, b gives
    f_n = sigmoid(w_n . x_R) f_a + (1 - sigmoid(w_n . x_R)) f_b, and y = f_root.  A tree of
    ``depth`` levels has 2^(depth-1) leaves and 2^(depth-1) - 1 gates (depth 2: one gate, two
    leaves), shared by all channels.  Leaves start uniform in [0, 1/2] (the average filter plus
    noise, so they differ), gates at 0.  Both are traced, and train as ordinary weights.
    """

    def __init__(self, channels: int, depth: Annotated[int, Field(ge=2, le=4)] = 2):
        super().__init__()
        leaves = 2 ** (depth - 1)
        self.depth = depth
        self.leaves = nn.Parameter(torch.rand(leaves, 4) / 2)
        self.gates = nn.Parameter(torch.zeros(leaves - 1, 4))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        # nodes in heap order: node i has children 2i+1 and 2i+2; the leaves come last
        responses = regions(x) @ torch.cat([self.gates, self.leaves]).T
        gates = len(self.gates)
        nodes = list(responses.unbind(-1))
        for i in reversed(range(gates)):
            s = torch.sigmoid(nodes[i])
            nodes[i] = s * nodes[2 * i + 1] + (1.0 - s) * nodes[2 * i + 2]
        return nodes[0]

    def traced(self) -> dict[str, tuple[torch.Tensor, nn.Parameter]]:
        return {"leaves": (self.leaves.detach(), self.leaves), "gates": (self.gates.detach(), self.gates)}

    def group_parameters(self) -> list[nn.Parameter]:
        return []

    def extra_repr(self) -> str:
        return f"depth={self.depth}, leaves={rounded(self.leaves)}, gates={rounded(self.gates)}"


@LOCAL_POOLS.register("stochastic")
class LocalStochasticPool(Pool):
    """Stochastic pooling (Zeiler & Fergus, ICLR 2013) over 2x2 regions.

    With probabilities p_i = x_i / sum_R x, training outputs x_i for one i drawn from p (the
    gradient goes to that pixel); eval outputs the expectation sum_R p_i x_i
    = sum_R x^2 / sum_R x, deterministic.  Negative inputs count as 0, and an all-zero region
    gives 0.
    """

    def __init__(self, channels: int):
        super().__init__()

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        windows = regions(x.clamp_min(0.0))
        if not self.training:
            return (windows * windows).sum(-1) / windows.sum(-1).clamp_min(1e-12)
        # inverse CDF: the first i whose cumulative sum exceeds u * total, u ~ U[0, 1)
        cumulative = windows.cumsum(-1)
        threshold = torch.rand_like(cumulative[..., -1:]) * cumulative[..., -1:]
        index = (cumulative <= threshold).sum(-1, keepdim=True).clamp_max(windows.shape[-1] - 1)
        return windows.gather(-1, index).squeeze(-1)


@LOCAL_POOLS.register("fractional_max")
class LocalFractionalMaxPool(Pool):
    """Fractional max pooling (Graham, 2014, "Fractional Max-Pooling") with output ratio 1/2.

    y_ij = max of x over the window starting at (a_i, b_j), a_i = floor((i + u) alpha) -
    floor(u alpha), alpha = (H - k) / (H' - 1), with overlapping 3x3 windows (fewer on maps
    too small for them), as ``torch.nn.functional.fractional_max_pool2d``.  Exactly at ratio 1/2
    disjoint 2x2 regions would be the regular grid; the overlapping windows still get
    pseudo-random offsets.  Training draws u per sample and channel; eval fixes u = 1/2, so the
    regions are the same on every call.
    """

    def __init__(self, channels: int):
        super().__init__()

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out = (halved(h), halved(w))
        kernel = (min(3, h - out[0] + 1), min(3, w - out[1] + 1))
        samples = None if self.training else x.new_full((n, c, 2), 0.5)
        return F.fractional_max_pool2d(x, kernel, output_size=out, _random_samples=samples)


@LOCAL_POOLS.register("conv")
class LocalConvPool(Pool):
    """Learned downsampling by a strided convolution, y = W * x + b (3x3, stride 2, padding 1).

    Springenberg et al., ICLR 2015 workshop, "Striving for Simplicity: The All Convolutional
    Net".  Maps H to ceil(H/2) like ResNet's stride-2 convolutions; its weights are ordinary
    weights (base optimiser group), not traced.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def extra_repr(self) -> str:
        return f"weight_norm={self.conv.weight.detach().norm().item():.4f}"


def local_pool_factory(spec: Mapping[str, Any]) -> LocalPoolFactory:
    """A backbone's ``local_pool`` from a config mapping such as ``{"name": "lp", "p": 3.0}``.

    The options are validated against the pool's schema now, so a bad spec fails before any
    model is built; the factory then builds one pool per downsampling point from its channels.
    """
    options = dict(spec)
    name = options.pop("name")
    LOCAL_POOLS.get(name).spec_model(name=name, **options)

    def build(channels: int) -> Pool:
        return LOCAL_POOLS.build(name, channels=channels, **options)

    return build
