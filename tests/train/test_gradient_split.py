"""The split of p's gradient: the parts add up to the gradient, and each part is the gradient
through its own scores, computed here independently by detaching the other scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import build_model
from pooling_lab.train.distributed import SINGLE
from pooling_lab.train.gradient_split import GradientSplit

HEADS = [
    {"name": "linear"},
    {"name": "arcface", "scale": 30.0, "margin": 0.3},
    {"name": "cosface", "scale": 30.0, "margin": 0.2},
    {"name": "subcenter_arcface", "scale": 30.0, "margin": 0.3},
    {"name": "curricularface", "scale": 30.0, "margin": 0.3},
]


def model_with(head: dict) -> torch.nn.Module:
    config = ExperimentConfig.model_validate({
        "name": "split", "data": {"dataset": "synthetic"}, "head": head, "model": {
            "backbone": {"name": "small_cnn", "width": 4, "depth": 2}, "pool": {"name": "gem", "p": 3.0}, "embedding_dim": 8,
        },
    })
    torch.manual_seed(0)
    return build_model(config, in_channels=1, num_classes=4).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 12, 12, generator=generator, dtype=torch.float64), torch.arange(12) % 4


def split_of(model: torch.nn.Module, scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The recorded split for the scores of one forward pass (whose graph stays usable)."""
    split = GradientSplit(model, SINGLE)
    split.capture(1, 0.5, model.head.loss(scores, labels), scores, labels)
    frame = split.drain()
    assert frame[["step", "epoch", "module", "param"]].drop_duplicates().values.tolist() == [[1, 0.5, "pool", "p"]]
    return dict(zip(frame["part"], frame["grad"], strict=True))


@pytest.mark.parametrize("head", HEADS, ids=lambda head: head["name"])
def test_a_classifier_splits_p_gradient_into_target_and_other_logits(head: dict) -> None:
    model, (images, labels) = model_with(head), batch()
    logits, _ = model(images, labels)  # one forward: CurricularFace moves its running t in each
    parts = split_of(model, logits, labels)
    p = model.pool.p
    (whole,) = torch.autograd.grad(model.head.loss(logits, labels), p, retain_graph=True)
    target = F.one_hot(labels, 4).bool()
    only_target = torch.where(target, logits, logits.detach())  # the others held fixed
    (through_target,) = torch.autograd.grad(model.head.loss(only_target, labels), p)

    assert list(parts) == ["target", "non_target"]
    assert parts["target"] == pytest.approx(through_target.item(), rel=1e-6, abs=1e-9)
    assert parts["target"] + parts["non_target"] == pytest.approx(whole.item(), rel=1e-6, abs=1e-9)
    assert abs(parts["non_target"]) > 1e-6  # both parts are there to compare


def test_the_contrastive_head_splits_into_positive_and_negative_pairs() -> None:
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import ContrastiveLoss

    model, (images, labels) = model_with({"name": "contrastive", "pos_margin": 0.0, "neg_margin": 1.9}), batch()
    scores, _ = model(images, labels)
    parts = split_of(model, scores, labels)
    (whole,) = torch.autograd.grad(model.head.loss(scores, labels), model.pool.p, retain_graph=True)
    # the positive-pair term alone: the same loss with a negative margin no distance falls below
    (positive,) = torch.autograd.grad(ContrastiveLoss(pos_margin=0.0, neg_margin=0.0)(scores, labels), model.pool.p)

    assert list(parts) == ["positive", "negative"]
    assert parts["positive"] == pytest.approx(positive.item(), rel=1e-6, abs=1e-9)
    assert parts["positive"] + parts["negative"] == pytest.approx(whole.item(), rel=1e-6, abs=1e-9)
    assert parts["negative"] != 0


def test_a_head_with_one_loss_term_and_a_fixed_p_record_nothing() -> None:
    pytest.importorskip("pytorch_metric_learning")
    images, labels = batch()
    triplet = model_with({"name": "triplet"})
    assert split_of_empty(triplet, images, labels)
    fixed = model_with({"name": "linear"})
    fixed.pool.p.requires_grad_(False)
    assert split_of_empty(fixed, images, labels)


def split_of_empty(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> bool:
    split = GradientSplit(model, SINGLE)
    scores, _ = model(images, labels)
    split.capture(1, 0.5, model.head.loss(scores, labels), scores, labels)
    return split.drain().empty
