"""Evaluation, ours against the former code: the ranking behind the retrieval metrics and the
backbone pass, alone and inside the final evaluation of a p-drift run.

* ``ranking``: ``retrieval_metrics`` (map, map@r, r_precision, recall@1) of Fashion-MNIST-sized
  splits (2,500 validation and 10,000 test embeddings of 128 dimensions, 10 classes).  Ours
  sorts each query's row once (numpy's sort of int64 keys that carry the relevance in their low
  bit, class by class in cache-sized chunks) and takes every metric from the ranks of the
  relevant items; ``full_row_metrics`` below is the former code: torch's 2-D argsort per 1,024
  queries, then the metrics from cumulative sums over the whole ranked row.
* ``backbone``: the embeddings of 10,000 random 28x28 images, in eval batches of 1,024, by the
  (untrained) model of experiments/p_drift_fmnist.yaml: ours runs the backbone on
  ``CPU_BACKBONE_BATCH`` images at a time, the former code on the whole batch.
* ``final evaluation``: ``evaluate_trained`` as a p-drift run calls it (accuracy, map,
  recall@1 on val and test; the probe at the 13 p values of experiments/p_drift_fmnist.yaml,
  inf and the learned p on val; the test metrics at p_opt), on that model and random images of
  those split sizes, ours against the former ranking and backbone pass together.
* ``--p-drift-run`` (on its own, a few minutes; needs Fashion-MNIST): one whole run of
  experiments/p_drift_fmnist.yaml (margin 0.3, seed 0), ours and former, and the CPU time of
  its training (with the per-epoch accuracy passes, as ``train_time_s`` counts them) and of its
  final evaluation (``Trainer.finish``, as ``eval_time_s``): the evaluation's share of the run.

CPU time of one thread (torch held at one thread), median of interleaved repeats after a
warm-up; ``max_diff`` is the largest difference between the two contenders' metrics or
embeddings (float64 sums in another order: a few 1e-16).  Run: ``python -m benchmarks.evaluation`` (``--quick``:
quarter-sized splits; ``--p-drift-run``: the whole run instead).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
import yaml

from benchmarks.report import interleaved_medians, main_for
from pooling_lab.data import BatchLoader, Split, load_data
from pooling_lab.errors import UserError
from pooling_lab.evaluate import EvalBatches, SplitPass, evaluate_trained, passes, retrieval_metrics
from pooling_lab.evaluate.retrieval import TIE_RESOLUTION
from pooling_lab.experiment import ExperimentConfig, RunSpec
from pooling_lab.models import Classifier, build_model
from pooling_lab.results import RunFiles
from pooling_lab.train.loop import SilentProgress, Trainer

EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "p_drift_fmnist.yaml"
SPLITS = {"val": 2500, "test": 10000}
CLASSES, DIMENSIONS = 10, 128
FORMER_QUERY_CHUNK = 1024


def full_row_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ()) -> dict[str, float]:
    """The former ``retrieval_metrics``: the same ranking (similarity rounded to TIE_RESOLUTION,
    descending, ties by the smaller index) by torch's argsort of 1,024 rows at a time, and
    every metric from cumulative sums over the whole ranked row."""
    normalised = F.normalize(embeddings.float(), dim=1)
    count = len(labels)
    index = torch.arange(count)
    names = ["map", "map@r", "r_precision", *(f"recall@{k}" for k in ks)]
    totals, queries = dict.fromkeys(names, 0.0), 0
    for start in range(0, count, FORMER_QUERY_CHUNK):
        stop = min(start + FORMER_QUERY_CHUNK, count)
        key = torch.round(normalised[start:stop] @ normalised.T / TIE_RESOLUTION).long() * count - index
        rows = torch.arange(stop - start)
        key[rows, rows + start] = torch.iinfo(torch.long).min
        relevant = labels[key.argsort(dim=1, descending=True)[:, :-1]] == labels[start:stop, None]
        positives = relevant.sum(dim=1)
        ranks = torch.arange(1, count, dtype=torch.float64)
        hit_precision = relevant.double().cumsum(dim=1) / ranks * relevant
        first_r = ranks <= positives[:, None]
        per_query = {
            "map": hit_precision.sum(dim=1),
            "map@r": hit_precision.masked_fill_(~first_r, 0).sum(dim=1),
            "r_precision": (relevant & first_r).sum(dim=1).double(),
        }
        answerable = positives > 0
        for name, values in per_query.items():
            totals[name] += (values[answerable] / positives[answerable]).sum().item()
        for k in ks:
            totals[f"recall@{k}"] += relevant[answerable, :k].any(dim=1).sum().item()
        queries += int(answerable.sum())
    return {name: total / queries for name, total in totals.items()}


def _cpu_seconds(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.thread_time()
    result = work()
    return time.thread_time() - start, result


@contextlib.contextmanager
def former_code() -> Iterator[None]:
    """The former ranking and the whole-batch backbone pass in place of ours."""
    with mock.patch.object(passes, "retrieval_metrics", full_row_metrics), \
            mock.patch.object(passes, "CPU_BACKBONE_BATCH", sys.maxsize):
        yield


def _numbers(result: dict | torch.Tensor) -> torch.Tensor:
    """What a contender computed, as one float64 vector (the finite metrics, in name order)."""
    if isinstance(result, torch.Tensor):
        return result.double().flatten()
    values = [value for _, value in sorted(result.items()) if isinstance(value, float) and math.isfinite(value)]
    return torch.tensor(values, dtype=torch.float64)


def _compare(label: str, ours: Callable[[], dict | torch.Tensor], repeats: int,
             former: Callable[[], dict | torch.Tensor] | None = None) -> dict:
    """Median CPU seconds of ours and the former code (``former``, else ``ours`` under
    ``former_code``), measured in turn within every repeat (the first repeat warms up), and the
    largest difference between their numbers."""
    def former_default() -> dict | torch.Tensor:
        with former_code():
            return ours()

    contenders = {"former": former or former_default, "ours": ours}
    numbers: dict[str, torch.Tensor] = {}

    def timed(name: str) -> float:
        seconds, result = _cpu_seconds(contenders[name])
        numbers[name] = _numbers(result)
        return seconds

    median = interleaved_medians({name: functools.partial(timed, name) for name in contenders}, warmup=1, repeats=repeats)
    return {
        "what": label,
        "former_s": round(median["former"], 3),
        "ours_s": round(median["ours"], 3),
        "speedup": round(median["former"] / median["ours"], 1),
        "max_diff": f"{(numbers['ours'] - numbers['former']).abs().max().item():.1e}",
    }


def _clustered(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings around one centre per class (about the overlap of a trained p-drift model)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % CLASSES
    centres = torch.randn(CLASSES, DIMENSIONS, generator=generator)
    return centres[labels] + 0.9 * torch.randn(count, DIMENSIONS, generator=generator), labels


def measure_ranking(split: str, count: int, repeats: int) -> dict:
    embeddings, labels = _clustered(count, seed=count)
    return _compare(f"ranking, {split} {count}x{DIMENSIONS}", lambda: retrieval_metrics(embeddings, labels, [1]),
                    repeats, former=lambda: full_row_metrics(embeddings, labels, [1]))


def _p_drift_model() -> tuple[ExperimentConfig, Classifier]:
    """experiments/p_drift_fmnist.yaml and its model, untrained."""
    config = ExperimentConfig.model_validate(yaml.safe_load(EXPERIMENT.read_text()))
    torch.manual_seed(0)
    return config, build_model(config, in_channels=1, num_classes=CLASSES)


def _random_images(config: ExperimentConfig, count: int, seed: int) -> BatchLoader:
    """``count`` random 28x28 images in the experiment's eval batches, 10 classes in turn."""
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return BatchLoader(Split(images, torch.arange(count) % CLASSES), config.train.eval_batch_size,
                       device=torch.device("cpu"), mean=(0.29,), std=(0.35,))


