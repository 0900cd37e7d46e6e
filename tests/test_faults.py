"""File-system faults and the results folder: a results folder that cannot be written is one
line and exit code 2 with nothing lost; files are written with the modes the umask asks for."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from tiny_sweeps import experiment, pause_at_checkpoint, run_cli, start

from pooling_lab import atomic, results
from pooling_lab.experiment import load_plan
from pooling_lab.run import claims

ONE_EPOCH = {"epochs": 1}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root holding one finished tiny run (copy it before changing it)."""
    tmp = tmp_path_factory.mktemp("finished")
    path = experiment(tmp, train=ONE_EPOCH)
    with umask(0o022):
        result = run_cli("run", path, "--out", tmp / "results", "-q")
    assert result.exit_code == 0, result.output
    return tmp / "results"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``."""
    return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else None for path in root.rglob("*")}


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- a results folder that cannot be written ---------------------------------------------------------


def a_file_as_out(tmp: Path, out: Path) -> tuple[Path, str]:
    (tmp / "results.txt").write_text("notes\n")
    return tmp / "results.txt", f"{tmp / 'results.txt'}: is a file, not a folder"


def a_path_under_a_file(tmp: Path, out: Path) -> tuple[Path, str]:
    (tmp / "notes").write_text("notes\n")
    return tmp / "notes" / "results", f"{tmp / 'notes'}: is a file, not a folder"


def a_file_named_as_the_experiment(tmp: Path, out: Path) -> tuple[Path, str]:
    out.mkdir()
    (out / "tiny").write_text("notes\n")
    return out, f"{out / 'tiny'}: is a file, not a folder"


def a_place_that_cannot_hold_folders(tmp: Path, out: Path) -> tuple[Path, str]:
    return Path("/proc/pooling-lab-results"), "/proc/pooling-lab-results/tiny: cannot write the results there: "


# each makes a fault under ``tmp`` and returns the --out to give and the start of the error line
FAULTS = [a_file_as_out, a_path_under_a_file, a_file_named_as_the_experiment, a_place_that_cannot_hold_folders]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.__name__)
def test_a_results_folder_that_cannot_be_made_is_one_line(tmp_path: Path, fault: Callable) -> None:
    path = experiment(tmp_path, train=ONE_EPOCH)
    out, reason = fault(tmp_path, tmp_path / "results")
    before = snapshot(tmp_path)
    result = run_cli("run", path, "--out", out, "-q")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {reason}"), line
    assert snapshot(tmp_path) == before and not Path("/proc/pooling-lab-results").exists()


def read_only(monkeypatch: pytest.MonkeyPatch, out: Path) -> str:
    """Creating a file or a folder under ``out`` fails, as on a read-only mount."""
    for name in ("open", "mkdir"):
        real = getattr(os, name)

        def refused(path, *args, _real=real, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if Path(os.fsdecode(path)).is_relative_to(out):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, refused)
    return f"{out / 'tiny'}: cannot write the results there: {os.strerror(errno.EROFS)}"


def full_disk(monkeypatch: pytest.MonkeyPatch, out: Path) -> str:
    """Every write fails when it is flushed to the disk."""

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    return f"{out / 'tiny' / 'experiment.yaml'}: {os.strerror(errno.ENOSPC)}"


@pytest.mark.parametrize("fault", [read_only, full_disk], ids=lambda fault: fault.__name__)
def test_a_results_folder_that_cannot_be_written_is_one_line_and_loses_nothing(
    tmp_path: Path, finished: Path, monkeypatch: pytest.MonkeyPatch, fault: Callable
) -> None:
    out = shutil.copytree(finished, tmp_path / "results")
    path = experiment(tmp_path, train=ONE_EPOCH)
    before = snapshot(out)
    reason = fault(monkeypatch, out)
    result = run_cli("run", path, "--out", out, "-q")
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {reason}"]
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("command", "written"), [("plot", r"plots/\w+\.(pdf|png)"), ("stats", r"drift\.(csv|md)")], ids=["plot", "stats"]
)
def test_plot_and_stats_on_a_full_disk_are_one_line_and_lose_nothing(
    tmp_path: Path, two_runs: Path, monkeypatch: pytest.MonkeyPatch, command: str, written: str
) -> None:
    root = shutil.copytree(two_runs, tmp_path / "tiny")
    before = snapshot(root)
    full_disk(monkeypatch, root)
    result = run_cli(command, root)
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert re.fullmatch(f"error: {re.escape(str(root))}/{written}: {os.strerror(errno.ENOSPC)}", line), line
    assert {name: data for name, data in snapshot(root).items() if name != "plots"} == before  # plots/: empty


# --- file modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_asks_for(tmp_path: Path, mask: int, mode: int) -> None:
    with umask(mask):
        atomic.write_text(tmp_path / "a.txt", "a")
        atomic.write_bytes(tmp_path / "b.png", b"b")
        claim = claims.try_claim(tmp_path / "run")
    assert claim is not None
    for path in (tmp_path / "a.txt", tmp_path / "b.png", claim.path):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with umask(0o077):
        atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_every_file_of_a_run_and_its_plots_is_readable_by_the_group_and_others(finished: Path, tmp_path: Path) -> None:
    """The run in ``finished`` was written with umask 022."""
    with umask(0o022):
        assert run_cli("plot", finished / "tiny", "--out", tmp_path / "plots").exit_code == 0
    written = [path for root in (finished, tmp_path / "plots") for path in root.rglob("*") if path.is_file()]
    assert {path.suffix for path in written} >= {".yaml", ".csv", ".json", ".pt", ".png", ".pdf"}
    assert {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in written} == {
        path.name: oct(0o644) for path in written
    }


# --- a run folder damaged by a crash or a full disk -----------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment folder with two finished, probed runs (margin 0 and 0.2)."""
    tmp = tmp_path_factory.mktemp("two_runs")
    path = experiment(tmp, train=ONE_EPOCH, head={"name": "arcface", "scale": 10.0}, eval={"probe_p": [1, 3, 8]},
                      sweep={"grid": {"head.margin": [0.0, 0.2]}})
    result = run_cli("run", path, "--out", tmp / "results", "-q")
    assert result.exit_code == 0, result.output
    return tmp / "results" / "tiny"


