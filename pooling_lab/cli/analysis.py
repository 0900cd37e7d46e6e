"""Commands that read results: figures, statistics, probes and evaluations of trained runs,
comparisons and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pooling_lab.cli import Debug, _App, _warn, app, console, errors, user_errors
from pooling_lab.errors import UserError


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


@app.command()
def compare(
    results_dirs: Annotated[list[Path], typer.Argument(help="Two or more experiments' results directories.")],
    by: Annotated[str | None, typer.Option("--by", help="Swept key to compare along [default: the first all share].")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for compare.csv/.md/.png/.pdf "
                                             "[default: ./compare_A_vs_B, after the experiments' names].")] = None,
    debug: Debug = False,
) -> None:
    """Compare experiments (e.g. SGD vs Adam, closed vs open set): per swept value the learned p,
    p_opt, the regret and the final metrics, mean over seeds with 95% bootstrap intervals, one
    column per experiment; one figure."""
    from pooling_lab.analysis.compare import compare_experiments

    with user_errors(debug):
        comparison = compare_experiments(results_dirs, by, out)
    _warn(comparison.damaged)
    console.print(comparison.rich_table())
    console.print("wrote " + ", ".join(str(path) for path in comparison.written), soft_wrap=True)


@app.command()
def regimes(
    study_dir: Annotated[Path, typer.Argument(help="A study folder: one experiment results folder per arm, e.g. "
                                              "results/reference/p_drift_regimes.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the tables and figures/ "
                                             "[default: STUDY_DIR].")] = None,
    debug: Debug = False,
) -> None:
    """Analyse a p-drift regime study: per cell (one folder's runs with equal varied settings,
    the seeds) the learned p, p_opt, the plateau, the log drift, the regret and the test metrics
    with bootstrap intervals, and the gradient split of p (regimes.csv, regimes.md); per regime
    the margin's Spearman correlations with the regret and the log drift, and the balance of the
    gradient's parts against the log drift (regimes_correlations.csv); figures/: phase_regret,
    phase_log_drift, `mechanism_<experiment>` and remedies (PNG and PDF)."""
    from pooling_lab.analysis.plots.regimes import regime_figures, save_figures
    from pooling_lab.analysis.regimes import load_study, regime_tables, write_tables

    with user_errors(debug):
        study = load_study(study_dir)
        _warn(study.warnings)
        tables = regime_tables(study)
        figures = regime_figures(study, tables)
        target = out or study_dir
        written = write_tables(tables, target) + save_figures(figures, target)
    console.print(f"{len(tables.cells)} cells of {len(study.runs)} runs; wrote " + ", ".join(map(str, written)),
                  markup=False, highlight=False, soft_wrap=True)


export = _App(help="Write an experiment's results for other tools.", no_args_is_help=True)
app.add_typer(export, name="export")


@export.command("tensorboard")
def export_tensorboard(
    results_dir: Annotated[Path, typer.Argument(help="An experiment's results directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the export (an earlier export there is replaced).")],
    debug: Debug = False,
) -> None:
    """One TensorBoard event-file folder per run: every metric, every pooling-parameter trace and
    gradient, the probe curve, and hparams (swept values -> final numbers); needs
    `pip install pooling-lab[tensorboard]`."""
    from pooling_lab import results

    with user_errors(debug):
        try:
            from pooling_lab.analysis import tensorboard_export
        except ModuleNotFoundError as error:
            if error.name != "tensorboard":
                raise
            raise UserError("pooling-lab export tensorboard needs tensorboard: pip install pooling-lab[tensorboard]") from None
        loaded = results.load(results_dir)
        _warn(loaded.damaged)
        written = tensorboard_export.export(loaded, out)
    console.print(f"wrote {len(written)} run(s) to {out}; view with: tensorboard --logdir {out}", soft_wrap=True)
