"""ImageNet ResNets written here, their local-pool variant, and the optional torchvision backbone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest
import torch

from pooling_lab.errors import UserError
from pooling_lab.models import BACKBONES
from pooling_lab.models.backbones import BasicBlock
from pooling_lab.models.resnet import Bottleneck
from pooling_lab.pooling import Pool
from pooling_lab.pooling.local_pools import local_pool_factory


def images(n: int, size: int, channels: int = 3) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


# Stem conv (7x7, stride 2, padding 3) and max pool (3x3, stride 2, padding 1) each map s to
# ceil(s / 2), as do the three strided stages: 64 -> 32 -> 16 -> 16 -> 8 -> 4 -> 2, and
# 50 -> 25 -> 13 -> 13 -> 7 -> 4 -> 2.
@pytest.mark.parametrize(
    ("name", "channels", "blocks", "block_type"),
    [("resnet18", 64, 8, BasicBlock), ("resnet34", 64, 16, BasicBlock), ("resnet50", 256, 16, Bottleneck)],
)
@pytest.mark.parametrize(("size", "side"), [(64, 2), (50, 2), (32, 1)])
def test_resnet_output_shape_and_sign(name, channels, blocks, block_type, size, side):
    backbone = BACKBONES.build(name, in_channels=3, width=8)
    assert backbone.out_channels == channels
    assert len(backbone.stages) == blocks and all(type(b) is block_type for b in backbone.stages)
    out = backbone(images(2, size))
    assert out.shape == (2, channels, side, side)
    assert (out >= 0).all() and (out > 0).any()


@pytest.mark.parametrize(
    ("name", "channels", "parameters"),
    # torchvision's published totals (11,689,512, 21,797,672, 25,557,032) minus the 1000-way
    # fc layer (512 * 1000 + 1000, and 2048 * 1000 + 1000 for ResNet-50)
    [("resnet18", 512, 11_176_512), ("resnet34", 512, 21_284_672), ("resnet50", 2048, 23_508_032)],
)
def test_default_width_matches_the_published_networks(name, channels, parameters):
    backbone = BACKBONES.build(name, in_channels=3)
    assert backbone.out_channels == channels
    assert sum(p.numel() for p in backbone.parameters()) == parameters


def test_grey_input_and_gradient_reach_every_parameter():
    backbone = BACKBONES.build("resnet50", in_channels=1, width=4)
    batch = images(2, 40, channels=1).requires_grad_()
    backbone(batch).pow(3).mean().backward()
    assert batch.grad is not None and batch.grad.abs().sum() > 0
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_local_pool_replaces_the_stem_max_pool_and_the_strides(name):
    factory = local_pool_factory({"name": "lp"})
    backbone = BACKBONES.build(name, in_channels=3, width=8, local_pool=factory)
    pools = [m for m in backbone.modules() if isinstance(m, Pool)]
    assert len(pools) == 4 and isinstance(backbone.stem[3], Pool)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in backbone.modules())
    assert backbone.stem[0].stride == (2, 2)  # the strided stem convolution stays
    strided = [m for m in backbone.stages.modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)]
    assert strided == []
    out = backbone(images(2, 50))
    assert out.shape == (2, backbone.out_channels, 2, 2) and (out >= 0).all()


def test_native_resnet_strides_the_first_block_of_stages_2_to_4():
    backbone = BACKBONES.build("resnet50", in_channels=3, width=4)
    first_blocks = [backbone.stages[i] for i in (0, 3, 7, 13)]
    assert [b.conv2.stride[0] for b in first_blocks] == [1, 2, 2, 2]
    assert [b.conv1.stride[0] for b in first_blocks] == [1, 1, 1, 1]  # the 3x3 strides, not the 1x1
    assert not any(isinstance(m, Pool) for m in backbone.modules())


# ---------------------------------------------------------------- torchvision


def test_torchvision_backbone_without_torchvision_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now fails
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(UserError, match=r"pip install pooling-lab\[vision\]") as caught:
        BACKBONES.build("torchvision", in_channels=3, arch="resnet18")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("model.backbone: ")


def test_core_imports_and_builds_a_resnet_without_torchvision():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torchvision"] = None  # as if it were not installed
        import torch
        import pooling_lab.cli, pooling_lab.experiment, pooling_lab.data, pooling_lab.run.sweep
        from pooling_lab.models import BACKBONES
        out = BACKBONES.build("resnet18", in_channels=3, width=4)(torch.zeros(2, 3, 32, 32))
        assert out.shape == (2, 32, 1, 1)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


class StandIn(torch.nn.Module):
    """Shaped like a torchvision ResNet: children conv1 ... avgpool, fc, run in that order."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, 2, 1)
        self.layer1 = torch.nn.Conv2d(6, 10, 3, 2, 1)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.avgpool(self.layer1(self.conv1(x))).flatten(1))


