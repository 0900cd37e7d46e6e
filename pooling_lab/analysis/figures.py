"""Paper figures from a YAML figure spec (``analysis/*.yaml``), in one print style.

```yaml
style: {font_size: 8, column_width_in: 3.3, two_column_width_in: 6.9, dpi: 300,
        colour_ranges: {head.margin: [0.0, 0.5]}}   # optional; these are the defaults
output: figures/              # relative to the spec file unless absolute
names: {head.margin: m}       # optional display names of swept keys in legends and x labels
figures:
  - name: p_drift_fmnist      # -> <output>/p_drift_fmnist.pdf and .png
    results: ../results/reference/p_drift_fmnist   # one directory or a list of them
    plot: p_drift             # a key of pooling_lab.analysis.plots.PLOTS
    width: one_column         # one_column | two_column | inches
    height_in: 2.4
    xlabel: "ArcFace margin m (rad)"   # optional: replace the default axis labels / title
    ylabel: p
    title: null
    legend: below             # below (the default) | right | none
```
Every figure is drawn by the same function as in ``pooling-lab plot`` (``plots.PLOTS``), sized
and labelled by the spec, and written as vector PDF plus PNG at the style's dpi.  Several
results directories in one figure are drawn as one sweep (run ids are kept apart).
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pooling_lab import results
from pooling_lab.analysis.groups import SweepData
from pooling_lab.analysis.layout import LEGEND_PLACES, Layout, save_figure
from pooling_lab.analysis.plots import PLOTS
from pooling_lab.analysis.style import COLOUR_RANGES, Style
from pooling_lab.errors import UserError
from pooling_lab.experiment.errors import yaml_line
from pooling_lab.experiment.yaml_file import read_yaml

Positive = Annotated[float, Field(gt=0)]
FRAMES = ("runs", "metrics", "params", "probe", "final_params", "configs")


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StyleSpec(SpecModel):
    font_size: Positive = 8.0
    column_width_in: Positive = 3.3
    two_column_width_in: Positive = 6.9
    dpi: Annotated[int, Field(gt=0)] = 300
    colour_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @field_validator("colour_ranges")
    @classmethod
    def _ordered(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for key, (low, high) in ranges.items():
            if not low < high:
                raise ValueError(f"{key}: the range [{low}, {high}] must have low < high")
        return ranges

    def style(self) -> Style:
        return Style(
            font_size=self.font_size,
            column_width_in=self.column_width_in,
            two_column_width_in=self.two_column_width_in,
            dpi=self.dpi,
            colour_ranges={**COLOUR_RANGES, **self.colour_ranges},
        )


class FigureSpec(SpecModel):
    name: str = Field(pattern=r"^[\w.-]+$")
    results: list[str] = Field(min_length=1)
    plot: Literal[tuple(PLOTS)]  # type: ignore[valid-type]
    width: Literal["one_column", "two_column"] | Positive = "one_column"
    height_in: Positive = 2.4
    xlabel: str | None = None
    ylabel: str | None = None
    title: str | None = None
    legend: Literal[LEGEND_PLACES] = "below"  # type: ignore[valid-type]

    @field_validator("results", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def width_in(self, style: Style) -> float:
        if self.width == "one_column":
            return style.column_width_in
        if self.width == "two_column":
            return style.two_column_width_in
        return float(self.width)


class PaperSpec(SpecModel):
    style: StyleSpec = Field(default_factory=StyleSpec)
    output: str = "figures"
    names: dict[str, str] = Field(default_factory=dict)
    figures: list[FigureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PaperSpec:
        names = [figure.name for figure in self.figures]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"figure names must be unique; repeated: {', '.join(repeated)}")
        return self


# --- reading the spec ---------------------------------------------------------------------------


def load_spec(path: Path) -> PaperSpec:
    """The validated spec; any problem is a one-line ``UserError`` with file, line and field."""
    data, text = read_yaml(path)
    try:
        return PaperSpec.model_validate(data)
    except ValidationError as error:
        raise _spec_error(error, Path(path), text) from None


def _spec_error(error: ValidationError, path: Path, text: str) -> UserError:
    detail = error.errors()[0]
    parts, holder = _field_path(detail["loc"])
    line = yaml_line(text, parts)
    source = f"{path}:{line}" if line else str(path)
    field = ".".join(map(str, parts)) or None
    if detail["type"] == "extra_forbidden" and holder is not None:
        allowed = list(holder.model_fields)
        close = difflib.get_close_matches(str(parts[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"unknown key{hint}; allowed: {', '.join(allowed)}"
    else:
        message = f"{detail['msg'].removeprefix('Value error, ')} (got {detail.get('input')!r})"
    return UserError(message, source=source, field=field)


def _field_path(loc: Sequence[Any]) -> tuple[list[Any], type[BaseModel] | None]:
    """The part of a pydantic error location the user wrote (list indexes and keys, without
    the union members pydantic appends), and the model that holds its last key."""
    parts: list[Any] = []
    model: type[BaseModel] | None = PaperSpec
    holder: type[BaseModel] | None = None
    for part in loc:
        if isinstance(part, int):
            parts.append(part)
            continue
        if model is None:
            break
        parts.append(part)
        holder = model
        if part not in model.model_fields:
            break  # an unknown key
        model = _model_of(model.model_fields[part].annotation)
    return parts, holder


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The spec model an annotation holds, directly or as a list's items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_of, typing.get_args(annotation))), None)


def _resolve(base: Path, text: str) -> Path:
    """``text`` as a path, relative to ``base`` unless absolute, with ``..`` folded away."""
    return Path(os.path.normpath(base / Path(text).expanduser()))


def _results_dirs(spec: PaperSpec, spec_path: Path) -> list[list[Path]]:
    """Each figure's results directories, every one checked to hold a ``runs.csv``."""
    dirs = []
    for index, figure in enumerate(spec.figures):
        paths = [_resolve(spec_path.parent, text) for text in figure.results]
        for path in paths:
            if not (path / results.RUNS_FILE).is_file():
                raise UserError(
                    f"no results directory at {path} (no {results.RUNS_FILE})",
                    source=str(spec_path),
                    field=f"figures.{index}.results",
                )
        dirs.append(paths)
    return dirs


