"""Evaluation of a trained classifier: accuracy, retrieval metrics, the test-time p probe, and
the flags that mark a finished run's numbers as suspect."""

from pooling_lab.evaluate.final import EvalBatches, FinalEvaluation, evaluate_trained
from pooling_lab.evaluate.flags import run_flags
from pooling_lab.evaluate.passes import Outputs, SplitPass, accuracy_of, split_metrics
from pooling_lab.evaluate.probe import best_p, probe
from pooling_lab.evaluate.retrieval import recall_at_k, retrieval_map, retrieval_metrics
from pooling_lab.evaluate.revisited import revisited_map

__all__ = [
    "EvalBatches",
    "FinalEvaluation",
    "Outputs",
    "SplitPass",
    "accuracy_of",
    "best_p",
    "evaluate_trained",
    "probe",
    "recall_at_k",
    "retrieval_map",
    "retrieval_metrics",
    "revisited_map",
    "run_flags",
    "split_metrics",
]
