"""Heads: embeddings (N, D) -> the scores their loss takes; for the classifiers, logits (N, num_classes).

``linear`` is the plain softmax classifier.  ``cosine``, ``arcface``, ``subcenter_arcface``,
``curricularface`` and ``cosface`` score the cosine between the L2-normalised embedding and each
L2-normalised class weight; all but the first add a margin to the target class.  A margin is
applied only when ``forward`` is given labels, so an evaluation call (``labels=None``) returns
plain scaled cosines whose argmax is the prediction.  The pair-loss heads, which have no
classifier, are in ``pair_heads``.

Heads compute in at least float32 with autocast disabled inside, so cosines and margins are never
evaluated in bf16/fp16; under autocast the logits come back as float32.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from pooling_lab.registry import Registry

HEADS = Registry("head", context=("in_features", "num_classes"))

Scale = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
AngularMargin = Annotated[float, Field(ge=0, lt=math.pi)]
LabelSmoothing = Annotated[float, Field(ge=0, lt=1)]
CURRICULUM_MOMENTUM = 0.01  # CurricularFace: t <- 0.01 mean cos(theta_y) + 0.99 t (the paper's alpha)


def build_head(name: str, in_features: int, num_classes: int, **kwargs: Any) -> Head:
    """Validate ``kwargs`` against the schema of head ``name``, then build it."""
    return HEADS.build(name, in_features=in_features, num_classes=num_classes, **kwargs)


def cosine_matrix(x: Tensor, weight: Tensor) -> Tensor:
    """cos(theta_ij) between embedding row i of ``x`` and class weight row j of ``weight``."""
    return F.normalize(x, dim=1) @ F.normalize(weight, dim=1).T


def sine_from_cosine(cos: Tensor) -> Tensor:
    """sin(theta) = sqrt(max(1 - cos^2, 0)) for theta in [0, pi].

    The derivative -cos/sin is infinite at cos = +-1 (the angle has a kink there); there the
    gradient is taken as 0 instead of NaN/inf: the inner ``where`` keeps sqrt away from 0.
    """
    sin_sq = (1 - cos * cos).clamp(min=0)
    inside = sin_sq > 0
    return torch.where(inside, sin_sq.where(inside, 1.0).sqrt(), 0.0)


def shifted_cosine(cos: Tensor, margin: float) -> Tensor:
    """cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m), with no acos."""
    return cos * math.cos(margin) - sine_from_cosine(cos) * math.sin(margin)


def arcface_target(cos: Tensor, margin: float) -> Tensor:
    """ArcFace's target cosine: cos(theta + m), or cos(theta) - m sin(m) where theta + m > pi."""
    # theta + m <= pi  <=>  cos(theta) >= cos(pi - m) = -cos(m)
    return torch.where(cos >= -math.cos(margin), shifted_cosine(cos, margin), cos - margin * math.sin(margin))


