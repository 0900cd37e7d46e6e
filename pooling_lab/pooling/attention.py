"""Attention pooling: a learned query attends over the H x W locations of the map."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from pooling_lab.pooling.base import Pool
from pooling_lab.pooling.global_pools import GLOBAL_POOLS


@GLOBAL_POOLS.register("attention")
class AttentionPool(Pool):
    """Attention pooling, f_h = sum_l softmax_l(q_h . k_hl / sqrt(d)) v_hl for a learned query q.

    Pooling by multihead attention (Lee et al., "Set Transformer", ICML 2019): per head h with
    d = C / heads, k_l = W_k x_l and v_l = W_v x_l + b_v over the H W locations l, and
    f = W_o [f_1; ...; f_heads] + b_o.  All of it is ordinary network weight (base optimiser
    group); nothing is traced.
    """

    def __init__(
        self,
        channels: int,
        heads: Annotated[int, Field(ge=1, description="attention heads; must divide the channels")] = 1,
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads={heads} must divide the {channels} channels")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(channels))
        self.key = nn.Linear(channels, channels, bias=False)  # a key bias shifts all scores alike
        self.value = nn.Linear(channels, channels)
        self.proj = nn.Linear(channels, channels)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        head_dim = c // self.heads
        tokens = x.flatten(2).transpose(1, 2)
        keys = self.key(tokens).unflatten(2, (self.heads, head_dim))
        values = self.value(tokens).unflatten(2, (self.heads, head_dim))
        scores = torch.einsum("nlhd,hd->nhl", keys, self.query.view(self.heads, head_dim))
        weights = (scores / math.sqrt(head_dim)).softmax(dim=2)
        return self.proj(torch.einsum("nhl,nlhd->nhd", weights, values).reshape(n, c))

    def extra_repr(self) -> str:
        return f"heads={self.heads}"
