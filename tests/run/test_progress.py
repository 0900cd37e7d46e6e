"""What ``pooling-lab run`` shows while it trains: live bars with an ETA on a terminal (on
stderr, and still readable at 80 columns), one line per epoch and per run start and end in a log
(stdout that is not a terminal), a resumed run named as such, one bar or line per run with
``--jobs``, and ``-q`` cut down to a line per run start and end."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tiny_sweeps import STEPS_PER_EPOCH, experiment, pause_at_checkpoint, run_cli, start
from typer.testing import CliRunner

from pooling_lab.cli import app
from pooling_lab.experiment import load_plan

TOTAL_STEPS = 3 * STEPS_PER_EPOCH
TWO_RUNS = {"grid": {"optim.lr": [0.05, 0.1]}}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BAR = "━"
TABLE_EDGES = "┏┃┡│└"


def bar_rows(text: str) -> list[str]:
    """The lines that hold a progress bar (the summary table's rules are not bars)."""
    return [line for line in text.splitlines() if BAR in line and line.lstrip()[:1] not in TABLE_EDGES]


def epoch_lines(output: str, run: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{run}: epoch ")]


def test_a_log_gets_a_line_per_epoch_as_it_happens_and_no_bars(tmp_path: Path) -> None:
    path = experiment(tmp_path, sweep=TWO_RUNS)
    runs = [spec.dir_name for spec in load_plan(path).runs]
    process = start("run", path, "--out", tmp_path / "results")
    read = []
    for line in process.stdout:
        read.append(line)
        if ": epoch " in line:
            break
    assert process.poll() is None, "the first epoch's line came only when the run had ended"
    rest, errors = process.communicate(timeout=300)
    stdout = "".join(read) + rest

    assert process.returncode == 0, errors
    assert read[-1].startswith(f"{runs[0]}: epoch 1/3  loss ")
    for run in runs:
        assert [line.split()[2] for line in epoch_lines(stdout, run)] == ["1/3", "2/3", "3/3"]
        assert f"{run}: started ({TOTAL_STEPS} steps)" in stdout.splitlines()
        assert sum(line.startswith(f"{run}: done, p=") for line in stdout.splitlines()) == 1
    for text in (stdout, errors):
        assert "\x1b" not in text and not bar_rows(text)


def test_a_resumed_run_says_from_which_step(tmp_path: Path) -> None:
    path, out = experiment(tmp_path), tmp_path / "results"
    [spec] = load_plan(path).runs
    process = start("run", path, "--out", out, "-q")
    state = pause_at_checkpoint(process, out / "tiny" / spec.dir_name / "checkpoint.pt",
                                lambda state: state["step"] > 0)
    process.kill()
    process.wait()

    result = run_cli("run", path, "--out", out)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"{spec.dir_name}: resumed from step {state['step']} of {TOTAL_STEPS}" in lines
    assert not any(line.startswith(f"{spec.dir_name}: started") for line in lines)


def test_quiet_prints_a_line_per_run_start_and_end_and_says_so_in_help(tmp_path: Path) -> None:
    path = experiment(tmp_path, sweep=TWO_RUNS)
    runs = [spec.dir_name for spec in load_plan(path).runs]
    result = run_cli("run", path, "--out", tmp_path / "results", "-q")

    assert result.exit_code == 0, result.output
    expected = [f"{runs[0]}: started", f"{runs[0]}: done", f"{runs[1]}: started", f"{runs[1]}: done",
                f"results: {tmp_path / 'results' / 'tiny'}"]
    assert [line.split(" (")[0].split(",")[0] for line in result.stdout.splitlines()] == expected
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"}).output
    assert "one line per run start and end, and failures; no bars, no epoch lines, no summary table" in help_text


def test_jobs_report_every_runs_epochs_in_a_log(tmp_path: Path) -> None:
    path = experiment(tmp_path, sweep=TWO_RUNS)
    result = run_cli("run", path, "--out", tmp_path / "results", "--jobs", "2")

    assert result.exit_code == 0, result.output
    for spec in load_plan(path).runs:
        assert [line.split()[2] for line in epoch_lines(result.stdout, spec.dir_name)] == ["1/3", "2/3", "3/3"]
        assert f"{spec.dir_name}: started ({TOTAL_STEPS} steps)" in result.stdout.splitlines()


# --- on a terminal --------------------------------------------------------------------------------


def run_on_terminal(*args: object, columns: int = 80) -> tuple[int, list[str]]:
    """``pooling-lab ARGS`` with stdout and stderr on a terminal: exit code and the screen lines
    drawn (control sequences removed; a redrawn line counts once per drawing)."""
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "24", "TERM": "xterm"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    control, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "pooling_lab", *map(str, args)],
                               stdin=side, stdout=side, stderr=side, env=env)
    os.close(side)
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while chunk := os.read(control, 65536):
            chunks.append(chunk)
    os.close(control)
    code = process.wait(timeout=300)
    text = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    return code, [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_terminal_bars_keep_the_bar_and_eta_beside_the_epoch_lines_at_80_columns(tmp_path: Path) -> None:
    path = experiment(tmp_path)
    [spec] = load_plan(path).runs
    code, lines = run_on_terminal("run", path, "--out", tmp_path / "results")

    assert code == 0, "\n".join(lines)
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith(f"{spec.dir_name}: epoch 1/3  loss"))
    run_rows = [line for line in bar_rows("\n".join(lines[first_epoch:])) if spec.dir_name[:10] in line]
    assert run_rows and all("ETA" in row and "epoch" in row for row in run_rows)
    assert all(len(row.rstrip()) <= 80 for row in bar_rows("\n".join(lines)))


def test_terminal_jobs_show_a_bar_per_run(tmp_path: Path) -> None:
    path = experiment(tmp_path, sweep=TWO_RUNS)
    code, lines = run_on_terminal("run", path, "--out", tmp_path / "results", "--jobs", "2")

    assert code == 0, "\n".join(lines)
    for spec in load_plan(path).runs:
        assert any(spec.dir_name[:10] in row and "ETA" in row for row in bar_rows("\n".join(lines))), spec.dir_name
        assert len([line for line in lines if line.startswith(f"{spec.dir_name}: epoch ")]) == 3
