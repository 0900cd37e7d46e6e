"""A torchvision classification network as a backbone: its layers up to the last convolutional
block (global pool and classifier dropped), then a ReLU so the map is non-negative (for the
ResNets, whose map is post-ReLU already, it changes nothing; DenseNet's own forward applies it).

torchvision is optional (``pip install pooling-lab[vision]``) and imported only when this
backbone is built, so the rest of pooling-lab runs without it.  Weights come from a local file,
a state dict of the whole torchvision model (what ``torch.save(model.state_dict(), path)``
writes); nothing is downloaded.  Pretrained weights expect ImageNet-normalised inputs; the
loader normalises with the train split's own channel statistics, close to ImageNet's for
ImageNet subsets.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from pooling_lab.errors import UserError
from pooling_lab.models.backbones import BACKBONES
from pooling_lab.pooling import LocalPoolFactory

# Families whose map is what the children before ``avgpool`` compute in order, and families
# whose map is their ``features`` module.  Others (Inception and GoogLeNet with auxiliary heads,
# the transformers, Swin's channels-last map) are refused rather than cut wrongly.
CUT_BEFORE_AVGPOOL = ("resnet", "resnext", "wide_resnet", "regnet")
FEATURES_MODULE = ("alexnet", "convnext", "densenet", "efficientnet", "mobilenet", "vgg")
PROBE_SIDE = 64  # input side of the one forward pass that measures out_channels


@BACKBONES.register("torchvision")
class TorchvisionBackbone(nn.Module):
    """A torchvision CNN (``arch``, e.g. resnet50) up to its last convolutional block; weights
    from a local state dict file, or random (null); needs torchvision."""

    def __init__(
        self,
        in_channels: int,
        arch: str = "resnet50",
        weights: str | None = None,
        local_pool: LocalPoolFactory | None = None,
    ):
        super().__init__()
        if local_pool is not None:
            raise UserError("the torchvision backbone takes no local pool", field="model.local_pool")
        if in_channels != 3:
            raise UserError(
                f"torchvision networks take 3-channel images; these have {in_channels}",
                field="model.backbone",
            )
        model = _build(_torchvision_models(), arch)
        if weights is not None:
            _load_weights(model, Path(weights).expanduser(), arch)
        self.features = nn.Sequential(_feature_layers(model, arch), nn.ReLU())
        self.out_channels = _channels(self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _torchvision_models() -> ModuleType:
    try:
        import torchvision.models
    except (ImportError, OSError, RuntimeError) as error:  # absent, or built for another torch
        raise UserError(
            f"backbone torchvision needs torchvision, which cannot be imported ({error}): "
            f"pip install pooling-lab[vision]",
            field="model.backbone",
        ) from error
    return torchvision.models


def _build(models: ModuleType, arch: str) -> nn.Module:
    families = CUT_BEFORE_AVGPOOL + FEATURES_MODULE
    if not arch.startswith(families):
        raise UserError(
            f"{arch!r} is not a supported torchvision network; use one of the families "
            f"{', '.join(families)}",
            field="model.backbone.arch",
        )
    try:
        return models.get_model(arch, weights=None)
    except ValueError as error:
        raise UserError(f"torchvision has no {arch!r} ({error})", field="model.backbone.arch") from error


def _load_weights(model: nn.Module, path: Path, arch: str) -> None:
    field = "model.backbone.weights"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError("no such file", source=str(path), field=field) from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise UserError(f"not a readable state dict ({error})", source=str(path), field=field) from error
    if not isinstance(state, dict):
        raise UserError(f"holds a {type(state).__name__}, not a state dict", source=str(path), field=field)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise UserError(f"does not fit torchvision {arch}: {detail}", source=str(path), field=field) from error


def _feature_layers(model: nn.Module, arch: str) -> nn.Module:
    if arch.startswith(FEATURES_MODULE):
        return model.get_submodule("features")
    children = list(model.named_children())
    cut = [name for name, _ in children].index("avgpool")
    return nn.Sequential(OrderedDict(children[:cut]))


def _channels(features: nn.Module) -> int:
    """Channels of the map, measured on a zero image (in eval mode, then restored)."""
    training = features.training
    with torch.no_grad():
        out = features.eval()(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))
    features.train(training)
    return out.shape[1]
