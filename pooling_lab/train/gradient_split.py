"""Where the pull on p comes from: the gradient of the loss with respect to each learnable pooling
parameter, split into the parts that reach it through different scores.

A classifier head splits it into the part through each image's target logit and the part through
its other logits; the contrastive head into the part through the positive pairs and the part
through the negative pairs (``Head.gradient_terms``).  The parts add up to the whole gradient.
Recorded, with ``record.gradient_split``, at the steps the pooling trace records, before the
update, into ``grad_split.csv``: one row per step, parameter and part, the part's mean over the
parameter's elements (a per-channel p gives its mean).  The parts stay on the device until the
records are saved, so recording adds no host wait to a step.  Under torchrun they are averaged
over the ranks, as the gradient is.
"""

from __future__ import annotations

import pandas as pd
import torch

from pooling_lab.models.classifier import Classifier
from pooling_lab.train.distributed import World

COLUMNS = ["step", "epoch", "module", "param", "part", "grad"]


class GradientSplit:
    def __init__(self, model: Classifier, world: World):
        self.head = model.head
        self.world = world
        self.traced = [
            (module, name, parameter)
            for module, pool in model.pools()
            for name, (_, parameter) in pool.traced().items()
            if parameter.requires_grad
        ]
        self._rows: list[tuple[int, float, list[str], torch.Tensor]] = []

    def capture(self, step: int, epoch: float, loss: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """The split of this step's gradient, recorded as the step ``step`` (the graph of ``loss``
        is kept for the step's own backward pass)."""
        terms = self.head.gradient_terms(scores, labels, loss) if self.traced else None
        if terms is None:
            return
        parameters = [parameter for *_, parameter in self.traced]
        parts = []
        for term in terms.values():
            grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
            parts.append(torch.stack([
                grad.float().mean() if grad is not None else torch.zeros((), device=loss.device) for grad in grads
            ]))
        split = torch.stack(parts)  # (parts, parameters)
        self._rows.append((step, epoch, list(terms), self.world.mean_(split)))

    def drain(self) -> pd.DataFrame:
        """The rows captured since the last drain (one host copy)."""
        rows, self._rows = self._rows, []
        if not rows:
            return pd.DataFrame(columns=COLUMNS)
        values = torch.stack([split for *_, split in rows]).double().cpu().numpy()
        return pd.DataFrame([
            {"step": step, "epoch": round(epoch, 6), "module": module, "param": name, "part": part,
             "grad": values[row, index, column]}
            for row, (step, epoch, parts, _) in enumerate(rows)
            for index, part in enumerate(parts)
            for column, (module, name, _) in enumerate(self.traced)
        ], columns=COLUMNS)
