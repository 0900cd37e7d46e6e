"""Experiments side by side (``pooling-lab compare A B ...``), e.g. SGD vs Adam, closed vs open set.

Along one swept key that every experiment has (``--by``; by default the first of the first
experiment's swept keys that all of them share), per value and per experiment, the mean over
seeds with a 95% percentile-bootstrap interval (``stats.bootstrap_mean``) of every final number the
runs recorded: the learned p, p_opt, what the probe says besides (regret, log drift, ...) and the
test and validation metrics, whichever the runs have (``final_columns``).  Only finished runs count;
runs probed before the probe recorded the regret get it from their probe table
(``drift.with_probe_summary``), as in ``pooling-lab stats``.  An experiment swept over further keys
is split into one series per combination of their values.  Experiments are named by their
experiment name, and by their folder too where names clash.

Written to ``--out`` (default ``compare_<A>_vs_<B>/`` in the current folder, never a results
folder's own files): compare.csv (one row per series and value: ``seeds`` and per number its mean,
``<number>_low`` and ``<number>_high``), compare.md (the printed table: numbers by value, one column
per series) and compare.png / .pdf (learned p and p_opt, the regret and the test metrics at the
learned p against the key; one colour per series, one marker per experiment).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from rich.table import Table
from rich.text import Text

from pooling_lab import atomic, results
from pooling_lab.analysis.drift import with_probe_summary
from pooling_lab.analysis.groups import ALL_RUNS, DONE, is_number, run_groups, sort_key
from pooling_lab.analysis.layout import MARKER_SIZE, Layout, PAxis, finish, new_figure, save_figure
from pooling_lab.analysis.stats import bootstrap_mean, markdown_header, markdown_row
from pooling_lab.analysis.style import category_colours
from pooling_lab.errors import UserError
from pooling_lab.experiment.labels import format_value

EXPERIMENT, SERIES, SEEDS = "experiment", "series", "seeds"
CONFIGURATION = "configuration"  # the values of an experiment's other swept keys
LABELS = {"p_final": "learned p"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DODGE = 0.06  # series at one value are spread by this share of the gap between values
P_PANEL = (("p_final", "-", True), ("p_opt", "--", False))  # the p panel: column, line, filled marker
OUT_CHARACTERS = re.compile(r"[^A-Za-z0-9._=-]+")


def final_columns(columns: Iterable[str]) -> list[str]:
    """Of a runs table's ``columns``, the summary columns that are final numbers (p, what the probe
    says, metrics), in the runs table's order, whatever metrics the runs recorded; progress and
    times left out."""
    present, progress = dict.fromkeys(columns), {*results.SUMMARY_LAST, *results.TIMES}
    return [column for column in results.summary_columns(present) if column in present and column not in progress]


@dataclass(frozen=True)
class Comparison:
    key: str
    table: pd.DataFrame  # one row per series and value of ``key`` (compare.csv)
    numbers: list[str]  # the final numbers compared, in order
    written: list[Path]
    damaged: list[str]

    def rich_table(self) -> Table:
        rows = side_by_side(self.table, self.key, self.numbers)
        table = Table(title=f"compared by {self.key}: mean over seeds [95% bootstrap interval]")
        for column in rows.columns:
            table.add_column(column, justify="left" if column in ("number", self.key) else "right")
        for _, group in rows.groupby("number", sort=False):
            for index, (_, row) in enumerate(group.iterrows()):
                table.add_row(*map(Text, row), end_section=index == len(group) - 1)
        return table


def compare_experiments(paths: Sequence[Path], by: str | None, out: Path | None) -> Comparison:
    """Load the experiments at ``paths``, compare them along ``by`` and write the files."""
    if len(paths) < 2:
        raise UserError("give two or more results directories to compare", source="pooling-lab compare")
    if len({Path(path).resolve() for path in paths}) < len(paths):
        raise UserError("a results directory is given twice", source="pooling-lab compare")
    loaded = [results.load(path) for path in paths]
    names = experiment_names(loaded)
    key = comparison_key(loaded, names, by)
    finished = [finished_runs(one) for one in loaded]
    numbers = final_columns(column for runs in finished for column in runs.columns)
    table = pd.concat([summarise(runs, one.swept, name, key, numbers)
                       for runs, one, name in zip(finished, loaded, names, strict=True)], ignore_index=True)
    if table.empty:
        raise UserError("no finished run to compare", source=", ".join(map(str, paths)))
    table = table.iloc[sorted(range(len(table)), key=lambda i: sort_key(table[key].iloc[i]))].reset_index(drop=True)
    numbers = [column for column in numbers if table[column].notna().any()]
    table = table[[EXPERIMENT, SERIES, CONFIGURATION, key, SEEDS, *(c + s for c in numbers for s in ("", "_low", "_high"))]]
    out = Path(out) if out is not None else default_out(loaded)
    written = write_files(table, key, numbers, names, out)
    return Comparison(key, table, numbers, written, [line for one in loaded for line in one.damaged])


def experiment_names(loaded: Sequence[results.Results]) -> list[str]:
    """Each experiment's name, with its folder where another experiment has the same name."""
    names = [str(one.experiment.get("name") or one.path.name) for one in loaded]
    return [f"{name} ({one.path})" if names.count(name) > 1 else name for name, one in zip(names, loaded, strict=True)]


