"""One run on two processes under torchrun (gloo on this CPU): the ranks keep one model, rank 0
writes one results folder, the pair trains as one process with the same global batch would, and
a signal on either rank stops both at one step, from which the run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_sweeps import STEPS_PER_EPOCH, experiment, frames, run_cli, run_dir_of, status_of

from pooling_lab.data.loader import BatchLoader
from pooling_lab.data.spec import AugmentConfig
from pooling_lab.data.splits import Split
from pooling_lab.train import distributed
from pooling_lab.train.distributed import World

RANKS = 2
# no batch norm, so the per-rank forward passes compute exactly what one process's does
VIT = {"backbone": {"name": "vit_tiny", "dim": 16, "depth": 1, "heads": 2, "patch_size": 4}, "pool": {"name": "gem", "p": 3.0}}
REPORT = Path(__file__).with_name("rank_report.py")


def torchrun(*args: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def test_every_rank_ends_with_the_same_parameters(tmp_path: Path) -> None:
    """The step goes through the DistributedDataParallel forward, so the gradients of every
    parameter (p included) are averaged and the ranks never drift apart; batch norm included."""
    path = experiment(tmp_path, train={"epochs": 2})
    code, stdout, stderr = finished(torchrun(REPORT, path, tmp_path / "results", tmp_path))
    assert code == 0, stderr
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(RANKS)]
    assert [report["status"] for report in ranks] == ["done", "done"]
    assert ranks[0]["p"] == ranks[1]["p"] != 3.0
    assert ranks[0]["parameters"] == ranks[1]["parameters"]


def test_a_torchrun_sweep_writes_one_results_folder(tmp_path: Path) -> None:
    path = experiment(tmp_path, train={"epochs": 2}, sweep={"seeds": [0, 1]}, record={"every_steps": 2, "gradient_split": True})
    out = tmp_path / "results"
    code, stdout, stderr = finished(torchrun("-m", "pooling_lab", "run", path, "--out", out, "-q"))
    assert code == 0, stderr
    assert stdout.count("started") == 2 and stdout.count("results: ") == 1  # rank 0 alone reports
    runs = pd.read_csv(out / "tiny" / "runs.csv")
    assert list(runs["status"]) == ["done", "done"]
    for index in range(2):
        run_dir = run_dir_of(out, path, index)
        status = status_of(run_dir)
        assert (status["status"], status["world_size"], status["step"]) == ("done", RANKS, 2 * STEPS_PER_EPOCH)
        params, metrics = frames(run_dir)
        assert list(params["step"]) == list(range(0, 2 * STEPS_PER_EPOCH + 1, 2))  # every record once
        assert list(metrics["epoch"]) == [1, 2]
        split = pd.read_csv(run_dir / "grad_split.csv")
        assert list(split["step"]) == [step for step in range(2, 2 * STEPS_PER_EPOCH + 1, 2) for _ in range(2)]
        # the ranks' parts, averaged, add up to the averaged gradient of the trace
        added = split.groupby("step")["grad"].sum()
        traced = params.set_index("step")["grad"].loc[added.index]
        assert (added - traced).abs().max() < 1e-5 * max(1.0, traced.abs().max())
        assert not list(run_dir.glob("claim.*")) and not list(run_dir.glob(".*.tmp"))


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The ViT experiment trained by one process: (experiment file, run folder)."""
    directory = tmp_path_factory.mktemp("single")
    path = experiment(directory, model=VIT, train={"epochs": 3})
    result = run_cli("run", path, "--out", directory / "results", "-q")
    assert result.exit_code == 0, result.output
    return path, run_dir_of(directory / "results", path, 0)


