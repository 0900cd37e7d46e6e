"""Runs with the losses of the retrieval literature: a pair-loss head trains with M-per-class
batches and reports NaN accuracy beside its retrieval metrics; a CurricularFace run with the
sampler, killed inside an epoch, resumes bit for bit; without pytorch-metric-learning a pair-loss
experiment is refused in one line."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_sweeps import (
    STEPS_PER_EPOCH,
    experiment,
    frames,
    pause_at_checkpoint,
    run_cli,
    run_dir_of,
    run_dirs,
    start,
    status_of,
)

PAIRS = {"batch_sampler": {"m_per_class": 8}}  # batches of 16: 8 images of each of 2 of the 4 classes
ALL_CLASSES = {"batch_sampler": {"m_per_class": 4}}  # 4 images of each of the 4 classes


def test_a_pair_loss_run_reports_retrieval_metrics_and_no_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_metric_learning")
    path = experiment(tmp_path, head={"name": "contrastive", "neg_margin": 0.7}, train=PAIRS,
                      model={"embedding_dim": 16, "embedding_norm": False, "normalize_pooled": True})
    result = run_cli("run", path, "--out", tmp_path / "results", "-q")

    assert result.exit_code == 0, result.output
    [run_dir] = run_dirs(tmp_path / "results" / "tiny")
    status = status_of(run_dir)
    assert status["status"] == "done" and status["flags"] == []
    assert math.isnan(status["test_accuracy"]) and math.isnan(status["val_accuracy"])
    assert status["test_map"] > 0.6  # four classes: a random ranking scores about 0.25
    _, metrics = frames(run_dir)
    assert metrics[["train_accuracy", "val_accuracy", "test_accuracy"]].isna().all().all()
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


def test_a_curricularface_run_with_the_sampler_resumes_exactly(tmp_path: Path) -> None:
    sections = {"head": {"name": "curricularface", "scale": 16.0, "margin": 0.2}, "train": ALL_CLASSES}
    reference_path = experiment(tmp_path, **sections)
    assert run_cli("run", reference_path, "--out", tmp_path / "reference", "-q").exit_code == 0
    reference = run_dir_of(tmp_path / "reference", reference_path, 0)
    assert status_of(reference)["test_accuracy"] > 0.4  # four classes: chance is 0.25

    out = tmp_path / "results"
    run_dir = run_dir_of(out, reference_path, 0)
    process = start("run", reference_path, "--out", out, "-q")
    state = pause_at_checkpoint(process, run_dir / "checkpoint.pt", lambda s: s["epoch"] >= 1 and s["batch"] > 0)
    process.kill()
    process.wait()
    assert state["step"] % STEPS_PER_EPOCH > 0 and state["model"]["head.t"].item() != 0.0
    result = run_cli("run", reference_path, "--out", out, "-q")

    assert result.exit_code == 0, result.output
    assert status_of(run_dir)["resumed_from_step"] == state["step"]
    (params, metrics), (expected_params, expected_metrics) = frames(run_dir), frames(reference)
    pd.testing.assert_frame_equal(params, expected_params, check_exact=True)
    pd.testing.assert_frame_equal(metrics, expected_metrics, check_exact=True)
    for key in ("p_final", "test_accuracy", "test_map"):
        assert status_of(run_dir)[key] == status_of(reference)[key]


def test_without_the_library_a_pair_loss_experiment_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)  # import fails as if absent
    path = experiment(tmp_path, head={"name": "triplet"}, train=PAIRS)
    result = run_cli("run", path, "--out", tmp_path / "results", "-q")

    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "need pytorch-metric-learning" in line and "pip install pooling-lab[metric]" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"batch_sampler": {"m_per_class": 5}}, "m_per_class 5 does not divide batch_size 16"),
        ({"batch_sampler": {"m_per_class": 2}}, "batches of 16 hold 8 classes of 2 images, but the training split has 4 classes"),
    ],
)
def test_a_sampler_the_data_cannot_fill_is_refused_in_one_line(tmp_path: Path, train: dict, message: str) -> None:
    path = experiment(tmp_path, train=train)
    result = run_cli("run", path, "--out", tmp_path / "results", "-q")

    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert message in line and "batch_sampler" in line and str(path) in line
    assert not (tmp_path / "results").exists()


def test_the_sampler_enters_the_run_id_only_when_set(tmp_path: Path) -> None:
    from pooling_lab.experiment import load_plan

    def run_id(**train: object) -> str:
        return load_plan(experiment(tmp_path, train=train)).runs[0].run_id

    plain = load_plan(experiment(tmp_path)).runs[0]
    assert "batch_sampler" not in plain.config.model_dump(mode="json")["train"]
    assert run_id(**ALL_CLASSES) != plain.run_id != run_id(**PAIRS)
