"""Tests for pooling_lab.analysis.figures: paper figures from a YAML spec and hand-made results
directories (written in the format of pooling_lab.results, read back by results.load)."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest
import yaml
from matplotlib.colors import to_hex

from pooling_lab import results
from pooling_lab.analysis import figures
from pooling_lab.analysis.groups import run_groups
from pooling_lab.analysis.layout import Layout
from pooling_lab.analysis.plots.probe import probe_curves_figure
from pooling_lab.analysis.plots.summary import p_drift_figure
from pooling_lab.analysis.plots.trajectory import accuracy_figure, p_trajectory_figure
from pooling_lab.errors import UserError

from .frames import (
    SEEDS,
    final_accuracy,
    final_map,
    make_final_params,
    make_metrics,
    make_params,
    make_probe,
    make_runs,
    p_final,
    p_opt,
    run_id,
)

REPO = Path(__file__).resolve().parents[2]
DPI = 300


def write_results(root: Path, margins: tuple[float, ...], per_channel: bool = False) -> Path:
    """A finished margin sweep as the training loop leaves it on disk."""
    experiment = {"name": root.name, "sweep": {"grid": {"head.margin": list(margins)}}}
    results.write_yaml(root / results.EXPERIMENT_FILE, experiment)
    runs = make_runs(margins=margins)
    results.write_csv(
        root / results.RUNS_FILE, runs[["run_id", "run_dir", "head.margin", "seed", "status"]]
    )
    frames = {
        "metrics": make_metrics(margins),
        "params": make_params(per_channel, margins),
        "probe": make_probe(margins),
        "final_params": make_final_params(per_channel, margins),
    }
    for margin in margins:
        for seed in SEEDS:
            rid = run_id(margin, seed)
            files = results.RunFiles(root / rid)
            summary = {
                "run_id": rid,
                "status": "done",
                "p_final": p_final(margin, seed),
                "p_opt": p_opt(margin, seed),
                "test_accuracy": final_accuracy(margin, seed),
                "test_map": final_map(margin, seed),
            }
            results.update_status(files, **summary)
            for name, frame in frames.items():
                rows = frame[frame["run_id"] == rid].drop(columns="run_id")
                results.write_csv(getattr(files, name), rows)
    return root


def write_spec(path: Path, figure_list: list[dict], **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"output": "out", **top, "figures": figure_list}))
    return path


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """Pixel width and height (IHDR) and pixels per metre (pHYs) of a PNG."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    at = data.index(b"pHYs") + 4
    x_per_m, y_per_m, unit = struct.unpack(">IIB", data[at : at + 9])
    assert unit == 1  # metres
    return width, height, x_per_m, y_per_m


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results" / "sweep", (0.0, 0.3, 0.5))


def test_spec_draws_pdf_and_300_dpi_png_at_the_asked_size(sweep_dir: Path, tmp_path: Path):
    spec = write_spec(
        tmp_path / "analysis" / "paper.yaml",
        [
            {
                "name": "drift",
                "results": "../results/sweep",
                "plot": "p_drift",
                "width": "one_column",
                "height_in": 2.4,
                "xlabel": "ArcFace margin m (rad)",
                "legend": "below",
            },
            {
                "name": "probe",
                "results": ["../results/sweep"],
                "plot": "probe_curves",
                "width": "two_column",
                "height_in": 2.0,
            },
            {"name": "wide", "results": str(sweep_dir), "plot": "metric_vs_p", "width": 5.0},
        ],
        style={"font_size": 7, "column_width_in": 3.5},
    )
    written = figures.make_figures(spec)
    out = tmp_path / "analysis" / "out"
    assert written == [
        out / f"{name}.{fmt}" for name in ("drift", "probe", "wide") for fmt in ("pdf", "png")
    ]
    sizes = {"drift": (3.5, 2.4), "probe": (6.9, 2.0), "wide": (5.0, 2.4)}
    for name, (width_in, height_in) in sizes.items():
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        width, height, x_per_m, y_per_m = png_header((out / f"{name}.png").read_bytes())
        assert (width, height) == (round(width_in * DPI), round(height_in * DPI))
        assert x_per_m == y_per_m == round(DPI / 0.0254)