def comparison_key(loaded: Sequence[results.Results], names: Sequence[str], by: str | None) -> str:
    """``by``, which every experiment must have swept, or the first swept key they all share."""
    swept = "; ".join(f"{name}: {', '.join(one.swept) or 'none'}" for name, one in zip(names, loaded, strict=True))
    if by is not None:
        lacking = [name for name, one in zip(names, loaded, strict=True) if by not in one.swept]
        if lacking:
            raise UserError(f"{by!r} is not a swept key of {', '.join(lacking)} (swept: {swept})", field="--by")
        return by
    shared = [key for key in loaded[0].swept if all(key in one.swept for one in loaded[1:])]
    if not shared:
        raise UserError(f"the experiments share no swept key to compare along (swept: {swept})",
                        source="pooling-lab compare")
    return shared[0]


def finished_runs(loaded: results.Results) -> pd.DataFrame:
    """The finished runs, with what the probe says also for runs probed before it was recorded."""
    runs = with_probe_summary(loaded.runs, loaded.probe, loaded.configs)
    return runs[runs["status"] == DONE]


def summarise(runs: pd.DataFrame, swept: Sequence[str], name: str, key: str, numbers: Sequence[str]) -> pd.DataFrame:
    """One row per configuration of the other swept keys and value of ``key``: ``seeds`` (finished
    runs) and per final number the mean with its bootstrap interval (NaN where no run has it)."""
    others = [other for other in swept if other != key]
    runs = runs.assign(_config=run_groups(runs, others)["config"].to_numpy(), _value=runs[key].map(format_value))
    rows = []
    for (configuration, _), group in runs.groupby(["_config", "_value"], sort=False):
        series = name if configuration == ALL_RUNS else f"{name}: {configuration}"
        row = {EXPERIMENT: name, SERIES: series, CONFIGURATION: configuration, key: group[key].iloc[0], SEEDS: len(group)}
        for column in numbers:
            values = pd.to_numeric(group[column], errors="coerce") if column in group else pd.Series(np.nan)
            interval = bootstrap_mean(values.to_numpy(float))
            row |= {column: interval.estimate, f"{column}_low": interval.low, f"{column}_high": interval.high}
        rows.append(row)
    return pd.DataFrame(rows)


def default_out(loaded: Sequence[results.Results]) -> Path:
    """``compare_<A>_vs_<B>``, in the current folder."""
    names = (OUT_CHARACTERS.sub("_", str(one.experiment.get("name") or one.path.name)) for one in loaded)
    return Path("compare_" + "_vs_".join(names))


# --- the table: numbers by value, one column per series --------------------------------------------


def _cell(row: pd.Series, column: str) -> str:
    mean = row.get(column, np.nan)
    if pd.isna(mean):
        return "-"
    low, high = row[f"{column}_low"], row[f"{column}_high"]
    return f"{mean:.4g}" if low == high == mean else f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def side_by_side(table: pd.DataFrame, key: str, numbers: Sequence[str]) -> pd.DataFrame:
    """Text cells: one row per number (``seeds`` first) and value of ``key``, one column per series."""
    series = list(dict.fromkeys(table[SERIES]))
    values = list(dict.fromkeys(table[key].map(format_value)))
    indexed = table.assign(_value=table[key].map(format_value)).set_index([SERIES, "_value"])
    rows = []
    for number in (SEEDS, *numbers):
        for value in values:
            cells = []
            for one in series:
                row = indexed.loc[(one, value)] if (one, value) in indexed.index else None
                cells.append("-" if row is None else str(row[SEEDS]) if number == SEEDS else _cell(row, number))
            if any(cell != "-" for cell in cells):
                rows.append([LABELS.get(number, number), value, *cells])
    return pd.DataFrame(rows, columns=["number", key, *series])


def write_files(table: pd.DataFrame, key: str, numbers: list[str], names: Sequence[str], out: Path) -> list[Path]:
    csv_path, md_path = out / "compare.csv", out / "compare.md"
    results.write_csv(csv_path, table)
    cells = side_by_side(table, key, numbers)
    lines = [f"# {' vs '.join(names)}, by {key}", "",
             "Finished runs; mean over seeds with a 95% percentile-bootstrap interval (none shown for one seed).", "",
             *markdown_header(list(cells.columns)), *(markdown_row(list(row)) for row in cells.itertuples(index=False))]
    atomic.write_text(md_path, "\n".join(lines) + "\n")
    layout = Layout(title=f"{' vs '.join(names)}, by {key}")
    figure = comparison_figure(table, key, numbers, layout)
    return [csv_path, md_path, *(save_figure(figure, out / "compare", layout.style.dpi) if figure else [])]


