"""Backbones and the classifier builder: shapes by hand (conv arithmetic), ReLU outputs, pools."""

from __future__ import annotations

import pytest
import torch

from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import BACKBONES, build_model
from pooling_lab.models.vit import ViT
from pooling_lab.pooling import Pool
from pooling_lab.pooling.local_pools import LOCAL_POOLS, local_pool_factory


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
    logits, embeddings = model(batch)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(embeddings, model.embed(batch))
    labels = torch.tensor([0, 4, 2])
    assert model(batch, labels)[0].shape == (3, 5)
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


# A local pool replaces every downsampling point and halves with ceil, like the native ones:
# small_cnn depth 3 has 2 (28 -> 14 -> 7), resnet18_cifar 3 (28 -> 14 -> 7 -> 4), fast_cifar 3
# (32 -> 16 -> 8 -> 4, ending at 4 * width channels).
@pytest.mark.parametrize("local_pool", LOCAL_POOLS.names())
@pytest.mark.parametrize(
    ("spec", "channels", "size", "expected", "points"),
    [
        ({"name": "small_cnn", "width": 4, "depth": 3}, 1, 28, (16, 7, 7), 2),
        ({"name": "resnet18_cifar", "width": 4}, 3, 28, (32, 4, 4), 3),
        ({"name": "fast_cifar", "width": 8}, 3, 32, (32, 4, 4), 3),
    ],
)
def test_every_backbone_takes_every_local_pool(local_pool, spec, channels, size, expected, points):
    options = dict(spec)
    factory = local_pool_factory({"name": local_pool})
    backbone = BACKBONES.build(options.pop("name"), in_channels=channels, local_pool=factory, **options)
    pools = [module for module in backbone.modules() if isinstance(module, Pool)]
    assert len(pools) == points and all(type(p) is LOCAL_POOLS.get(local_pool).factory for p in pools)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in backbone.modules())
    out = backbone(images(2, channels, size))
    assert out.shape == (2, *expected)
    assert (out >= 0).all() and (out > 0).any()


def test_resnet_block_pools_once_for_both_paths():
    """The first block of a stage pools at the incoming width; conv1 and the shortcut see the
    pooled map at stride 1."""
    factory = local_pool_factory({"name": "avg"})
    backbone = BACKBONES.build("resnet18_cifar", in_channels=3, width=4, local_pool=factory)
    block = backbone.stages[2]
    assert isinstance(block.pool, Pool) and block.conv1.stride == (1, 1)
    assert block.conv1.in_channels == 4 and block.conv1.out_channels == 8
    x = torch.relu(images(2, 4, 9))
    pooled = torch.nn.functional.avg_pool2d(x, 2, ceil_mode=True)
    block.eval()
    residual = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(pooled)))))
    torch.testing.assert_close(block(x), torch.relu(residual + block.shortcut(pooled)))


def test_native_downsampling_is_unchanged_without_a_local_pool():
    small = BACKBONES.build("small_cnn", in_channels=1, width=4)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in small.modules()) == 2
    resnet = BACKBONES.build("resnet18_cifar", in_channels=3, width=4)
    strides = [block.conv1.stride[0] for block in resnet.stages]
    assert strides == [1, 1, 2, 1, 2, 1, 2, 1]
    assert not any(isinstance(m, Pool) for m in resnet.modules())


def test_vit_tiny_default_map_is_non_negative_8x8_of_192():
    torch.manual_seed(0)
    vit = BACKBONES.build("vit_tiny", in_channels=3)
    assert isinstance(vit, ViT) and vit.out_channels == 192 and len(vit.blocks) == 12
    with torch.no_grad():
        out = vit(images(1, 3, 32))
    assert out.shape == (1, 192, 8, 8)
    assert (out >= 0).all() and (out > 0).any()


def test_vit_gradient_reaches_input_and_every_parameter():
    torch.manual_seed(0)
    vit = BACKBONES.build("vit_tiny", in_channels=3, dim=24, depth=2, heads=3)
    batch = images(2, 3, 32).requires_grad_()
    out = vit(batch)
    assert out.shape == (2, 24, 8, 8)
    out.pow(3).mean().backward()  # a GeM-like weighting of the map
    assert batch.grad is not None and batch.grad.abs().sum() > 0
    for name, parameter in vit.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_vit_tokens_are_the_map_locations():
    """Each output location is its own token: the map is (N, dim, H/patch, W/patch), and changing
    one patch of the image changes (through attention) every location but mostly its own."""
    torch.manual_seed(0)
    vit = BACKBONES.build("vit_tiny", in_channels=1, dim=32, depth=2, heads=4, patch_size=4).eval()
    x = images(1, 1, 28)
    out = vit(x)  # position embeddings resized from the 8x8 grid to 7x7
    assert out.shape == (1, 32, 7, 7)
    bumped = x.clone()
    bumped[..., 8:12, 12:16] += 3.0  # the patch of token (2, 3)
    change = (vit(bumped) - out).abs().sum(dim=1)[0]
    assert change.argmax().item() == 2 * 7 + 3


def test_vit_rejects_local_pools_and_bad_shapes():
    with pytest.raises(ValueError, match="local pool"):
        BACKBONES.build("vit_tiny", in_channels=3, local_pool=local_pool_factory({"name": "max"}))
    with pytest.raises(ValueError, match="divisible by heads"):
        BACKBONES.build("vit_tiny", in_channels=3, dim=64, heads=3)
    vit = BACKBONES.build("vit_tiny", in_channels=3, dim=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="patch_size"):
        vit(images(1, 3, 30))


def test_fast_cifar_native_downsampling_shapes():
    backbone = BACKBONES.build("fast_cifar", in_channels=3, width=8)
    out = backbone(images(2, 3, 32))
    assert backbone.out_channels == 32 and out.shape == (2, 32, 4, 4)
    assert (out >= 0).all()
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in backbone.modules()) == 3