@pytest.fixture
def stand_in_torchvision(monkeypatch) -> types.ModuleType:
    """A torchvision whose get_model knows one network, resnet_standin."""

    def get_model(name: str, weights: object = None) -> torch.nn.Module:
        assert weights is None
        if name != "resnet_standin":
            raise ValueError(f"Unknown model {name}")
        return StandIn()

    models = types.ModuleType("torchvision.models")
    models.get_model = get_model
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return models


def test_torchvision_backbone_cuts_before_avgpool_and_loads_weights(tmp_path, stand_in_torchvision):
    reference = StandIn()
    torch.save(reference.state_dict(), tmp_path / "weights.pt")
    backbone = BACKBONES.build("torchvision", in_channels=3, arch="resnet_standin", weights=str(tmp_path / "weights.pt"))
    assert backbone.out_channels == 10 and backbone.training
    x = images(2, 16)
    out = backbone(x)
    assert out.shape == (2, 10, 4, 4) and (out >= 0).all()
    torch.testing.assert_close(out, torch.relu(reference.layer1(reference.conv1(x))))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="other.pt: model.backbone.weights: does not fit torchvision resnet_standin"):
        BACKBONES.build("torchvision", in_channels=3, arch="resnet_standin", weights=str(tmp_path / "other.pt"))
    with pytest.raises(UserError, match="model.backbone.weights: no such file"):
        BACKBONES.build("torchvision", in_channels=3, arch="resnet_standin", weights=str(tmp_path / "none.pt"))
    with pytest.raises(UserError, match="model.backbone.arch: torchvision has no 'resnet_other'"):
        BACKBONES.build("torchvision", in_channels=3, arch="resnet_other")
    with pytest.raises(UserError, match="'vit_b_16' is not a supported torchvision network"):
        BACKBONES.build("torchvision", in_channels=3, arch="vit_b_16")
    with pytest.raises(UserError, match="3-channel"):
        BACKBONES.build("torchvision", in_channels=1, arch="resnet_standin")


def test_torchvision_backbone_loads_local_weights(tmp_path):
    models = pytest.importorskip("torchvision.models", reason="torchvision is not installed (pip install pooling-lab[vision])")
    reference = models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pt")
    backbone = BACKBONES.build("torchvision", in_channels=3, arch="resnet18", weights=str(tmp_path / "resnet18.pt"))
    assert backbone.out_channels == 512
    torch.testing.assert_close(backbone.features[0][0].weight, reference.conv1.weight)
    backbone.eval()
    reference.eval()
    x = images(2, 64)
    out = backbone(x)
    assert out.shape == (2, 512, 2, 2) and (out >= 0).all()
    with torch.no_grad():
        expected = reference.fc(out.mean(dim=(2, 3)))
        torch.testing.assert_close(expected, reference(x))  # the cut is exactly before avgpool
    wrong = models.resnet34(weights=None).state_dict()
    torch.save(wrong, tmp_path / "resnet34.pt")
    with pytest.raises(UserError, match="does not fit torchvision resnet18"):
        BACKBONES.build("torchvision", in_channels=3, arch="resnet18", weights=str(tmp_path / "resnet34.pt"))
    with pytest.raises(UserError, match="not a supported torchvision network"):
        BACKBONES.build("torchvision", in_channels=3, arch="vit_b_16")
