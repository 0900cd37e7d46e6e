"""The GeM family: one exponent core (``GeM``) and the pools that reshape the map before it.

Every member takes the same exponent options: ``mode`` (one ``shared`` p, one p
``per_channel``, or one p per ``group`` of C/G consecutive channels), ``param`` (p stored
``direct``ly, as q with p = 1 + softplus(q) > 1, or as q with p = exp(q) > 0), ``learnable``,
``eps`` and ``impl`` (the fused closed-form backward, the same compiled by torch.compile, or
plain autograd; same values).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from pooling_lab.pooling.base import Pool
from pooling_lab.pooling.functional import gem, regional_gem, rescale, resize
from pooling_lab.pooling.fused import gem_compiled, gem_fused
from pooling_lab.pooling.global_pools import GLOBAL_POOLS

InitialP = Annotated[float, Field(gt=0, description="initial exponent p")]
Mode = Literal["shared", "per_channel", "group"]
Groups = Annotated[int, Field(ge=1, description="number of p groups (mode: group)")]
Param = Literal["direct", "softplus", "log"]
Eps = Annotated[float, Field(gt=0, lt=1, description="clamp floor of the input")]
Impl = Literal["fused", "compiled", "autograd"]
Scales = Annotated[tuple[Annotated[float, Field(gt=0)], ...], Field(min_length=1, description="resize factors")]

GEM_IMPLS = {"fused": gem_fused, "compiled": gem_compiled, "autograd": gem}


@GLOBAL_POOLS.register("gem")
class GeM(Pool):
    """Generalised-mean pooling, f_k = (mean x_k^p)^(1/p); p shared, per channel or per group.

    Radenovic, Tolias & Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI
    2018; p = 1 is average pooling and p -> inf max pooling.  ``mode: group`` is Group GeM (Ko,
    Gu & Kim, "Group Generalized Mean Pooling for Vision Transformer", 2022): G = 1 is shared
    p, G = C per-channel p.  ``impl: fused`` (the default) runs the closed-form backward of
    ``fused.py``, several times faster than autograd on CPU (a fixed integer p takes its
    kernel without log or exp); ``compiled`` compiles its per-element pass with torch.compile
    (faster again for a learnable p, after seconds of compiling per map shape; the eager kernel
    where no compiler works); ``autograd`` is needed only for second derivatives.
    """

    def __init__(
        self,
        channels: int,
        p: InitialP = 3.0,
        learnable: bool = True,
        mode: Mode = "shared",
        groups: Groups = 1,
        param: Param = "direct",
        eps: Eps = 1e-6,
        impl: Impl = "fused",
    ):
        super().__init__()
        if p <= eps:
            raise ValueError(f"p={p} must exceed eps={eps}")
        if mode != "group" and groups != 1:
            raise ValueError(f"groups={groups} needs mode: group (mode is {mode})")
        if channels % groups:
            raise ValueError(f"groups={groups} must divide the {channels} channels")
        size = {"shared": 1, "per_channel": channels, "group": groups}[mode]
        self.declare("p", p, size, param, learnable, exponent=True)
        self.channels, self.mode, self.groups, self.eps, self.impl = channels, mode, groups, eps, impl
        self.p_param, self.p_learnable = param, learnable  # variants with exponents of their own follow these

    def exponent(self) -> torch.Tensor:
        """p as the core takes it: a scalar (shared) or one value per channel, shape (C,)."""
        p = self.effective("p")
        return p[0] if self.mode == "shared" else p.repeat_interleave(self.channels // p.numel())

    def generalised_mean(self, x: torch.Tensor) -> torch.Tensor:
        return GEM_IMPLS[self.impl](x, self.exponent(), self.eps)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.generalised_mean(x)

    def extra_repr(self) -> str:
        groups = f"groups={self.groups}, " if self.mode == "group" else ""
        return f"{super().extra_repr()}, mode={self.mode}, {groups}eps={self.eps:g}, impl={self.impl}"


@GLOBAL_POOLS.register("wgem")
class WeightedGeM(GeM):
    """Weighted GeM, f_k = GeM_p(w * x_k) with a learnable spatial soft mask w = sigmoid(a).

    Wu et al., "Weighted Generalized Mean Pooling for Deep Image Retrieval", ICIP 2018.  The
    mask is stored at ``mask_size`` x ``mask_size`` and resized bilinearly to the input's
    H x W, so any map size works; it starts at 0.5 everywhere (GeM is homogeneous, so that is
    GeM / 2).  It always learns (``learnable`` is about p), is traced as a distribution and
    trains in the optimiser's base group.
    """

    def __init__(
        self,
        channels: int,
        mask_size: Annotated[int, Field(ge=1, description="side of the stored mask")] = 8,
        **gem: Any,
    ):
        super().__init__(channels, **gem)
        self.mask_size = mask_size
        self.declare("mask", 0.5, mask_size * mask_size, "sigmoid", learnable=True)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.effective("mask").view(1, 1, self.mask_size, self.mask_size)
        return self.generalised_mean(x * resize(mask, (x.shape[2], x.shape[3])))

    def group_parameters(self) -> list[nn.Parameter]:
        return [parameter for name, (_, parameter) in self.traced().items() if name != "mask"]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_size={self.mask_size}"


@GLOBAL_POOLS.register("agem")
class AttentionGeM(GeM):
    """Attention-aware GeM, f_k = GeM_p(a * x_k) with a learned location weight a.

    Gu, Li & Xie, "Attention-aware Generalized Mean Pooling for Image Retrieval", 2018.  A 1x1
    convolution scores each location: a = sigmoid(w . x + b), or a = H W softmax(w . x) over the
    locations.  The convolution starts at zero (a = 1/2, or 1 with softmax), is an ordinary
    network weight (base optimiser group) and is not traced; p is.
    """

    def __init__(
        self,
        channels: int,
        attention: Literal["sigmoid", "softmax"] = "sigmoid",
        **gem: Any,
    ):
        super().__init__(channels, **gem)
        self.attention = attention
        # a bias shifts every score alike, which a softmax ignores
        self.score = nn.Conv2d(channels, 1, kernel_size=1, bias=attention == "sigmoid")
        nn.init.zeros_(self.score.weight)
        if self.score.bias is not None:
            nn.init.zeros_(self.score.bias)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        score = self.score(x)
        if self.attention == "sigmoid":
            weight = torch.sigmoid(score)
        else:
            weight = score.flatten(2).softmax(dim=2).view_as(score) * (x.shape[2] * x.shape[3])
        return self.generalised_mean(x * weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, attention={self.attention}"


@GLOBAL_POOLS.register("rgem")
class RegionalGeM(GeM):
    """Regional GeM, f = GeM_p((x + L_q(x)) / 2) with L_q a local Lp pool of exponent q.

    Shao et al., "Global Features are All You Need for Image Retrieval and Reranking", ICCV
    2023.  L_q pools each ``kernel_size`` square with its own learnable q (``p_local``), stride 1,
    same size.  Both exponents share ``learnable`` and ``param``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: Annotated[int, Field(ge=1, description="side of the local Lp window")] = 3,
        p_local: Annotated[float, Field(gt=0, description="initial exponent of the local Lp pool")] = 3.0,
        **gem: Any,
    ):
        super().__init__(channels, **gem)
        self.kernel_size = kernel_size
        self.declare("p_local", p_local, 1, self.p_param, self.p_learnable, exponent=True)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        local = regional_gem(x, self.effective("p_local")[0], self.kernel_size, self.eps)
        return self.generalised_mean(0.5 * (x + local))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"


@GLOBAL_POOLS.register("sgem")
class ScaleGeM(GeM):
    """Scale GeM, f = combine_s GeM_p(resize_s(x)) over several map scales, by max or mean.

    After the Scale-GeM of Shao et al., "Global Features are All You Need for Image Retrieval
    and Reranking", ICCV 2023: the map is resized bilinearly by each factor in ``scales`` and
    the descriptors are combined element-wise by ``max`` or ``mean``.
    """

    def __init__(
        self,
        channels: int,
        scales: Scales = (1.0, 0.5),
        combine: Literal["max", "mean"] = "max",
        **gem: Any,
    ):
        super().__init__(channels, **gem)
        self.scales, self.combine = tuple(scales), combine

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        descriptors = torch.stack([self.generalised_mean(rescale(x, scale)) for scale in self.scales])
        return descriptors.amax(dim=0) if self.combine == "max" else descriptors.mean(dim=0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scales={list(self.scales)}, combine={self.combine}"