def cut_in_half(path: Path) -> None:
    """Cut ``path`` short in the middle of a line, as a crash or a full disk may."""
    half = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(half[:-1] if half.endswith(b"\n") else half)


def skipped(path: Path) -> str:
    """The line naming ``path``, damaged by ``cut_in_half``."""
    if path.suffix != ".json":
        return f"{path}: damaged (cut short: its last line is incomplete); skipped"
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(path.read_text())
    return f"{path}: damaged (not valid JSON: {error.value}); skipped"


@pytest.mark.parametrize("command", ["status", "plot", "stats"])
def test_a_damaged_run_is_named_in_one_line_and_the_command_goes_on(
    tmp_path: Path, two_runs: Path, command: str
) -> None:
    root = shutil.copytree(two_runs, tmp_path / "tiny")
    runs = pd.read_csv(root / "runs.csv")
    first, second = (root / name for name in runs["run_dir"])
    cut_in_half(first / "status.json")
    cut_in_half(second / "params.csv")
    result = run_cli(command, root)
    assert result.exit_code == 0, result.output
    warned = [first / "status.json"] + ([] if command == "status" else [second / "params.csv"])
    assert result.stderr.splitlines() == [f"warning: {skipped(path)}" for path in warned]
    if command == "status":
        view = json.loads(run_cli("status", root, "--json").stdout)
        assert [(run["run"], run["state"]) for run in view["runs"]] == [(first.name, "damaged"), (second.name, "done")]
        assert view["damaged"] == [skipped(first / "status.json")]
    elif command == "plot":
        assert (root / "plots" / "p_final.png").is_file() and (root / "plots" / "metric_vs_p.png").is_file()
    else:
        drift = pd.read_csv(root / "drift.csv")
        assert drift["head.margin"].tolist() == [0.2] and drift["seeds"].tolist() == [1]


