"""Pair-loss heads: the losses of the GeM paper and of deep metric learning, computed by
pytorch-metric-learning (an optional extra: ``pip install pooling-lab[metric]``).

They have no class weights and no classifier: ``forward`` returns the L2-normalised embeddings
and ``loss`` scores every pair (or triplet) of the batch by its labels.  Runs with them report
NaN classification accuracy (``Head.classifies`` is false); the retrieval metrics carry their
evaluation.  Random batches hold few positive pairs when classes are many:
``train.batch_sampler: {m_per_class: M}`` makes every batch M images of each of batch_size / M
classes.  The library's losses index pairs with host-side counts, so a training step with these
heads waits for the device (the classifier heads do not).

Distances are Euclidean between L2-normalised embeddings (0 to 2), similarities are cosines.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from pooling_lab.errors import UserError
from pooling_lab.models.heads import HEADS, Head

Distance = Annotated[float, Field(ge=0, le=2)]  # between unit vectors
Positive = Annotated[float, Field(gt=0)]
Cosine = Annotated[float, Field(ge=-1, le=1)]
PART_NAMES = {"pos_loss": "positive", "neg_loss": "negative"}  # pytorch-metric-learning's names


def metric_losses() -> ModuleType:
    """``pytorch_metric_learning.losses``, or the one line that says how to install it."""
    try:
        from pytorch_metric_learning import losses
    except ImportError:
        raise UserError(
            "the pair-loss heads (contrastive, triplet, multi_similarity) need pytorch-metric-learning, "
            "which is not installed: pip install pooling-lab[metric]"
        ) from None
    return losses


class PairLossHead(Head):
    """Base class: the pytorch-metric-learning loss ``loss_class`` with ``options``, on the
    L2-normalised embeddings of the batch."""

    classifies = False
    loss_class: ClassVar[str]

    def __init__(self, in_features: int, num_classes: int, **options: Any):
        super().__init__(in_features, num_classes)
        self.options = options
        self.criterion = getattr(metric_losses(), self.loss_class)(**options)

    def _scores(self, x: Tensor, labels: Tensor | None) -> Tensor:
        return F.normalize(x, dim=1)

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.criterion(embeddings, labels)

    def gradient_terms(self, embeddings: Tensor, labels: Tensor, loss: Tensor) -> dict[str, Tensor] | None:
        """The library loss's own parts, each reduced as the loss reduces it (their sum is the
        loss): for the contrastive loss, its positive-pair and negative-pair terms.  None for a
        loss with a single part (triplet, multi-similarity)."""
        with torch.autocast(embeddings.device.type, enabled=False):
            parts = self.criterion.compute_loss(embeddings, labels, None, embeddings, labels)
            if len(parts) < 2:
                return None
            return {PART_NAMES.get(name, name): self.criterion.reducer({name: part}, embeddings, labels)
                    for name, part in parts.items()}

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *(f"{key}={value}" for key, value in self.options.items())])


@HEADS.register("contrastive")
class ContrastiveHead(PairLossHead):
    """Contrastive loss: positive pairs pulled within ``pos_margin``, negative pairs pushed beyond
    ``neg_margin`` (Euclidean distance of L2-normalised embeddings); no classifier.

    pytorch-metric-learning's ContrastiveLoss: the mean of max(0, d - pos_margin) over the
    positive pairs whose term is non-zero, plus the same mean of max(0, neg_margin - d) over the
    negative pairs.  The GeM paper (Radenovic et al., TPAMI 2018) squares both hinges, sums over
    mined tuples and uses neg_margin 0.7 to 0.85 (0.7 the default of its code).
    """

    loss_class = "ContrastiveLoss"

    def __init__(self, in_features: int, num_classes: int, pos_margin: Distance = 0.0, neg_margin: Distance = 0.7):
        if pos_margin >= neg_margin:
            raise ValueError(f"contrastive: pos_margin {pos_margin} must be below neg_margin {neg_margin}")
        super().__init__(in_features, num_classes, pos_margin=pos_margin, neg_margin=neg_margin)


@HEADS.register("triplet")
class TripletHead(PairLossHead):
    """Triplet loss: an anchor nearer its positive than its negative by ``margin`` (Euclidean
    distance of L2-normalised embeddings); no classifier.

    pytorch-metric-learning's TripletMarginLoss over every triplet of the batch: the mean of
    max(0, d(a, p) - d(a, n) + margin) over the triplets whose term is non-zero.
    """

    loss_class = "TripletMarginLoss"

    def __init__(self, in_features: int, num_classes: int, margin: Distance = 0.1):
        super().__init__(in_features, num_classes, margin=margin)


@HEADS.register("multi_similarity")
class MultiSimilarityHead(PairLossHead):
    """Multi-similarity loss (Wang et al., CVPR 2019) on cosine similarities; no classifier.

    pytorch-metric-learning's MultiSimilarityLoss, without the paper's pair mining: the mean
    over anchors i of (1/alpha) log(1 + sum_pos exp(-alpha (S_ip - base))) +
    (1/beta) log(1 + sum_neg exp(beta (S_in - base))).
    """

    loss_class = "MultiSimilarityLoss"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        alpha: Positive = 2.0,
        beta: Positive = 50.0,
        base: Cosine = 0.5,
    ):
        super().__init__(in_features, num_classes, alpha=alpha, beta=beta, base=base)
