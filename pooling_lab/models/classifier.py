"""The classifier every run trains: backbone -> global pool -> optional embedding -> head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pooling_lab.models.heads import Head
from pooling_lab.pooling import Pool


class Embedding(nn.Module):
    """Linear projection of the pooled descriptor, optionally batch-normalised (else with a bias).

    With ``normalize_input`` the descriptor is L2-normalised first: without batch norm that is
    the learned whitening of the GeM paper (Radenovic et al., TPAMI 2018: pool, L2, a linear
    layer with bias, L2), whose last L2 normalisation the cosine and pair-loss heads and the
    retrieval metrics apply.
    """

    def __init__(self, in_features: int, dim: int, batch_norm: bool, normalize_input: bool = False):
        super().__init__()
        self.normalize_input = normalize_input
        self.linear = nn.Linear(in_features, dim, bias=not batch_norm)
        self.norm: nn.Module = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            x = F.normalize(x, dim=1)
        return self.norm(self.linear(x))

    def extra_repr(self) -> str:
        return f"normalize_input={self.normalize_input}"


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, pool: Pool, embedding: nn.Module, head: Head):
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        self.embedding = embedding
        self.head = head

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The descriptor the head sees (after pooling and projection, not normalised)."""
        return self.embedding(self.pool(self.backbone(images)))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's output (with the margin where labels are given) and the descriptor it saw.
        The training step goes through here, so that a DistributedDataParallel wrapper sees
        every parameter's use."""
        embeddings = self.embed(images)
        return self.head(embeddings, labels), embeddings

    def pools(self) -> list[tuple[str, Pool]]:
        """Every pooling module with its dotted name (global pool and any local pools)."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, Pool)]