def test_the_damaged_files_are_left_out_of_the_loaded_results(tmp_path: Path, two_runs: Path) -> None:
    root = shutil.copytree(two_runs, tmp_path / "tiny")
    intact = results.load(root)
    first, second = (root / name for name in intact.runs["run_dir"])
    cut_in_half(first / "status.json")
    cut_in_half(second / "params.csv")
    (first / "metrics.csv").write_bytes(b"")  # a full disk: renamed into place, but empty
    loaded = results.load(root)
    assert loaded.damaged == [
        skipped(first / "status.json"),
        f"{first / 'metrics.csv'}: damaged (empty); skipped",
        skipped(second / "params.csv"),
    ]
    first_id, second_id = intact.runs["run_id"]
    assert loaded.runs["status"].tolist() == ["damaged", "done"]
    assert set(loaded.metrics["run_id"]) == {second_id} and set(loaded.params["run_id"]) == {first_id}
    pd.testing.assert_frame_equal(loaded.probe, intact.probe)


def test_a_damaged_runs_table_is_one_line(tmp_path: Path, two_runs: Path) -> None:
    root = shutil.copytree(two_runs, tmp_path / "tiny")
    cut_in_half(root / "runs.csv")
    for command in ("status", "plot", "stats"):
        result = run_cli(command, root)
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [f"error: {root / 'runs.csv'}: damaged (cut short: its last line is incomplete)"]


# --- another plan into the same folder -----------------------------------------------------------------


def test_a_plan_that_would_hide_recorded_runs_is_refused_and_a_wider_one_keeps_them_all(tmp_path: Path) -> None:
    path = experiment(tmp_path, train=ONE_EPOCH, sweep={"grid": {"optim.lr": [0.05]}})
    out, root = tmp_path / "results", tmp_path / "results" / "tiny"
    assert run_cli("run", path, "--out", out, "-q").exit_code == 0
    [first] = results.load(root).runs["run_dir"]
    before = snapshot(out)
    result = run_cli("run", path, "--out", out, "-q", "--set", "sweep.grid.optim.lr=[0.1]")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {root}: holds 1 run that this plan leaves out ({first}); to keep every run in view, widen the "
        f"sweep to include it, or write this plan elsewhere (--out OTHER, or --set name=OTHER)"
    ]
    assert snapshot(out) == before
    result = run_cli("run", path, "--out", out, "-q", "--set", "sweep.grid.optim.lr=[0.05,0.1]")
    assert result.exit_code == 0, result.output
    loaded = results.load(root)
    assert loaded.runs["optim.lr"].tolist() == [0.05, 0.1] and loaded.runs["status"].tolist() == ["done", "done"]
    assert (root / first / "status.json").read_bytes() == before[f"tiny/{first}/status.json"]  # not run again
    view = json.loads(run_cli("status", root, "--json").stdout)
    assert [run["run"] for run in view["runs"]] == loaded.runs["run_dir"].tolist()


def test_a_recorded_run_whose_folder_was_removed_may_be_left_out(tmp_path: Path) -> None:
    path = experiment(tmp_path, train=ONE_EPOCH, sweep={"grid": {"optim.lr": [0.05]}})
    out = tmp_path / "results"
    assert run_cli("run", path, "--out", out, "-q").exit_code == 0
    [first] = results.load(out / "tiny").runs["run_dir"]
    shutil.rmtree(out / "tiny" / first)
    result = run_cli("run", path, "--out", out, "-q", "--set", "sweep.grid.optim.lr=[0.1]")
    assert result.exit_code == 0, result.output
    assert results.load(out / "tiny").runs["optim.lr"].tolist() == [0.1]


# --- a killed process ---------------------------------------------------------------------------------


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``Z``: dead, not yet reaped by its parent)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_right_after_a_sigkill_the_run_is_stopped_not_running(tmp_path: Path) -> None:
    """Until its parent reaps it, a killed process is a zombie: its pid still answers, but it
    holds nothing."""
    path = experiment(tmp_path, train=ONE_EPOCH)
    run_dir = tmp_path / "results" / "tiny" / load_plan(path).runs[0].dir_name
    process = start("run", path, "--out", tmp_path / "results", "-q")
    try:
        pause_at_checkpoint(process, run_dir / "checkpoint.pt")
        process.kill()
        deadline = time.monotonic() + 30
        while process_state(process.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        [run] = json.loads(run_cli("status", run_dir.parent, "--json").stdout)["runs"]
        assert (run["state"], run["held_by"]) == ("stopped", None)
        assert claims.holder(run_dir) is None
    finally:
        process.kill()
        process.communicate()
