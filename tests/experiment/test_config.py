"""The config layer: schema and defaults, ``--set`` overrides, sweep expansion, run ids, and the
one-line errors (file, YAML line, dotted field, bad value) that the CLI turns into exit code 2."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pooling_lab.cli import app
from pooling_lab.errors import UserError
from pooling_lab.experiment import Plan, load_plan
from pooling_lab.experiment.overrides import parse_override
from pooling_lab.pooling import GLOBAL_POOLS

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
HEADER = "name: t\ndata: {dataset: synthetic}\n"  # lines 1-2 of the files written below


def write(directory: Path, text: str, name: str = "exp.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def load_error(path: Path, overrides: tuple[str, ...] = ()) -> UserError:
    with pytest.raises(UserError) as caught:
        load_plan(path, overrides)
    assert "\n" not in str(caught.value)
    return caught.value


# --- loading and defaults ----------------------------------------------------------------------


def test_quickstart_expands_its_grid():
    raw = yaml.safe_load(QUICKSTART.read_text())
    plan = load_plan(QUICKSTART)
    grid = raw["sweep"]["grid"]
    assert plan.experiment.name == raw["name"]
    assert plan.swept_keys == list(grid)
    assert len(plan.runs) == len(list(itertools.product(*grid.values())))
    for run, values in zip(plan.runs, itertools.product(*grid.values()), strict=True):
        dumped = run.config.model_dump()
        assert run.swept == dict(zip(grid, values, strict=True))
        assert all(dotted(dumped, key) == value for key, value in run.swept.items())
        assert run.config.train.seed == raw["train"]["seed"]


def test_defaults_are_filled(tmp_path):
    plan = load_plan(write(tmp_path, HEADER))
    [run] = plan.runs
    resolved = run.config.model_dump()
    assert resolved["optim"]["pool_params"] == {"lr_mult": 10.0, "weight_decay": 0.0, "freeze_epochs": 0, "clamp": None}
    expected_pool = {"name": "gem", "p": 3.0, "learnable": True, "mode": "shared", "eps": 1e-6}
    assert {key: resolved["model"]["pool"][key] for key in expected_pool} == expected_pool
    assert resolved["head"]["name"] == "linear"
    assert resolved["optim"]["lr"] == 0.1 and resolved["train"]["epochs"] == 10
    assert plan.experiment.sweep is None and plan.swept_keys == [] and run.swept == {}
    assert run.dir_name == f"seed=0_{run.run_id[:6]}"


def test_component_without_name_is_the_default_one(tmp_path):
    path = write(tmp_path, HEADER + "model: {pool: {p: 4}}\n")
    assert load_plan(path).experiment.model.pool.model_dump() == GLOBAL_POOLS.get("gem").spec_model(p=4.0).model_dump()
    assert load_plan(write(tmp_path, HEADER, "bare.yaml"), ["model.pool.p=5"]).experiment.model.pool.p == 5.0


# --- sweeps ------------------------------------------------------------------------------------

SWEEP = HEADER + """\
head: {name: arcface}
sweep:
  grid:
    model.pool.p: [1, 2]
    optim.lr: [0.1, 0.01, 0.001]
  zip:
    head.margin: [0.1, 0.3]
    head.scale: [16, 32]
  seeds: [0, 1, 2]