# --- the figure --------------------------------------------------------------------------------------


def _x_positions(values: pd.Series) -> tuple[pd.Series, list[float], list[str], bool]:
    """x of each value (the value when all are numbers, else its slot in sorted order), the ticks,
    their labels and whether the values are numbers."""
    texts = sorted(dict(zip(values.map(format_value), values, strict=True)).items(), key=lambda item: sort_key(item[1]))
    numeric = all(is_number(value) for _, value in texts)
    ticks = [float(value) if numeric else float(slot) for slot, (_, value) in enumerate(texts)]
    at = dict(zip((text for text, _ in texts), ticks, strict=True))
    return values.map(lambda value: at[format_value(value)]).astype(float), ticks, [text for text, _ in texts], numeric


def series_styles(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Colour and marker per series: one colour per experiment (per series where an experiment has
    several), one marker per experiment."""
    experiments = list(dict.fromkeys(table[EXPERIMENT]))
    pairs = list(table.drop_duplicates(SERIES)[[SERIES, EXPERIMENT]].itertuples(index=False, name=None))
    per_experiment = len(pairs) == len(experiments)
    colours = category_colours(experiments if per_experiment else [one for one, _ in pairs])
    return {one: {"color": colours[experiment if per_experiment else one],
                  "marker": MARKERS[experiments.index(experiment) % len(MARKERS)]} for one, experiment in pairs}


def comparison_figure(table: pd.DataFrame, key: str, numbers: Sequence[str], layout: Layout) -> Figure | None:
    """Learned p and p_opt in one panel, then the regret and every test metric at the learned p,
    against ``key``, each series a little apart; error bars: the bootstrap intervals.  ``None``
    when there is none of these numbers."""
    p_columns = [(column, line, filled) for column, line, filled in P_PANEL if column in numbers]
    panels = [*([P_PANEL] if p_columns else []), *(column for column in numbers if column == "regret" or (
        column.startswith("test_") and not column.endswith("_at_p_opt")))]
    if not panels:
        return None
    x, ticks, tick_labels, numeric = _x_positions(table[key])
    series = list(dict.fromkeys(table[SERIES]))
    gap = min(np.diff(ticks), default=1.0) or 1.0
    offsets = {one: (index - (len(series) - 1) / 2) * DODGE * gap for index, one in enumerate(series)}
    frame = table.assign(_x=x + table[SERIES].map(offsets))
    styles = series_styles(table)
    connect = "-" if numeric else "none"
    fig, axes = new_figure(len(panels), layout)
    for ax, panel in zip(axes, panels, strict=True):
        if panel is P_PANEL:
            axis = PAxis.of(table[[c + s for c, _, _ in p_columns for s in ("", "_low", "_high")]].to_numpy().ravel())
            for column, line, filled in p_columns:
                _errorbars(ax, frame, column, styles, axis, line if numeric else "none", filled)
            axis.draw(ax, "y")
            ax.set_ylabel("p")
        else:
            _errorbars(ax, frame, panel, styles, None, connect, True)
            ax.set_ylabel(LABELS.get(panel, panel))
        ax.set_xticks(ticks, tick_labels)
        ax.set_xlabel(key)
    return finish(fig, layout, "error bars: 95% bootstrap interval over seeds", _legend(styles, p_columns))


def _errorbars(ax: Axes, frame: pd.DataFrame, column: str, styles: dict[str, dict[str, str]], axis: PAxis | None,
               line: str, filled: bool) -> None:
    """Each series' means of ``column`` with their intervals (``axis``: placed on a p axis)."""
    for one, rows in frame.dropna(subset=[column]).groupby(SERIES, sort=False):
        mean, low, high = (rows[column + suffix] for suffix in ("", "_low", "_high"))
        if axis is not None:
            mean, low, high = axis.place(mean), axis.place(low), axis.place(high)
        colour = styles[one]["color"]
        ax.errorbar(rows["_x"], mean, yerr=[(mean - low).clip(lower=0), (high - mean).clip(lower=0)],
                    color=colour, marker=styles[one]["marker"], linestyle=line, markersize=MARKER_SIZE,
                    markerfacecolor=colour if filled else "white", capsize=2)


def _legend(styles: dict[str, dict[str, str]], p_columns: list[tuple[str, str, bool]]) -> list[Line2D]:
    """One entry per series, then how the p panel draws the learned p and p_opt."""
    entries = [Line2D([], [], label=one, markersize=MARKER_SIZE, **style) for one, style in styles.items()]
    return entries + [Line2D([], [], color="grey", linestyle=line, marker="o", markersize=MARKER_SIZE,
                             markerfacecolor="grey" if filled else "white", label=f"{LABELS.get(column, column)} (p panel)")
                      for column, line, filled in p_columns]
