"""What a person reads besides the results: ``--help`` of every command, ``--version``, the
``list`` tables, and the files the code's comments send a reader to."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pooling_lab
from pooling_lab.cli import app

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["run"], ["validate"], ["status"], ["plot"], ["stats"], ["probe"], ["evaluate"], ["figures"],
            ["compare"], ["regimes"], ["export"], ["export", "tensorboard"],
            ["list"], ["list", "pools"], ["list", "heads"], ["list", "backbones"]]


def invoke(*args: str):
    """``pooling-lab ARGS`` on a wide terminal without colours, so lines are not cut."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})


def test_run_help_keeps_the_placeholder_of_the_results_folder():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "runs go to OUT/<name>/" in result.output


def _help_texts(command) -> list[str]:
    """The help a command was given: its docstring and its parameters' help strings."""
    import typer.main

    click_command = typer.main.get_command(app)
    for name in command:
        click_command = click_command.commands[name]
    return [click_command.help or "", *(getattr(param, "help", None) or "" for param in click_command.params)]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c and c[0] != "list"], ids=" ".join)
def test_every_placeholder_written_in_a_help_text_is_shown(command):
    placeholders = {m for text in _help_texts(command) for m in re.findall(r"[\w./]*<\w+>[\w./]*", text)}
    shown = " ".join(invoke(*command, "--help").output.split())
    assert [p for p in placeholders if p not in shown] == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_flags_show_no_value_type_but_options_with_values_do(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    flag_rows = [line for line in result.output.splitlines() if "--help" in line]
    assert flag_rows and all("<" not in row for row in flag_rows)


def test_options_that_take_a_value_keep_their_type():
    output = invoke("run", "--help").output
    assert re.search(r"--out\s+-o\s+<path>", output)
    assert re.search(r"--jobs\s+-j\s+<int range>", output)


def test_version_prints_the_package_version_and_exits_0():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"pooling-lab {pooling_lab.__version__}"


@pytest.mark.parametrize("kind", ["pools", "heads", "backbones"])
def test_list_tables_show_no_markup_of_the_docstrings(kind):
    result = invoke("list", kind)
    assert result.exit_code == 0
    assert "``" not in result.output
    if kind == "backbones":
        assert "depth stages of convs_per_stage 3x3 conv-BN-ReLU layers" in result.output


def markdown_files() -> set[str]:
    """The names and repository paths of the Markdown files (outside hidden folders)."""
    found = set()
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.endswith(".md"):
                found |= {name, str((Path(folder) / name).relative_to(REPO))}
    return found


def test_files_cited_in_the_code_are_in_the_repository():
    """A comment or docstring may send a reader to a document (README.md, benchmarks/RESULTS.md:
    an upper-case Markdown name) only if the repository has it."""
    present = markdown_files()
    missing = {}
    for source in [*REPO.glob("pooling_lab/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py")]:
        for name in re.findall(r"\b((?:[\w.-]+/)*[A-Z][A-Z0-9_-]*\.md)\b", source.read_text()):
            if name not in present:
                missing.setdefault(name, str(source.relative_to(REPO)))
    assert missing == {}
