"""A small Vision Transformer whose output tokens form a feature map for the global pool.

Dosovitskiy et al., ICLR 2021, "An Image is Worth 16x16 Words"; the tiny size (dim 192, 12
blocks, 3 heads) is DeiT-Ti's (Touvron et al., ICML 2021).  There is no class token: the
(H/patch) x (W/patch) output tokens are reshaped into a (N, dim, H', W') map, so any global pool,
Group GeM included, reads them like a CNN's map.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pooling_lab.models.backbones import BACKBONES
from pooling_lab.pooling import LocalPoolFactory


class SelfAttention(nn.Module):
    """Multi-head self-attention, softmax(Q K^T / sqrt(d_head)) V per head, then a projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(n, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@BACKBONES.register("vit_tiny")
class ViT(nn.Module):
    """ViT-tiny for small images: ``patch_size`` patches, learned position embeddings, ``depth``
    pre-norm blocks, then a final LayerNorm and a ReLU, so the map is non-negative (post-ReLU,
    like the CNN backbones, as GeM expects).

    32x32 inputs at patch 4 give an 8x8 map of ``dim`` channels.  The position embeddings are
    learned for an ``image_size`` grid and resized bicubically for other sizes (divisible by
    the patch), e.g. 28x28 Fashion-MNIST or test-time scales.  Local pools do not apply: a
    ``local_pool`` is an error.
    """

    def __init__(
        self,
        in_channels: int,
        dim: Annotated[int, Field(ge=8, le=1024)] = 192,
        depth: Annotated[int, Field(ge=1, le=24)] = 12,
        heads: Annotated[int, Field(ge=1, le=16)] = 3,
        mlp_ratio: Annotated[float, Field(gt=0, le=8)] = 4.0,
        patch_size: Annotated[int, Field(ge=1, le=16)] = 4,
        image_size: Annotated[int, Field(ge=1, le=512)] = 32,
        local_pool: LocalPoolFactory | None = None,
    ):
        super().__init__()
        if local_pool is not None:
            raise ValueError("vit_tiny has no downsampling points: a local pool does not apply to it")
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} must be divisible by patch_size={patch_size}")
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        grid = image_size // patch_size
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, dim, grid, grid), std=0.02))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            size = tuple(x.shape[-2:])
            raise ValueError(f"image size {size} is not divisible by patch_size={self.patch_size}")
        x = self.patch_embed(x)
        n, dim, h, w = x.shape
        pos = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)
        tokens = torch.relu(self.norm(self.blocks(tokens)))
        return tokens.transpose(1, 2).reshape(n, dim, h, w)