def test_figures_are_redrawn_byte_for_byte(sweep_dir: Path, tmp_path: Path):
    spec = write_spec(
        tmp_path / "spec.yaml", [{"name": "drift", "results": str(sweep_dir), "plot": "p_drift"}]
    )
    first = {path: path.read_bytes() for path in figures.make_figures(spec, tmp_path / "a")}
    again = figures.make_figures(spec, tmp_path / "a")
    assert {path: path.read_bytes() for path in again} == first


def test_out_dir_argument_overrides_the_spec_output(sweep_dir: Path, tmp_path: Path):
    spec = write_spec(
        tmp_path / "spec.yaml", [{"name": "f", "results": str(sweep_dir), "plot": "p_final"}]
    )
    written = figures.make_figures(spec, tmp_path / "elsewhere")
    assert written == [tmp_path / "elsewhere" / "f.pdf", tmp_path / "elsewhere" / "f.png"]
    assert not (tmp_path / "out").exists()


def test_a_figure_draws_the_numbers_of_its_results_directory(sweep_dir: Path):
    data = figures.sweep_data([results.load(sweep_dir)])
    fig = p_drift_figure(data, Layout(size_in=(3.3, 2.4)))
    (ax,) = fig.axes
    learned, best, _ = (container.lines[0] for container in ax.containers)  # the third: p_plateau
    margins = (0.0, 0.3, 0.5)
    assert list(learned.get_ydata()) == pytest.approx(
        [sum(p_final(m, s) for s in SEEDS) / len(SEEDS) for m in margins]
    )
    assert list(best.get_ydata()) == pytest.approx(
        [sum(p_opt(m, s) for s in SEEDS) / len(SEEDS) for m in margins]
    )


def line_colour(fig, name: str) -> str:
    (colour,) = {
        to_hex(line.get_color())
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_label() == name
    }
    return colour


def test_margin_0_3_has_one_colour_across_figures_and_results_directories(tmp_path: Path):
    low = write_results(tmp_path / "low", (0.0, 0.3))
    high = write_results(tmp_path / "high", (0.3, 0.5))
    layout = Layout(names={"head.margin": "m"})
    probe = probe_curves_figure(figures.sweep_data([results.load(low)]), layout)
    trajectory = p_trajectory_figure(figures.sweep_data([results.load(high)]), layout)
    both = accuracy_figure(
        figures.sweep_data([results.load(low), results.load(high)]), layout
    )
    colours = {line_colour(fig, "m=0.3") for fig in (probe, trajectory, both)}
    assert len(colours) == 1
    assert line_colour(probe, "m=0") != line_colour(trajectory, "m=0.5")


def test_several_results_directories_are_one_sweep_with_separate_runs(tmp_path: Path):
    low = results.load(write_results(tmp_path / "low", (0.0, 0.3)))
    high = results.load(write_results(tmp_path / "high", (0.3, 0.5)))
    data = figures.sweep_data([low, high])
    assert data.swept == ["head.margin"]
    assert len(data.runs) == len(low.runs) + len(high.runs)
    assert data.runs["run_id"].is_unique  # m0.3 runs exist in both directories
    assert set(data.probe["run_id"]) == set(data.runs["run_id"])
    groups = run_groups(data.runs, data.swept)
    assert (groups["config"] == "head.margin=0.3").sum() == 2 * len(SEEDS)


def test_per_channel_histograms_from_a_results_directory(tmp_path: Path):
    root = write_results(tmp_path / "pc", (0.0, 0.5), per_channel=True)
    spec = write_spec(
        tmp_path / "spec.yaml",
        [{"name": "h", "results": str(root), "plot": "p_histograms", "width": "two_column"}],
    )
    assert [path.name for path in figures.make_figures(spec)] == ["h.pdf", "h.png"]


def expect_error(spec: Path, field: str) -> UserError:
    with pytest.raises(UserError) as caught:
        figures.make_figures(spec)
    assert caught.value.field == field
    assert "\n" not in str(caught.value)
    assert str(spec) in str(caught.value)
    return caught.value


