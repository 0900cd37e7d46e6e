"""The evaluation of a trained model, one entry for the end of training and for a re-probe:
the metrics on the validation and test splits at the test-time scales of ``eval``, and the
test-time p probe (its table on val, p_opt and the rest of ``probe_summary`` on val, the test
metrics at p_opt).

Under the closed-set protocol every metric of a split comes from one pass over it.  Under the
open-set protocol accuracy comes from the seen-class images of the split, the retrieval metrics
(and so the probe) from its unseen-class images; the probe then measures retrieval only.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from pooling_lab.data import DataSplits
from pooling_lab.data.loader import BatchLoader
from pooling_lab.evaluate.passes import SplitPass, split_metrics
from pooling_lab.evaluate.probe import metrics_at, probe, probe_summary
from pooling_lab.experiment import EvalConfig
from pooling_lab.models.classifier import Classifier
from pooling_lab.pooling.exponent import global_p

ACCURACY = "accuracy"


@dataclass(frozen=True)
class EvalBatches:
    """The evaluation splits as batches on the device: in order, whole, not augmented; the
    unseen-class ones only under the open-set protocol (``DataSplits``)."""

    val: BatchLoader | None
    test: BatchLoader
    unseen_val: BatchLoader | None = None
    unseen_test: BatchLoader | None = None

    @classmethod
    def of(cls, data: DataSplits, batch_size: int, device: torch.device, channels_last: bool) -> EvalBatches:
        def batches(split: Any) -> BatchLoader | None:
            if split is None:
                return None
            return BatchLoader(split, batch_size, shuffle=False, drop_last=False, augment=None, generator=None,
                               device=device, mean=data.mean, std=data.std, channels_last=channels_last)

        return cls(batches(data.val), batches(data.test), batches(data.unseen_val), batches(data.unseen_test))


@dataclass(frozen=True)
class FinalEvaluation:
    metrics: dict[str, Any]  # test_*, val_*, p_opt with the rest of probe_summary, and test_*_at_p_opt
    probe: pd.DataFrame | None  # None without a val split or a probe grid


def evaluate_trained(
    model: Classifier,
    batches: EvalBatches,
    evaluation: EvalConfig,
    probe_p: list[float],
    autocast: contextlib.AbstractContextManager | None = None,
) -> FinalEvaluation:
    """Evaluate ``model`` as it is; writes nothing.  The probe runs at ``probe_p``, inf and the
    learned p (``probe.probe_points``)."""
    probing = bool(probe_p)
    open_set = batches.unseen_test is not None
    retrieval = [metric for metric in evaluation.metrics if metric != ACCURACY]
    probed = retrieval if open_set else evaluation.metrics

    def final_pass(split: BatchLoader, keep_maps: bool) -> SplitPass:
        return SplitPass(model, split, autocast, keep_maps=keep_maps, scales=evaluation.scales,
                         combine=evaluation.scale_combine)

    def measured(split: BatchLoader, unseen: BatchLoader | None, prefix: str) -> tuple[dict[str, Any], SplitPass]:
        """The split's metrics, and the pass its retrieval metrics came from (the probe's)."""
        if unseen is None:
            ranked = final_pass(split, probing)
            numbers = split_metrics(ranked.outputs(), evaluation.metrics)
        else:
            ranked = final_pass(unseen, probing)
            numbers = split_metrics(final_pass(split, False).outputs(), [ACCURACY]) | split_metrics(ranked.outputs(), retrieval)
        return {f"{prefix}_{k}": v for k, v in numbers.items()}, ranked

    metrics, test = measured(batches.test, batches.unseen_test, "test")
    table = None
    if batches.val is not None:
        val_metrics, val = measured(batches.val, batches.unseen_val, "val")
        metrics |= val_metrics
        if probing:
            learned = global_p(model.pool)
            table = probe(val, probe_p, probed, learned)
            metrics |= probe_summary(table, learned, evaluation.tolerance)
            if not math.isnan(metrics["p_opt"]):
                at_opt = metrics_at(test, metrics["p_opt"], probed)
                metrics |= {f"test_{k}_at_p_opt": v for k, v in at_opt.items()}
    return FinalEvaluation(metrics, table)
