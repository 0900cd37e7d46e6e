"""The evaluation of a trained model, one entry for the end of training and for a re-probe:
the metrics on the validation and test splits at the test-time scales of ``eval``, and the
test-time p probe (its table on val, p_opt chosen on val, the test metrics at p_opt)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from pooling_lab.data import DataSplits
from pooling_lab.data.loader import BatchLoader
from pooling_lab.evaluate.passes import SplitPass, split_metrics
from pooling_lab.evaluate.probe import best_p, probe
from pooling_lab.experiment import EvalConfig
from pooling_lab.models.classifier import Classifier


@dataclass(frozen=True)
class EvalBatches:
    """The evaluation splits as batches on the device: in order, whole, not augmented."""

    val: BatchLoader | None
    test: BatchLoader

    @classmethod
    def of(cls, data: DataSplits, batch_size: int, device: torch.device, channels_last: bool) -> EvalBatches:
        def batches(split: Any) -> BatchLoader:
            return BatchLoader(split, batch_size, shuffle=False, drop_last=False, augment=None, generator=None,
                               device=device, mean=data.mean, std=data.std, channels_last=channels_last)

        return cls(batches(data.val) if data.val else None, batches(data.test))


@dataclass(frozen=True)
class FinalEvaluation:
    metrics: dict[str, Any]  # test_*, val_*, p_opt and test_*_at_p_opt
    probe: pd.DataFrame | None  # None without a val split or a probe grid


def evaluate_trained(
    model: Classifier,
    batches: EvalBatches,
    evaluation: EvalConfig,
    probe_p: list[float],
    autocast: contextlib.AbstractContextManager | None = None,
) -> FinalEvaluation:
    """Evaluate ``model`` as it is; writes nothing."""
    probing = bool(probe_p)

    def final_pass(split: BatchLoader) -> SplitPass:
        return SplitPass(model, split, autocast, keep_maps=probing, scales=evaluation.scales,
                         combine=evaluation.scale_combine)

    test = final_pass(batches.test)
    metrics = {f"test_{k}": v for k, v in split_metrics(test.outputs(), evaluation.metrics).items()}
    table = None
    if batches.val is not None:
        val = final_pass(batches.val)
        metrics |= {f"val_{k}": v for k, v in split_metrics(val.outputs(), evaluation.metrics).items()}
        if probing:
            table = probe(val, probe_p, evaluation.metrics)
            metrics["p_opt"] = p_opt = best_p(table)
            at_opt = probe(test, [p_opt], evaluation.metrics).iloc[0]
            metrics |= {f"test_{k}_at_p_opt": float(at_opt[k]) for k in evaluation.metrics}
    return FinalEvaluation(metrics, table)
