"""Backbones and the classifier builder: shapes by hand (conv arithmetic), ReLU outputs, pools."""

from __future__ import annotations

import pytest
import torch

from pooling_lab.config import ExperimentConfig
from pooling_lab.models import BACKBONES, build_model
from pooling_lab.pooling import Pool


def experiment(backbone: dict, **model) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "models",
        "data": {"dataset": "synthetic"},
        "model": {"backbone": backbone, **model},
    })


def images(n: int, channels: int, size: int) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


# 2x2 max pools with ceil_mode between stages: 28 -> 14 -> 7, 32 -> 16 -> 8, 28 -> 14 -> 7 -> 4.
# resnet18_cifar: three stride-2 3x3 convs with padding 1: s -> floor((s - 1) / 2) + 1.
@pytest.mark.parametrize(
    ("spec", "channels", "size", "expected"),
    [
        ({"name": "small_cnn", "width": 8, "depth": 3}, 1, 28, (32, 7, 7)),
        ({"name": "small_cnn", "width": 8, "depth": 3}, 3, 32, (32, 8, 8)),
        ({"name": "small_cnn", "width": 4, "depth": 4, "convs_per_stage": 2}, 1, 28, (32, 4, 4)),
        ({"name": "resnet18_cifar", "width": 4}, 1, 28, (32, 4, 4)),
        ({"name": "resnet18_cifar", "width": 4}, 3, 32, (32, 4, 4)),
    ],
)
def test_backbone_output_shape_and_sign(spec, channels, size, expected):
    options = dict(spec)
    backbone = BACKBONES.build(options.pop("name"), in_channels=channels, **options)
    out = backbone(images(2, channels, size))
    assert out.shape == (2, *expected)
    assert backbone.out_channels == expected[0]
    assert (out >= 0).all() and (out > 0).any()


@pytest.mark.parametrize("embedding_dim", [None, 16])
@pytest.mark.parametrize(("backbone", "channels", "size"), [("small_cnn", 1, 28), ("resnet18_cifar", 3, 32)])
def test_classifier_embed_and_forward(embedding_dim, backbone, channels, size):
    config = experiment({"name": backbone, "width": 4}, embedding_dim=embedding_dim)
    model = build_model(config, in_channels=channels, num_classes=5)
    batch = images(3, channels, size)
    width = model.backbone.out_channels if embedding_dim is None else embedding_dim
    assert model.embed(batch).shape == (3, width)
    assert model(batch).shape == (3, 5)
    labels = torch.tensor([0, 4, 2])
    assert model(batch, labels).shape == (3, 5)
    # without a projection the embedding is the pooled map itself
    if embedding_dim is None:
        torch.testing.assert_close(model.embed(batch), model.pool(model.backbone(batch)))


def test_pools_finds_the_global_pool():
    config = experiment({"name": "small_cnn", "width": 4}, pool={"name": "gem", "p": 2.0, "mode": "per_channel"})
    model = build_model(config, in_channels=1, num_classes=3)
    (name, pool), = model.pools()
    assert name == "pool" and pool is model.pool and isinstance(pool, Pool)
    assert pool.p.shape == (model.backbone.out_channels,)
    assert pool.p.tolist() == [2.0] * model.backbone.out_channels


def test_pool_width_sizes_the_head():
    config = experiment({"name": "small_cnn", "width": 4, "depth": 2}, pool={"name": "avg"})
    model = build_model(config, in_channels=3, num_classes=7)
    assert model.head.weight.shape == (7, 8)
    assert [name for name, _ in model.pools()] == ["pool"]