def test_two_processes_train_as_one_process_with_the_same_global_batch(
    tmp_path: Path, single_process_run: tuple[Path, Path]
) -> None:
    """Each rank takes every other image of the same global batches, augmented with the same
    draws; the averaged gradient is the one-process gradient up to the order of the float
    additions, so the p trace agrees to 1e-5 and the metrics to 1e-5."""
    path, single = single_process_run
    code, _, stderr = finished(torchrun("-m", "pooling_lab", "run", path, "--out", tmp_path, "-q"))
    assert code == 0, stderr
    (params, metrics), (single_params, single_metrics) = frames(run_dir_of(tmp_path, path, 0)), frames(single)
    assert list(params["step"]) == list(single_params["step"])
    assert (params["value"] - single_params["value"]).abs().max() < 1e-5
    assert (params["value"].iloc[-1] - 3.0) ** 2 > 1e-4  # p moved, so the comparison says something
    numeric = ["train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "p"]
    assert (metrics[numeric] - single_metrics[numeric]).abs().max().max() < 1e-5


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the workers torchrun started (its children carrying RANK)."""
    found: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(found) < RANKS and time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environment = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            rank = next((int(item[5:]) for item in environment if item.startswith(b"RANK=")), None)
            if parent == launcher.pid and rank is not None:
                found[rank] = int(entry.name)
        time.sleep(0.05)
    assert len(found) == RANKS, f"torchrun's workers not found: {found}"
    return found


def test_sigterm_on_one_rank_stops_both_at_one_step_and_the_run_resumes_exactly(
    tmp_path: Path, single_process_run: tuple[Path, Path]
) -> None:
    path, _ = single_process_run
    reference = tmp_path / "reference"
    assert finished(torchrun("-m", "pooling_lab", "run", path, "--out", reference, "-q"))[0] == 0
    out = tmp_path / "stopped"
    launcher = torchrun("-m", "pooling_lab", "run", path, "--out", out, "-q")
    pids = rank_pids(launcher)
    checkpoint = run_dir_of(out, path, 0) / "checkpoint.pt"
    while not checkpoint.exists():  # the first checkpoint: every rank is in its training loop
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.01)
    for pid in pids.values():  # held still, so that the signal lands long before the run's end
        os.kill(pid, signal.SIGSTOP)
    os.kill(pids[1], signal.SIGTERM)
    for pid in pids.values():
        os.kill(pid, signal.SIGCONT)
    code, _, stderr = finished(launcher)
    assert code != 0
    assert stderr.count("interrupted by SIGTERM: checkpointed") == RANKS, stderr
    status = status_of(run_dir_of(out, path, 0))
    assert status["status"] == "interrupted" and status["step"] < 3 * STEPS_PER_EPOCH
    stopped_at = torch.load(checkpoint, weights_only=False)["step"]
    assert stopped_at == status["step"]
    assert finished(torchrun("-m", "pooling_lab", "run", path, "--out", out, "-q"))[0] == 0
    resumed, uninterrupted = frames(run_dir_of(out, path, 0)), frames(run_dir_of(reference, path, 0))
    assert status_of(run_dir_of(out, path, 0))["resumed_from_step"] == stopped_at
    pd.testing.assert_frame_equal(resumed[0], uninterrupted[0])
    pd.testing.assert_frame_equal(resumed[1], uninterrupted[1])


# --- checks that need no second process ----------------------------------------------------------


def test_a_batch_that_does_not_divide_among_the_ranks_is_one_line() -> None:
    with pytest.raises(distributed.UserError) as caught:
        distributed.check_batch_divides(15, None, World(rank=0, size=2), "exp.yaml")
    assert caught.value.one_line() == (
        "exp.yaml: train.batch_size: 15 images do not divide among 2 processes; choose a batch size that is a multiple of 2"
    )
    with pytest.raises(distributed.UserError, match="m_per_class: batches of 3 classes do not divide among 2 processes"):
        distributed.check_batch_divides(12, 4, World(rank=0, size=2), "exp.yaml")
    distributed.check_batch_divides(16, 4, World(rank=0, size=2), "exp.yaml")


def test_sync_batchnorm_is_refused_on_cpu_processes_and_converts_the_batch_norms() -> None:
    with pytest.raises(distributed.UserError, match="train.sync_batchnorm: SyncBatchNorm needs CUDA"):
        distributed.check_sync_batchnorm(True, torch.device("cpu"), World(rank=0, size=2), "exp.yaml")
    distributed.check_sync_batchnorm(True, torch.device("cpu"), World(), "exp.yaml")  # one process: no sync to do
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    weight = model[1].weight
    converted = distributed.with_sync_batchnorm(model)
    assert isinstance(converted[1], torch.nn.SyncBatchNorm) and converted[1].weight is weight


def test_jobs_under_torchrun_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_cli("run", experiment(tmp_path), "--jobs", "2")
    assert result.exit_code == 2
    assert "--jobs: --jobs cannot be used under torchrun" in result.output


def test_gpus_asks_for_gpus_this_machine_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = run_cli("run", experiment(tmp_path), "--gpus", "2")
    assert result.exit_code == 2
    assert "--gpus: asks for 2 GPUs and this machine has 1 that CUDA can use" in result.output


def test_gpus_starts_torchrun_with_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    def exec_instead(program: str, arguments: list[str]) -> None:
        started.append(arguments)
        raise SystemExit(0)

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(distributed.os, "execv", exec_instead)
    path = experiment(tmp_path)
    result = run_cli("run", path, "--gpus", "4", "--out", tmp_path / "r", "--set", "train.epochs=1", "-q")
    assert result.exit_code == 0, result.output
    assert started == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                        "-m", "pooling_lab", "run", str(path), "--out", str(tmp_path / "r"), "--set", "train.epochs=1",
                        "--quiet"]]
    assert not (tmp_path / "r").exists()  # this process trained nothing


def test_the_ranks_shares_of_a_batch_make_up_one_process_batch() -> None:
    """Same seed, same augmentation draws: each of two ranks gets one half of each global batch."""
    split = Split(torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40) % 4)

    def batches(share: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = BatchLoader(split, 8, device=torch.device("cpu"), mean=[0.5], std=[0.25], shuffle=True,
                             augment=AugmentConfig(crop_padding=2, flip=True),
                             generator=torch.Generator().manual_seed(7), share=share)
        return list(loader)

    whole, first, second = batches((0, 1)), batches((0, 2)), batches((1, 2))
    assert len(whole) == len(first) == len(second) == 5
    for (images, labels), (images_0, labels_0), (images_1, labels_1) in zip(whole, first, second, strict=True):
        torch.testing.assert_close(torch.cat([images_0, images_1]), images, rtol=0, atol=0)
        assert torch.cat([labels_0, labels_1]).tolist() == labels.tolist() and len(labels_0) == len(labels_1) == 4