class Head(nn.Module):
    """Base class of every head: ``forward`` maps the embeddings to the scores ``loss`` takes.

    ``classifies`` says whether those scores are class logits whose argmax predicts the class;
    a head without a classifier (the pair-loss heads) reports no classification accuracy.
    """

    classifies: ClassVar[bool] = True

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            return self._scores(embeddings.to(dtype), labels)

    def _scores(self, x: Tensor, labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def gradient_terms(self, scores: Tensor, labels: Tensor, loss: Tensor) -> dict[str, Tensor] | None:
        """Named scalars whose gradients, with respect to anything before the head, are the parts
        of ``loss``'s gradient that flow through different scores and add up to it (see
        ``train.gradient_split``); None for a head that does not split its loss."""
        return None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"


class SoftmaxHead(Head):
    """Base class of the classifiers: owns ``weight`` (num_classes, in_features) and the
    cross-entropy loss."""

    def __init__(self, in_features: int, num_classes: int, label_smoothing: float):
        super().__init__(in_features, num_classes)
        self.label_smoothing = float(label_smoothing)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))

    def _scores(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """Logits (N, num_classes); a margin, if the head has one, only when ``labels`` are given."""
        return self._logits(x, self.weight.to(x.dtype), labels)

    def _logits(self, x: Tensor, weight: Tensor, labels: Tensor | None) -> Tensor:
        raise NotImplementedError

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross entropy with this head's label smoothing."""
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def gradient_terms(self, logits: Tensor, labels: Tensor, loss: Tensor) -> dict[str, Tensor]:
        """Through each image's target logit (with its margin) and through its other logits: with
        g = dloss/dlogits held fixed, sum(g * logits) over either set of entries has the gradient
        of that set's part by the chain rule."""
        (slope,) = torch.autograd.grad(loss, logits, retain_graph=True)
        weighted = slope.detach() * logits
        target = F.one_hot(labels, logits.shape[1]).bool()
        return {"target": weighted.masked_fill(~target, 0).sum(), "non_target": weighted.masked_fill(target, 0).sum()}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, label_smoothing={self.label_smoothing}"


@HEADS.register("linear")
class LinearHead(SoftmaxHead):
    """Plain softmax classifier: logits = x W^T + b."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        bias: bool = True,
        label_smoothing: LabelSmoothing = 0.0,
    ):
        super().__init__(in_features, num_classes, label_smoothing)
        self.bias = nn.Parameter(torch.empty(num_classes)) if bias else None
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default: U(-1/sqrt(D), 1/sqrt(D))
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def _logits(self, x: Tensor, weight: Tensor, labels: Tensor | None) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.bias is not None}"


@HEADS.register("cosine")
class CosineHead(SoftmaxHead):
    """Normalised softmax: logits = s * cos(theta_j), theta_j the angle to class weight j.

    Margin heads subclass it and override ``target_cosine`` (and ``other_cosines``, to change the
    other classes' cosines; ``class_cosines``, to score a class by several weights).  After every
    forward with labels, ``last_target_angle`` holds the batch mean of theta_y (radians, angle to
    the own class weight) as a detached 0-dim tensor on the logits' device (None before the
    first), so a recorder can trace it without a host sync.
    """

    last_target_angle: Tensor | None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: Scale = 16.0,
        label_smoothing: LabelSmoothing = 0.0,
    ):
        super().__init__(in_features, num_classes, label_smoothing)
        self.scale = float(scale)
        self.last_target_angle = None
        nn.init.normal_(self.weight, std=in_features**-0.5)  # isotropic, rows of about unit norm

    def _logits(self, x: Tensor, weight: Tensor, labels: Tensor | None) -> Tensor:
        cos = self.class_cosines(x, weight)
        if labels is not None:
            index = labels.unsqueeze(1)
            target = cos.gather(1, index)
            self.last_target_angle = target.detach().clamp(-1, 1).acos().mean()
            cos = self.other_cosines(cos, target).scatter(1, index, self.target_cosine(target))
        return self.scale * cos

    def class_cosines(self, x: Tensor, weight: Tensor) -> Tensor:
        """cos(theta_j) to every class j, (N, num_classes)."""
        return cosine_matrix(x, weight)

    def target_cosine(self, cos: Tensor) -> Tensor:
        """The target class's cosine after the margin (none for the plain cosine head)."""
        return cos

    def other_cosines(self, cos: Tensor, target: Tensor) -> Tensor:
        """The cosines (N, num_classes) as training scores them, given the target cosines (N, 1);
        the target column is replaced afterwards.  Unchanged here."""
        return cos

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


@HEADS.register("arcface")
class ArcFaceHead(CosineHead):
    """ArcFace: additive angular margin, target logit s * cos(theta_y + m), m in radians.

    cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m), with no acos.  Where theta_y + m > pi
    the target falls back to cos(theta_y) - m sin(m), which keeps it decreasing in theta_y (for
    any m < 2.3, as cos(m) + m sin(m) >= 1 there).  With ``easy_margin`` the margin is applied
    only where cos(theta_y) > 0.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: Scale = 30.0,
        margin: AngularMargin = 0.5,
        easy_margin: bool = False,
        label_smoothing: LabelSmoothing = 0.0,
    ):
        super().__init__(in_features, num_classes, scale, label_smoothing)
        self.margin = float(margin)
        self.easy_margin = easy_margin

    def target_cosine(self, cos: Tensor) -> Tensor:
        if self.easy_margin:
            return torch.where(cos > 0, shifted_cosine(cos, self.margin), cos)
        return arcface_target(cos, self.margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, easy_margin={self.easy_margin}"


@HEADS.register("cosface")
class CosFaceHead(CosineHead):
    """CosFace: additive cosine margin, target logit s * (cos(theta_y) - m)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: Scale = 30.0,
        margin: NonNegative = 0.35,
        label_smoothing: LabelSmoothing = 0.0,
    ):
        super().__init__(in_features, num_classes, scale, label_smoothing)
        self.margin = float(margin)

    def target_cosine(self, cos: Tensor) -> Tensor:
        return cos - self.margin

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


@HEADS.register("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    """Sub-center ArcFace: several weights (centers) per class, a class scored by its nearest
    centre, then the ArcFace margin (radians) and scale.

    Deng et al., ECCV 2020 (the Google Landmark 2020/2021 winners' loss): a class whose images
    form several clusters, or hold noise, spreads over its centres instead of pulling all into
    one.  cos(theta_c) = max over the centres of class c; the weight holds the centres of class c
    in rows c * centers to (c + 1) * centers - 1.  With one centre it is ``arcface``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        centers: Annotated[int, Field(ge=1)] = 3,
        scale: Scale = 30.0,
        margin: AngularMargin = 0.5,
        easy_margin: bool = False,
        label_smoothing: LabelSmoothing = 0.0,
    ):
        super().__init__(in_features, num_classes * centers, scale, margin, easy_margin, label_smoothing)
        self.num_classes = num_classes
        self.centers = centers

    def class_cosines(self, x: Tensor, weight: Tensor) -> Tensor:
        return cosine_matrix(x, weight).unflatten(1, (self.num_classes, self.centers)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, centers={self.centers}"


@HEADS.register("curricularface")
class CurricularFaceHead(ArcFaceHead):
    """CurricularFace: the ArcFace target s cos(theta_y + m) (radians), and hard negatives, the
    classes j with cos(theta_j) > cos(theta_y + m), scored s cos(theta_j) (t + cos(theta_j)).

    Huang et al., CVPR 2020 (the loss of the CVNet weights).  t follows the batch mean target
    cosine, t <- 0.01 mean cos(theta_y) + 0.99 t from t = 0: early in training t is small and hard
    negatives count less, as t grows they count more.  t is a buffer (in the state dict, so a
    resumed run goes on from it), updated by every forward with labels in training mode before
    the negatives are scored, as in the authors' code.  As there, the hardness test uses
    cos(theta_y + m) itself, also where the target falls back to ArcFace's cos(theta_y) - m sin(m).
    """

    t: Tensor

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: Scale = 64.0,
        margin: AngularMargin = 0.5,
        label_smoothing: LabelSmoothing = 0.0,
    ):
        super().__init__(in_features, num_classes, scale, margin, False, label_smoothing)
        self.register_buffer("t", torch.zeros(()))

    def other_cosines(self, cos: Tensor, target: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.t.lerp_(target.mean().to(self.t.dtype), CURRICULUM_MOMENTUM)
        t = self.t.to(cos.dtype)
        hard = cos > shifted_cosine(target, self.margin)
        return torch.where(hard, cos * (t + cos), cos)
