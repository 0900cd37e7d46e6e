"""The ``pooling-lab`` command line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from pooling_lab import __version__
from pooling_lab.errors import UserError, file_system_fault


class _FlagsTakeNoValue:
    """--help shows no value type for a flag (typer shows `<bool>` for every flag, --help
    included, though a flag takes no value)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


class _App(typer.Typer):
    """A Typer app whose groups and commands show flags without a value type."""

    def __init__(self, **options: Any):
        super().__init__(cls=_Group, **options)

    def command(self, *args: Any, **options: Any) -> Any:
        return super().command(*args, cls=_Command, **options)


app = _App(
    help="Train classifiers with swappable pooling layers and trace how learnable pooling "
    "parameters (GeM's p above all) evolve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring lines join into paragraphs in --help
)
console = Console()
errors = Console(stderr=True)

Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: key.path=value (value parsed as YAML). Repeatable."),
]
ExperimentFile = Annotated[Path, typer.Argument(help="Experiment YAML file.")]


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"pooling-lab {__version__}")
        raise typer.Exit()


@app.callback()
def _common_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Print a ``UserError`` as one line and exit with code 2 (unless --debug); so also a fault of
    the file system (a full disk, a read-only mount), an ``OSError`` naming the file it hit."""
    try:
        try:
            yield
        except OSError as error:
            raise file_system_fault(error) from error
    except UserError as error:
        if debug:
            raise
        errors.print(f"[bold red]error:[/] {escape(error.one_line())}", highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None


def _warn(lines: list[str]) -> None:
    for line in lines:
        errors.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def validate(experiment: ExperimentFile, overrides: Overrides = None, debug: Debug = False) -> None:
    """Check an experiment file and print how many runs it expands to."""
    from pooling_lab.experiment import load_plan

    with user_errors(debug):
        plan = load_plan(experiment, overrides or [])
    axes = ", ".join(plan.swept_keys) or "no swept keys"
    console.print(f"ok: {experiment}: {len(plan.runs)} run(s) ({axes})")


@app.command()
def run(
    experiment: ExperimentFile,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results root; runs go to `OUT/<name>/`.")] = Path("results"),
    overrides: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded run table, train nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print one line per run start and end, and failures; "
                                        "no bars, no epoch lines, no summary table.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Train N runs at once in separate processes, "
                                      "dividing the CPU threads (or the visible GPUs) between them.")] = 1,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed or diverged run.")] = False,
    debug: Debug = False,
) -> None:
    """Train every run of an experiment (finished runs are skipped, interrupted ones resumed;
    runs another `pooling-lab run` on the same results holds are left to it).  Exit code: 0 every
    run done, 1 some run failed, diverged or is left to do, 2 bad input, 130 / 143 stopped by
    Ctrl-C / SIGTERM (checkpointed: run the same command again to resume).

    Progress: stdout gets one line per run start (or resume), epoch and end as they happen, so a
    log fills while the runs go; failures go to stderr at once; on a terminal, stderr also shows
    live bars with an ETA, one per run in training."""
    from pooling_lab import results
    from pooling_lab.experiment import load_plan
    from pooling_lab.run import signals
    from pooling_lab.run.parallel import new_job, run_parallel
    from pooling_lab.run.progress import SweepDisplay, TrainerProgress, plan_table, summary_table
    from pooling_lab.run.sweep import experiment_dir, final_statuses, prepare, run_plan, unfinished

    with user_errors(debug):
        plan = load_plan(experiment, overrides or [])
        root = experiment_dir(plan, out)
        if dry_run:
            states = {s.run_id: (results.read_status(results.RunFiles(root / s.dir_name)) or {}).get("status", "pending")
                      for s in plan.runs}
            console.print(plan_table(plan, states))
            return
        prepared = prepare(plan, out)
    display = SweepDisplay(console, errors, root, len(plan.runs), quiet=quiet)
    with signals.catching(), user_errors(debug):
        try:
            with display:
                if jobs > 1:
                    stopped_by = run_parallel(new_job(experiment, out, overrides or [], jobs, fail_fast), jobs, display)
                    if stopped_by is not None:
                        raise signals.Interrupted(stopped_by)
                    statuses = final_statuses(prepared)
                else:
                    statuses = run_plan(prepared, progress=TrainerProgress(display), on_event=display, fail_fast=fail_fast)
        except signals.Interrupted as error:
            errors.print(f"{error}: checkpointed; run the same command again to resume", soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            errors.print("interrupted: run the same command again to resume from the last checkpoint", soft_wrap=True)
            raise typer.Exit(130) from None
    if not quiet:
        console.print(summary_table(plan, statuses))
    console.print(f"results: {root}", soft_wrap=True)
    if unfinished(statuses):
        raise typer.Exit(1)


@app.command()
def status(
    results_dir: Annotated[Path, typer.Argument(help="An experiment's results directory, e.g. results/quickstart.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    debug: Debug = False,
) -> None:
    """Each run's state, progress (epoch, step), final p, accuracy and error; a run whose
    process died shows as stopped (run the experiment again to resume it)."""
    import json

    from pooling_lab.run.progress import error_lines, status_table
    from pooling_lab.run.status import overview

    with user_errors(debug):
        view = overview(results_dir)
    _warn(view.damaged)
    if as_json:
        typer.echo(json.dumps(view.as_json(), indent=2, default=str))
    else:
        console.print(status_table(f"{view.name}: {len(view.runs)} runs", view.runs))
        for line in error_lines(view.runs):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def plot(
    results_dir: Annotated[Path, typer.Argument(help="An experiment's results directory, e.g. results/quickstart.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the figures [default: RESULTS_DIR/plots].")] = None,
    debug: Debug = False,
) -> None:
    """Draw p over training, final p with p_opt and the plateau against the swept key, the mAP
    regret, probe curves, per-channel p histograms, metrics against p, accuracy, and the fixed-p
    curve (PNG and PDF)."""
    from pooling_lab import results
    from pooling_lab.analysis.plots import plot_results

    with user_errors(debug):
        loaded = results.load(results_dir)
        _warn(loaded.damaged)
        written = plot_results(
            loaded.runs, loaded.metrics, loaded.params, loaded.swept, out or results_dir / "plots",
            title=loaded.experiment.get("name"), probe=loaded.probe, final_params=loaded.final_params,
            configs=loaded.configs,
        )
    for path in written:
        console.print(str(path))


@app.command()
def figures(
    spec: Annotated[Path, typer.Argument(help="A figure spec, e.g. analysis/paper.yaml.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the figures [default: the spec's output].")] = None,
    debug: Debug = False,
) -> None:
    """Draw the paper figures of a YAML spec as vector PDF and 300-dpi PNG, in one style."""
    from pooling_lab.analysis.figures import make_figures

    with user_errors(debug):
        written = make_figures(spec, out)
    for path in written:
        console.print(str(path))


@app.command()
def probe(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's directory (it needs checkpoint.pt).")],
    p: Annotated[str | None, typer.Option("--p", help="Test-time p values: start:stop:step (stop included) or a "
                                          "comma list [default: the run's eval.probe_p].")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the run's probe.csv and its p_opt (status.json, "
                                          "runs.csv) instead of writing `probe_<grid>.csv` beside them.")] = False,
    debug: Debug = False,
) -> None:
    """Evaluate a trained run with its GeM p replaced by each value, by inf (max pooling) and by
    its learned p; write `probe_<grid>.csv` beside the recorded probe.csv (or, with --replace,
    rewrite probe.csv, p_opt, the plateau, the edge flag, the regret and the log drift)."""
    from pooling_lab.evaluate.reprobe import parse_p_values, reprobe

    with user_errors(debug):
        outcome = reprobe(run_dir, None if p is None else parse_p_values(p), replace)
    if outcome.warning:
        errors.print(f"warning: {outcome.warning}", markup=False, highlight=False, soft_wrap=True)
    final = outcome.final
    edge = " (at the grid's edge)" if final.get("p_opt_at_edge") else ""
    console.print(
        f"p_opt = {final['p_opt']:g}{edge}, plateau from p = {final.get('p_plateau', float('nan')):g} "
        f"(learned p = {outcome.p_final:.4g}, regret {final.get('regret', float('nan')):.4f} val mAP); "
        f"test mAP {final.get('test_map', float('nan')):.4f} at the learned p, "
        f"{final.get('test_map_at_p_opt', float('nan')):.4f} at p_opt; wrote {outcome.path}",
        markup=False, highlight=False, soft_wrap=True,
    )


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's directory (it needs checkpoint.pt).")],
    data: Annotated[str, typer.Option("--data", help="roxford5k or rparis6k.")],
    root: Annotated[Path, typer.Option("--root", help="Folder holding `<data>/gnd_<data>.pkl` and `<data>/jpg/` "
                                       "(revisitop's data/datasets).")] = Path("~/.cache/pooling-lab"),
    download: Annotated[bool, typer.Option("--download", help="Download a missing data set (needs internet).")] = False,
    image_size: Annotated[int | None, typer.Option("--image-size", min=16, max=1024, help="Side of the square images "
                                                   "[default: the run's].")] = None,
    cache_root: Annotated[Path | None, typer.Option("--cache-root", help="Folder of the decoded-image cache "
                                                    "[default: ~/.cache/pooling-lab/image-cache].")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Evaluate again over an earlier `revisited_<data>.csv`.")] = False,
    debug: Debug = False,
) -> None:
    """Evaluate a trained run on revisited Oxford or Paris (evaluation-only data sets) with
    multi-scale descriptors: easy / medium / hard mAP and mP@1, 5, 10 as fractions, written to
    `revisited_<data>.csv` in the run folder; what the run recorded stays as it is."""
    from pooling_lab.data.spec import EVALUATION_ONLY_DATASETS
    from pooling_lab.evaluate.landmarks import evaluate_on_revisited

    with user_errors(debug):
        if data not in EVALUATION_ONLY_DATASETS:
            raise UserError(f"{data!r} is not one of {', '.join(EVALUATION_ONLY_DATASETS)}", field="--data")
        outcome = evaluate_on_revisited(run_dir, data, root.expanduser(), download, image_size,
                                        cache_root and cache_root.expanduser(), replace)
    scores = ", ".join(f"{protocol} {outcome.scores[protocol]:.4f}" for protocol in ("easy", "medium", "hard"))
    console.print(f"{data}: mAP {scores}; wrote {outcome.path}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def stats(
    results_dir: Annotated[Path, typer.Argument(help="An experiment's results directory.")],
    by: Annotated[str | None, typer.Option("--by", help="Swept key to group the drift by [default: the first numeric one]; "
                                                   "another key writes drift_by_KEY.csv/.md.")] = None,
    debug: Debug = False,
) -> None:
    """Drift statistics per swept value: the mAP regret at the learned p, the log drift
    (ln p_learned - ln p_opt, and with the plateau's p), p_opt, the plateau and the edge flag,
    with bootstrap intervals, and the Spearman correlations of the swept value with the regret
    and the log drifts (drift.csv, drift.md); for runs of a fixed GeM p, the train-time optimum
    curve (fixed_p.csv, fixed_p.md)."""
    from pooling_lab import results
    from pooling_lab.analysis.stats import write_reports

    with user_errors(debug):
        loaded = results.load(results_dir)
        _warn(loaded.damaged)
        written = write_reports(loaded, by)
    for path in written:
        if path.suffix == ".md":
            console.print(path.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print("wrote " + ", ".join(str(path) for path in written))


catalogue = _App(help="List what can be named in an experiment file.", no_args_is_help=True)
app.add_typer(catalogue, name="list")


@catalogue.command("pools")
def list_pools() -> None:
    """Global and local pools: name, kind, learnable parameters and defaults."""
    from rich.table import Table

    from pooling_lab.pooling import GLOBAL_POOLS, LOCAL_POOLS
    from pooling_lab.registry import describe_defaults

    table = Table(title="pools (model.pool: global; model.local_pool: local)")
    for column in ("name", "kind", "learnable", "defaults", "what"):
        table.add_column(column)
    for kind, registry in (("global", GLOBAL_POOLS), ("local", LOCAL_POOLS)):
        for entry in registry.entries():
            learnable = ", ".join(registry.build(entry.name, channels=8).traced()) or "-"
            defaults = ", ".join(f"{k}={v}" for k, v in describe_defaults(entry).items()) or "-"
            table.add_row(entry.name, kind, learnable, escape(defaults), _what(entry))
    console.print(table)


@catalogue.command("heads")
def list_heads() -> None:
    """Classification heads and their defaults."""
    from pooling_lab.models.heads import HEADS

    _print_registry("heads (head:)", HEADS)


@catalogue.command("backbones")
def list_backbones() -> None:
    """Backbones and their defaults."""
    from pooling_lab.models import BACKBONES

    _print_registry("backbones (model.backbone:)", BACKBONES)


def _what(entry: Any) -> str:
    """A registry entry's summary as plain text: its docstring's ``name`` literals unquoted."""
    return escape(entry.summary.replace("``", ""))


def _print_registry(title: str, registry: Any) -> None:
    from rich.table import Table

    from pooling_lab.registry import describe_defaults

    table = Table(title=title)
    for column in ("name", "defaults", "what"):
        table.add_column(column)
    for entry in registry.entries():
        defaults = ", ".join(f"{k}={v}" for k, v in describe_defaults(entry).items()) or "-"
        table.add_row(entry.name, escape(defaults), _what(entry))
    console.print(table)


def main() -> None:
    app(prog_name="pooling-lab")


if __name__ == "__main__":
    sys.exit(main())