"""


def test_grid_zip_and_seeds_expand_to_every_combination(tmp_path):
    plan = load_plan(write(tmp_path, SWEEP))
    assert plan.swept_keys == ["model.pool.p", "optim.lr", "head.margin", "head.scale"]
    assert len(plan.runs) == 36
    got = [
        (c.model.pool.p, c.optim.lr, c.head.margin, c.head.scale, c.train.seed)
        for c in (run.config for run in plan.runs)
    ]
    expected = [
        (p, lr, margin, scale, seed)
        for p, lr, (margin, scale), seed in itertools.product(
            [1, 2], [0.1, 0.01, 0.001], [(0.1, 16), (0.3, 32)], [0, 1, 2]
        )
    ]
    assert got == expected
    assert len({run.run_id for run in plan.runs}) == 36
    assert len({run.dir_name for run in plan.runs}) == 36
    first = plan.runs[0]
    assert first.swept == {"model.pool.p": 1, "optim.lr": 0.1, "head.margin": 0.1, "head.scale": 16}
    assert first.dir_name == f"p=1_lr=0.1_margin=0.1_scale=16_seed=0_{first.run_id[:6]}"


def test_whole_pool_mappings_can_be_swept(tmp_path):
    text = HEADER + "sweep:\n  grid:\n    model.pool: [{name: avg}, {name: gem, p: 2}]\n"
    plan = load_plan(write(tmp_path, text))
    pools = [run.config.model.pool.model_dump() for run in plan.runs]
    assert pools == [
        {"name": "avg"},
        GLOBAL_POOLS.get("gem").spec_model(p=2.0).model_dump(),
    ]
    assert [run.dir_name.rsplit("_", 1)[0] for run in plan.runs] == ["pool=avg_seed=0", "pool=gem,p=2_seed=0"]


def test_zip_lists_of_different_lengths_are_an_error(tmp_path):
    text = HEADER + "head: {name: arcface}\nsweep:\n  zip:\n    head.margin: [0.1, 0.2]\n    head.scale: [16, 32, 64]\n"
    path = write(tmp_path, text)
    error = load_error(path)
    assert (error.source, error.field) == (f"{path}:4", "sweep")
    assert "zip lists differ in length: head.margin has 2, head.scale has 3" in str(error)


@pytest.mark.parametrize(
    ("sweep", "field", "line"),
    [
        ("sweep:\n  grid:\n    optim.lr: []\n", "sweep.grid.optim.lr", 5),
        ("sweep:\n  zip: {optim.lr: []}\n", "sweep.zip.optim.lr", 4),
        ("sweep:\n  seeds: []\n", "sweep.seeds", 4),
    ],
)
def test_empty_sweep_lists_are_an_error(tmp_path, sweep, field, line):
    path = write(tmp_path, HEADER + sweep)
    error = load_error(path)
    assert (error.source, error.field) == (f"{path}:{line}", field)
    assert "at least 1 item" in error.detail


def test_a_sweep_that_repeats_a_run_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "sweep:\n  grid: {optim.lr: [0.1, 0.2, 0.1]}\n")
    error = load_error(path)
    assert (error.source, error.field) == (f"{path}:3", "sweep")
    assert "same run twice (optim.lr=0.1, train.seed=0 and optim.lr=0.1, train.seed=0)" in error.detail


def test_a_bad_swept_value_points_at_the_sweep_axis(tmp_path):
    path = write(tmp_path, HEADER + "head: {name: arcface}\nsweep:\n  grid:\n    head.margin: [0.5, 3.2]\n")
    error = load_error(path)
    assert (error.source, error.field) == (f"{path}:6", "head.margin")
    assert "(got 3.2) (in the sweep run head.margin=3.2)" in error.detail


def test_a_sweep_axis_through_a_scalar_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "train: {epochs: 3}\nsweep:\n  grid: {train.epochs.x: [1]}\n")
    error = load_error(path)
    assert str(error) == f"{path}:5: train.epochs.x: cannot set it: train.epochs is 3, not a mapping"


# --- --set overrides ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.epochs=3", "train.epochs", 3),
        ("optim.lr=1e-3", "optim.lr", 1e-3),
        ("optim.pool_params.clamp=[1, null]", "optim.pool_params.clamp", [1, None]),
        ("head={name: cosface, margin: 0.2}", "head", {"name": "cosface", "margin": 0.2}),
        ("sweep=null", "sweep", None),
        ("model.pool.mode=per_channel", "model.pool.mode", "per_channel"),
        ("description=two words", "description", "two words"),
        ("description=a=b", "description", "a=b"),
        ("sweep.grid.head.margin=[0, 0.5]", "sweep.grid.head.margin", [0, 0.5]),
    ],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train..epochs=3", "train.epochs.=3"])
def test_override_without_a_key_path_is_an_error(text):
    with pytest.raises(UserError, match="--set expects key.path=value"):
        parse_override(text)


def test_overrides_reach_the_resolved_config(tmp_path):
    overrides = [
        "train.epochs=3",
        "optim.pool_params.clamp=[1, null]",
        "head={name: cosface, margin: 0.2}",
        "model.pool.mode=per_channel",
        "name=renamed",
    ]
    experiment = load_plan(write(tmp_path, HEADER), overrides).experiment
    assert experiment.train.epochs == 3
    assert experiment.optim.pool_params.clamp == (1.0, None)
    assert experiment.head.model_dump() == {"name": "cosface", "scale": 30.0, "margin": 0.2, "label_smoothing": 0.0}
    assert experiment.model.pool.mode == "per_channel"
    assert experiment.name == "renamed"


def test_sweep_null_runs_the_base_once_and_sweep_axes_can_be_set(tmp_path):
    path = write(tmp_path, SWEEP)
    once = load_plan(path, ["sweep=null"])
    assert len(once.runs) == 1 and once.swept_keys == []
    swept = load_plan(path, ["sweep=null", "sweep.grid.head.margin=[0, 0.5]"])
    assert swept.swept_keys == ["head.margin"]
    assert [run.config.head.margin for run in swept.runs] == [0.0, 0.5]


def test_exponent_notation_reads_as_a_number(tmp_path):
    """PyYAML alone (YAML 1.1) reads 1e-3 as the string '1e-3'."""
    path = write(tmp_path, HEADER + "optim: {lr: 1e-3}\nsweep:\n  grid: {optim.weight_decay: [0, 5e-4, 1E-3]}\n")
    plan = load_plan(path, ["train.epochs=1e1"])
    assert plan.experiment.optim.lr == 0.001 and plan.experiment.train.epochs == 10
    assert [run.swept["optim.weight_decay"] for run in plan.runs] == [0, 0.0005, 0.001]
    assert plan.runs[1].dir_name.startswith("weight_decay=0.0005_seed=0_")


def test_override_through_a_non_mapping_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "sweep: [1]\n")
    error = load_error(path, ("sweep.grid.head.margin=[0.1]",))
    assert str(error) == "--set: sweep.grid.head.margin: cannot set it: sweep is [1], not a mapping"


# --- run ids -----------------------------------------------------------------------------------


def test_run_ids_depend_on_training_values_only(tmp_path):
    path = write(tmp_path, HEADER + "optim: {lr: 1}\n")

    def run_id(*overrides: str) -> str:
        [run] = load_plan(path, overrides).runs
        return run.run_id

    base = run_id()
    assert run_id() == base
    assert run_id("optim.lr=1.0") == base  # the same value written as a float
    assert run_id("name=other", "description=notes") == base
    changed = [run_id("optim.lr=0.5"), run_id("model.pool.p=2"), run_id("train.seed=1"), run_id("head.name=cosine")]
    assert len({base, *changed}) == 5


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "field", "shown"),
    [
        ("bogus: 1\n", "bogus", "unknown key; allowed: name, description, data, model"),
        ("optim: {lrr: 0.1}\n", "optim.lrr", "unknown key (did you mean 'lr'?)"),
        ("model:\n  pool: {name: gemm, p: 3}\n", "model.pool.name", "unknown name 'gemm' (did you mean 'gem'?); allowed: " + ", ".join(GLOBAL_POOLS.names())),
        ("model:\n  pool: {name: gem, p: -1}\n", "model.pool.p", "(got -1)"),
        ("model:\n  pool: {name: gem, p: .inf}\n", "model.pool.p", "finite number (got inf)"),
        ("optim: {lr: -0.1}\n", "optim.lr", "greater than 0 (got -0.1)"),
        ("optim: {name: sgdd}\n", "optim.name", "'sgdd' is not allowed (did you mean 'sgd'?)"),
        ("head: {name: arcface, margin: 3.2}\n", "head.margin", "less than 3.14159"),
        ("head: {name: linear, margin: 0.3}\n", "head.margin", "unknown key; allowed: name, bias, label_smoothing"),
        ("train: {epochs: abc}\n", "train.epochs", "valid integer, unable to parse string as an integer (got 'abc')"),
    ],
)
def test_bad_values_name_file_line_field_and_value(tmp_path, snippet, field, shown):
    path = write(tmp_path, HEADER + snippet)
    error = load_error(path)
    line = 2 + snippet.count("\n")  # the snippet's last line holds the bad key
    assert (error.source, error.field) == (f"{path}:{line}", field)
    assert str(error).startswith(f"{path}:{line}: {field}: ")
    assert shown in error.detail


def test_margin_is_accepted_on_an_arcface_head(tmp_path):
    path = write(tmp_path, HEADER + "head: {name: arcface, margin: 0.3}\n")
    assert load_plan(path).experiment.head.margin == 0.3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("- a\n- b\n", "expected a mapping of sections at the top, got a list"),
        ("", "expected a mapping of sections at the top, got an empty file"),
        ("name: [t\n", "not valid YAML"),
        (b"\xff\xfe\x00binary", "cannot read"),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "exp.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    error = load_error(path)
    assert error.source.split(":")[0] == str(path)
    assert message in error.detail


# --- the command line --------------------------------------------------------------------------

runner = CliRunner()


def test_cli_validate_reports_the_runs():
    result = runner.invoke(app, ["validate", str(QUICKSTART), "--set", "sweep.seeds=[0, 1]"])
    assert result.exit_code == 0, result.output
    plan = load_plan(QUICKSTART, ["sweep.seeds=[0, 1]"])
    assert result.stdout == f"ok: {QUICKSTART}: {len(plan.runs)} run(s) ({', '.join(plan.swept_keys)})\n"


def test_cli_bad_file_is_one_line_exit_2_and_debug_raises(tmp_path):
    path = write(tmp_path, HEADER + "model: {pool: {name: gemm}}\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {path}:3: model.pool.name: unknown name 'gemm' (did you mean 'gem'?); allowed: " + ", ".join(GLOBAL_POOLS.names())]
    debug = runner.invoke(app, ["validate", str(path), "--debug"])
    assert isinstance(debug.exception, UserError)


def test_cli_run_on_a_bad_file_writes_nothing(tmp_path):
    path = write(tmp_path, HEADER + "train: {epochs: abc}\n")
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "train.epochs" in result.stderr
    assert not out.exists()


def test_cli_subprocess_dry_run_and_error(tmp_path):
    """Through the installed entry point: the run ids printed by another process match this
    one's (the id is stable across processes), nothing is written, and errors are one line."""
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "pooling_lab"]
    out = tmp_path / "results"
    dry = subprocess.run([*command, "run", str(QUICKSTART), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for run in load_plan(QUICKSTART).runs:
        assert run.run_id in dry.stdout and run.dir_name in dry.stdout
    assert not out.exists()

    bad = write(tmp_path, "- not\n- a mapping\n")
    failed = subprocess.run([*command, "validate", str(bad)], capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [f"error: {bad}: expected a mapping of sections at the top, got a list"]
    assert "Traceback" not in failed.stderr + failed.stdout


# --- property: no input makes load_plan fail with anything but a one-line UserError (exit 2) -----

VALID = {
    "name": "fuzz",
    "data": {"dataset": "synthetic", "val_size": 0.1, "synthetic": {"image_size": 16, "cell_size": 2}},
    "model": {"backbone": {"name": "small_cnn", "width": 8}, "pool": {"name": "gem", "p": 3.0}},
    "head": {"name": "arcface", "scale": 16.0, "margin": 0.2},
    "optim": {"lr": 0.1, "pool_params": {"lr_mult": 10.0, "clamp": [1.0, None]}},
    "train": {"epochs": 2, "seed": 0, "checkpoint_every_steps": 5, "on_nonfinite": "skip_step"},
    "sweep": {"grid": {"head.margin": [0.0, 0.3]}, "zip": {"optim.lr": [0.1, 0.2]}, "seeds": [0, 1]},
}


def _paths(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in tree.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found.extend(_paths(value, (*prefix, key)))
    return found


REPLACEMENTS = ["abc", "", 7, -1, 0, 3.2, 1e9, -1e-9, None, True, [1, 2], [], {"x": 1}]
mutations = st.lists(
    st.tuples(st.sampled_from(_paths(VALID)), st.sampled_from(["drop", "rename", "replace"]), st.sampled_from(REPLACEMENTS)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=40, deadline=None)
@given(mutations)
def test_mutated_experiments_give_a_plan_or_a_one_line_error(tmp_path_factory, changes):
    raw = copy.deepcopy(VALID)
    for path, kind, replacement in changes:
        parent = raw
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue  # an earlier change removed or replaced this key
        key = path[-1]
        if kind == "drop":
            del parent[key]
        elif kind == "rename":
            parent[key + "x"] = parent.pop(key)
        else:
            parent[key] = copy.deepcopy(replacement)
    path = tmp_path_factory.mktemp("fuzz") / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        plan = load_plan(path)
    except UserError as error:
        assert "\n" not in str(error)
        assert str(error).startswith(str(path))
        expected = (2, [f"error: {error}"])
    else:
        assert isinstance(plan, Plan) and plan.runs
        expected = (0, [])
    result = runner.invoke(app, ["validate", str(path)])  # and the command line: exit 2, one line, no traceback
    assert (result.exit_code, result.stderr.splitlines()) == expected


def test_labelled_sweep_values_name_the_runs_and_assign_their_values(tmp_path):
    text = HEADER + (
        "sweep:\n"
        "  grid:\n"
        "    model.pool:\n"
        "      plain: {name: avg}\n"
        "      learned: {name: gem, p: 2.0}\n"
        "  zip:\n"
        "    optim.lr: {slow: 0.01, fast: 0.1}\n"
    )
    plan = load_plan(write(tmp_path, text))
    assert [run.swept for run in plan.runs] == [
        {"model.pool": "plain", "optim.lr": "slow"},
        {"model.pool": "plain", "optim.lr": "fast"},
        {"model.pool": "learned", "optim.lr": "slow"},
        {"model.pool": "learned", "optim.lr": "fast"},
    ]
    assert [run.config.model.pool.name for run in plan.runs] == ["avg", "avg", "gem", "gem"]
    assert [run.config.optim.lr for run in plan.runs] == [0.01, 0.1, 0.01, 0.1]
    assert plan.runs[2].dir_name.startswith("pool=learned_lr=slow_seed=0_")