def measure_backbone(count: int, repeats: int) -> dict:
    config, model = _p_drift_model()
    batches = _random_images(config, count, seed=count)
    return _compare(f"backbone pass, {count} images in batches of {config.train.eval_batch_size}",
                    lambda: SplitPass(model, batches).outputs().embeddings, repeats)


def measure_final_evaluation(sizes: dict[str, int], repeats: int) -> dict:
    config, model = _p_drift_model()
    splits = EvalBatches(val=_random_images(config, sizes["val"], seed=1),
                         test=_random_images(config, sizes["test"], seed=2))
    label = f"final evaluation, val {sizes['val']} + test {sizes['test']}, {len(config.eval.probe_p)}-point probe"
    return _compare(label, lambda: evaluate_trained(model, splits, config.eval, config.eval.probe_p).metrics, repeats)


def run(quick: bool) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sizes = {split: count // 4 for split, count in SPLITS.items()} if quick else SPLITS
        return [
            *(measure_ranking(split, count, repeats=2 if quick else 3) for split, count in sizes.items()),
            measure_backbone(sizes["test"], repeats=2 if quick else 3),
            measure_final_evaluation(sizes, repeats=1),
        ]
    finally:
        torch.set_num_threads(threads)


def measure_run_share(former: bool) -> dict:
    """CPU seconds of a p-drift run's training and of its final evaluation, with the former
    code or ours."""
    config = ExperimentConfig.model_validate(yaml.safe_load(EXPERIMENT.read_text()))
    data = load_data(config.data)
    evaluation_seconds = []
    finish = Trainer.finish

    def timed_finish(trainer: Trainer) -> dict:
        seconds, status = _cpu_seconds(lambda: finish(trainer))
        evaluation_seconds.append(seconds)
        return status

    with tempfile.TemporaryDirectory() as folder, mock.patch.object(Trainer, "finish", timed_finish), \
            former_code() if former else contextlib.nullcontext():
        trainer = Trainer(RunSpec(config, {}, "bench", "bench"), RunFiles(Path(folder)), data, SilentProgress())
        total, status = _cpu_seconds(trainer.run)
    (evaluation,) = evaluation_seconds
    return {
        "code": "former" if former else "ours",
        "train_cpu_s": round(total - evaluation, 1),
        "eval_cpu_s": round(evaluation, 1),
        "eval_share_%": round(100 * evaluation / total, 1),
        "test_map": round(status["test_map"], 6),
    }


def run_share() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [measure_run_share(former) for former in (True, False)]
    except UserError as error:  # no Fashion-MNIST here
        print(f"p-drift run: skipped, {error}")
        return []
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main_for((lambda quick: run_share()) if "--p-drift-run" in sys.argv[1:] else run)
