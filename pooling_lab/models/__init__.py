"""Build the classifier of a run from its config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from pooling_lab.models import pair_heads  # noqa: F401  (registers the pair-loss heads)
from pooling_lab.models.backbones import BACKBONES
from pooling_lab.models.classifier import Classifier, Embedding
from pooling_lab.models.fast_cifar import FastCifar
from pooling_lab.models.heads import build_head
from pooling_lab.models.resnet import ResNet
from pooling_lab.models.torchvision_backbone import TorchvisionBackbone
from pooling_lab.models.vit import ViT
from pooling_lab.pooling import build_pool
from pooling_lab.pooling.local_pools import local_pool_factory

if TYPE_CHECKING:
    from pooling_lab.experiment import ExperimentConfig


def build_model(config: ExperimentConfig, in_channels: int, num_classes: int) -> Classifier:
    backbone_spec = config.model.backbone.model_dump()
    local_pool = config.model.local_pool
    backbone = BACKBONES.build(
        backbone_spec.pop("name"), in_channels=in_channels,
        local_pool=local_pool_factory(local_pool.model_dump()) if local_pool is not None else None,
        **backbone_spec,
    )
    pool_spec = config.model.pool.model_dump()
    pool = build_pool(pool_spec.pop("name"), backbone.out_channels, **pool_spec)
    width = pool.out_features(backbone.out_channels)
    embedding: nn.Module = nn.Identity()
    if config.model.embedding_dim is not None:
        embedding = Embedding(width, config.model.embedding_dim, config.model.embedding_norm, config.model.normalize_pooled)
        width = config.model.embedding_dim
    head_spec = config.head.model_dump()
    head = build_head(head_spec.pop("name"), width, num_classes, **head_spec)
    return Classifier(backbone, pool, embedding, head)


__all__ = ["BACKBONES", "Classifier", "FastCifar", "ResNet", "TorchvisionBackbone", "ViT", "build_model"]
