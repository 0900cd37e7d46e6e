"""The ``pooling-lab`` command line: the app, its shared options and one-line errors, and the
commands that define and run experiments; ``analysis`` and ``catalogue`` add the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from pooling_lab import __version__
from pooling_lab.errors import UserError, file_system_fault

if TYPE_CHECKING:  # imported where used, so that `pooling-lab --help` starts fast
    from pooling_lab.experiment import Plan
    from pooling_lab.run.sweep import Prepared
    from pooling_lab.train.distributed import World


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
    experiments: Annotated[list[Path], typer.Argument(help="Experiment YAML file(s); several run one after another.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results root; runs go to `OUT/<name>/`.")] = Path("results"),
    overrides: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded run table, train nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print one line per run start and end, and failures; "
                                        "no bars, no epoch lines, no summary table.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Train N runs at once in separate processes, "
                                      "dividing the CPU threads (or the visible GPUs) between them.")] = 1,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed or diverged run.")] = False,
    gpus: Annotated[int | None, typer.Option("--gpus", min=1, help="Train each run data-parallel on G GPUs of this "
                                             "machine: starts `torchrun --nproc_per_node=G` with this command.")] = None,
    debug: Debug = False,
) -> None:
    """Train every run of an experiment (finished runs are skipped, interrupted ones resumed;
    runs another `pooling-lab run` on the same results holds are left to it).  Several files
    (the arms of a study) are all checked first, then run one after another, each into its own
    `OUT/<name>/`.  Exit code: 0 every run done, 1 some run failed, diverged or is left to do,
    2 bad input, 130 / 143 stopped by Ctrl-C / SIGTERM (checkpointed: run the same command
    again to resume).

    Progress: stdout gets one line per run start (or resume), epoch and end as they happen, so a
    log fills while the runs go; failures go to stderr at once; on a terminal, stderr also shows
    live bars with an ETA, one per run in training.

    Several GPUs: `torchrun --nproc_per_node=G -m pooling_lab run EXP.yaml` (or `--gpus G`) trains
    each run on G processes, each on its share of every batch; rank 0 writes the results."""
    from pooling_lab.experiment import load_plan
    from pooling_lab.run import signals
    from pooling_lab.run.sweep import prepare, unfinished
    from pooling_lab.train import distributed

    if gpus is not None and not dry_run:
        with user_errors(debug):
            if jobs > 1:
                raise UserError("--gpus and --jobs do not go together: each run takes all G GPUs", field="--jobs")
            distributed.start_torchrun(gpus, _run_arguments(experiments, out, overrides, quiet, fail_fast, debug))
    with user_errors(debug):
        if jobs > 1 and distributed.launched_by_torchrun():
            raise UserError("--jobs cannot be used under torchrun (each run already takes every process)", field="--jobs")
        plans = [load_plan(experiment, overrides or []) for experiment in experiments]
        _refuse_shared_names(plans)
        if dry_run:
            for plan in plans:
                _print_plan(plan, out)
            return
        world = distributed.join()
        prepared = [prepare(plan, out, world) for plan in plans]
    left = False
    with signals.catching(), user_errors(debug), contextlib.closing(world):
        for experiment, ready in zip(experiments, prepared, strict=True):
            statuses = _train(experiment, ready, Options(out, overrides or [], quiet, jobs, fail_fast), world)
            left |= bool(unfinished(statuses))
            if left and fail_fast:
                break
    if left:
        raise typer.Exit(1)


@dataclass(frozen=True)
class Options:
    """What `run` passes on to each experiment it trains."""

    out: Path
    overrides: list[str]
    quiet: bool
    jobs: int
    fail_fast: bool


def _train(experiment: Path, prepared: Prepared, options: Options, world: World) -> list[dict[str, Any]]:
    """Train one prepared experiment (here, or in --jobs workers) with its progress display;
    print its summary; return its runs' statuses."""
    from pooling_lab.run import signals
    from pooling_lab.run.parallel import new_job, run_parallel
    from pooling_lab.run.progress import SweepDisplay, TrainerProgress, summary_table
    from pooling_lab.run.sweep import final_statuses, run_plan

    plan, root = prepared.plan, prepared.root
    display = SweepDisplay(console, errors, root, len(plan.runs), quiet=options.quiet or not world.is_main)
    try:
        with display:
            if options.jobs > 1:
                job = new_job(experiment, options.out, options.overrides, options.jobs, options.fail_fast)
                stopped_by = run_parallel(job, options.jobs, display)
                if stopped_by is not None:
                    raise signals.Interrupted(stopped_by)
                statuses = final_statuses(prepared)
            else:
                statuses = run_plan(prepared, progress=TrainerProgress(display), on_event=display,
                                    fail_fast=options.fail_fast, world=world)
    except signals.Interrupted as error:
        errors.print(f"{error}: checkpointed; run the same command again to resume", soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        errors.print("interrupted: run the same command again to resume from the last checkpoint", soft_wrap=True)
        raise typer.Exit(130) from None
    if world.is_main:
        if not options.quiet:
            console.print(summary_table(plan, statuses))
        console.print(f"results: {root}", soft_wrap=True)
    return statuses


def _refuse_shared_names(plans: list[Plan]) -> None:
    """Two files naming one experiment would write into one results folder."""
    seen: dict[str, Path] = {}
    for plan in plans:
        name = plan.experiment.name
        if name in seen:
            raise UserError(f"names the experiment {name!r}, as {seen[name]} does: their runs would share "
                            "one results folder", source=str(plan.source), field="name")
        seen[name] = plan.source


def _print_plan(plan: Plan, out: Path) -> None:
    from pooling_lab import results
    from pooling_lab.run.progress import plan_table
    from pooling_lab.run.sweep import experiment_dir

    root = experiment_dir(plan, out)
    states = {spec.run_id: (results.read_status(results.RunFiles(root / spec.dir_name)) or {}).get("status", "pending")
              for spec in plan.runs}
    console.print(plan_table(plan, states))


def _run_arguments(experiments: list[Path], out: Path, overrides: list[str] | None, quiet: bool, fail_fast: bool,
                   debug: bool) -> list[str]:
    """The arguments of `pooling-lab run` that each torchrun process gets (--gpus left out)."""
    flags = [flag for flag, on in (("--quiet", quiet), ("--fail-fast", fail_fast), ("--debug", debug)) if on]
    sets = [part for override in overrides or [] for part in ("--set", override)]
    return ["run", *map(str, experiments), "--out", str(out), *sets, *flags]


@app.command()
def submit(
    experiment: ExperimentFile,
    executor: Annotated[str, typer.Option("--executor", help="slurm (a job array) or local (processes here).")],
    array: Annotated[int, typer.Option("--array", min=1, help="Number of tasks, each a `pooling-lab run` on the "
                                       "same results (the runs are divided between them).")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results root; runs go to `OUT/<name>/`.")] = Path("results"),
    overrides: Overrides = None,
    time: Annotated[int | None, typer.Option("--time", min=1, help="Each task's time limit in minutes; near it the "
                                             "task checkpoints and is requeued [needed with slurm; local default: "
                                             "none].")] = None,
    signal_delay: Annotated[int | None, typer.Option("--signal-delay", min=1, help="Seconds before the time limit "
                                                     "at which the task checkpoints.")] = None,
    gpus_per_task: Annotated[int | None, typer.Option("--gpus-per-task", min=0, help="GPUs for each task.")] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option("--cpus-per-task", min=1, help="Slurm only.")] = None,
    mem: Annotated[int | None, typer.Option("--mem", min=1, help="Memory per node in GB (Slurm only).")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Slurm account.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the tasks; exit code 0 only if every run is done.")] = False,
    debug: Debug = False,
) -> None:
    """Submit a sweep as tasks through submitit (`pip install pooling-lab[slurm]`): each task runs
    `pooling-lab run` on the same results folder; near its time limit or when preempted a task
    checkpoints its run and is requeued, and resumes.  Logs: `OUT/<name>/submitit/`."""
    with user_errors(debug):
        try:
            from pooling_lab.run import submit as cluster
        except ModuleNotFoundError as error:
            if error.name != "submitit":
                raise
            raise UserError("pooling-lab submit needs submitit: pip install pooling-lab[slurm]") from None
        from pooling_lab.run.progress import summary_table
        from pooling_lab.run.sweep import unfinished

        resources = cluster.Resources(time, signal_delay, gpus_per_task, partition, cpus_per_task, mem, account)
        submitted = cluster.submit(experiment, out, overrides or [], executor, array, resources)
        ids = ", ".join(job.job_id for job in submitted.jobs)
        console.print(f"submitted {len(submitted.jobs)} task(s): {ids}; logs: {submitted.log_folder}", markup=False,
                      soft_wrap=True)
        if not wait:
            console.print(f"follow with: pooling-lab status {submitted.prepared.root}", markup=False, soft_wrap=True)
            return
        statuses, failures = cluster.wait(submitted)
    _warn(failures)
    console.print(summary_table(submitted.prepared.plan, statuses))
    console.print(f"results: {submitted.prepared.root}", markup=False, soft_wrap=True)
    if unfinished(statuses) or failures:
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


from pooling_lab.cli import analysis, catalogue  # noqa: E402, F401  (register their commands after these)


def main() -> None:
    app(prog_name="pooling-lab")