# --- drawing ------------------------------------------------------------------------------------


def sweep_data(loaded: Sequence[results.Results]) -> SweepData:
    """The frames of one or more results directories as one sweep: swept keys in order of first
    appearance; with several directories every run id is prefixed with its directory's index
    (``0/``, ``1/`` ...) so that the same run in two directories stays two runs."""
    swept = list(dict.fromkeys(key for one in loaded for key in one.swept))
    frames = {
        name: _concat(
            [_prefixed(getattr(one, name), f"{index}/") for index, one in enumerate(loaded)]
            if len(loaded) > 1
            else [getattr(loaded[0], name)]
        )
        for name in FRAMES
    }
    return SweepData(swept=swept, **frames)


def _prefixed(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return frame.assign(run_id=prefix + frame["run_id"].astype(str))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    filled = [frame for frame in frames if not frame.empty]
    return pd.concat(filled, ignore_index=True) if filled else frames[0]


def _layout(figure: FigureSpec, names: dict[str, str], style: Style) -> Layout:
    return Layout(
        size_in=(figure.width_in(style), figure.height_in),
        title=figure.title,
        xlabel=figure.xlabel,
        ylabel=figure.ylabel,
        legend=figure.legend,
        names=names,
        style=style,
    )


def make_figures(spec_path: Path, out_dir: Path | None = None) -> list[Path]:
    """Draw every figure of the spec at ``spec_path`` into ``out_dir`` (default: the spec's
    ``output``, relative to the spec file) as ``<name>.pdf`` and ``<name>.png``; return the files.

    The spec and every results directory are checked before anything is drawn; a figure whose
    plot finds nothing to draw (e.g. ``p_drift`` without probe results) is a ``UserError``.
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    dirs = _results_dirs(spec, spec_path)
    out = Path(out_dir) if out_dir is not None else _resolve(spec_path.parent, spec.output)
    style = spec.style.style()
    unique = dict.fromkeys(path for paths in dirs for path in paths)
    loaded = {path: results.load(path) for path in unique}
    written: list[Path] = []
    for index, (figure, paths) in enumerate(zip(spec.figures, dirs, strict=True)):
        data = sweep_data([loaded[path] for path in paths])
        fig = PLOTS[figure.plot](data, _layout(figure, spec.names, style))
        if fig is None:
            raise UserError(
                f"plot {figure.plot!r} has nothing to draw from {', '.join(map(str, paths))}",
                source=str(spec_path),
                field=f"figures.{index}.plot",
            )
        written += save_figure(fig, out / figure.name, style.dpi)
    return written