def test_unknown_key_names_the_field_and_suggests_the_right_one(sweep_dir: Path, tmp_path: Path):
    spec = write_spec(
        tmp_path / "s.yaml",
        [{"name": "a", "results": str(sweep_dir), "plot": "p_final", "heigth_in": 2}],
    )
    error = expect_error(spec, "figures.0.heigth_in")
    assert "unknown key" in str(error) and "'height_in'" in str(error)
    line = spec.read_text().splitlines().index("- heigth_in: 2") + 1
    assert error.source == f"{spec}:{line}"  # the YAML line of the bad key


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"plot": "p_drfit"}, "figures.0.plot"),
        ({"width": "three_column"}, "figures.0.width"),
        ({"height_in": -1}, "figures.0.height_in"),
        ({"legend": "left"}, "figures.0.legend"),
        ({"name": "a/b"}, "figures.0.name"),
    ],
)
def test_bad_values_name_their_field(sweep_dir: Path, tmp_path: Path, change: dict, field: str):
    figure = {"name": "a", "results": str(sweep_dir), "plot": "p_final", **change}
    expect_error(write_spec(tmp_path / "s.yaml", [figure]), field)


def test_bad_style_and_repeated_names_are_reported(sweep_dir: Path, tmp_path: Path):
    figure = {"name": "a", "results": str(sweep_dir), "plot": "p_final"}
    expect_error(write_spec(tmp_path / "s.yaml", [figure], style={"font": 8}), "style.font")
    ranges = {"colour_ranges": {"head.margin": [0.5, 0.0]}}
    expect_error(write_spec(tmp_path / "s.yaml", [figure], style=ranges), "style.colour_ranges")
    error = expect_error(write_spec(tmp_path / "s.yaml", [figure, figure]), None)
    assert "repeated: a" in str(error)


def test_missing_results_directory_is_named(tmp_path: Path):
    spec = write_spec(
        tmp_path / "s.yaml", [{"name": "a", "results": "../nowhere", "plot": "p_final"}]
    )
    error = expect_error(spec, "figures.0.results")
    assert f"no results directory at {tmp_path.parent / 'nowhere'} " in str(error)
    assert not (tmp_path / "out").exists()


def test_a_plot_without_data_is_an_error(sweep_dir: Path, tmp_path: Path):
    spec = write_spec(
        tmp_path / "s.yaml", [{"name": "a", "results": str(sweep_dir), "plot": "p_histograms"}]
    )
    error = expect_error(spec, "figures.0.plot")
    assert "nothing to draw" in str(error)


def test_the_paper_spec_is_valid_and_writes_next_to_the_reference_results():
    path = REPO / "analysis" / "paper.yaml"
    spec = figures.load_spec(path)
    reference = (REPO / "results" / "reference" / "p_drift_fmnist").resolve()
    assert (path.parent / spec.output).resolve() == reference / "figures"
    kinds = {figure.plot for figure in spec.figures}
    assert {"p_drift", "probe_curves", "p_trajectory", "metric_vs_p"} <= kinds
    for figure in spec.figures:
        assert [(path.parent / r).resolve() for r in figure.results] == [reference]


def test_frames_of_one_directory_pass_through_unchanged(sweep_dir: Path):
    loaded = results.load(sweep_dir)
    data = figures.sweep_data([loaded])
    pd.testing.assert_frame_equal(data.runs, loaded.runs)
    pd.testing.assert_frame_equal(data.final_params, loaded.final_params)


def test_a_figure_without_a_legend_place_gets_its_legend_below_leaving_the_width_to_the_panel(
    sweep_dir: Path, tmp_path: Path
):
    spec = write_spec(tmp_path / "spec.yaml", [{"name": "f", "results": str(sweep_dir), "plot": "p_drift"}])
    (figure,) = figures.load_spec(spec).figures
    assert figure.legend == "below"
    layout = Layout(size_in=(3.3, 2.6), legend=figure.legend)
    fig = p_drift_figure(figures.sweep_data([results.load(sweep_dir)]), layout)
    fig.draw_without_rendering()
    (ax,) = fig.axes
    assert fig.legends[0].get_window_extent().y1 < ax.get_window_extent().y0
    assert ax.get_window_extent().width / fig.bbox.width >= 0.75
