"""Hand-made frames of a margin sweep with a known answer (every number a function of margin,
seed, step or p), and what the figure tests read back from a drawn figure."""

from __future__ import annotations

import pandas as pd
from matplotlib.colors import to_hex, to_rgb

from pooling_lab.analysis.groups import SweepData

MARGINS = (0.0, 2.0, 10.0)  # numeric order differs from text order ("10" < "2")
SEEDS = (0, 1)
STEPS = (0, 10, 20)
EPOCHS = (1, 2)
PROBE_P = (1.0, 2.0, 4.0, 8.0, 16.0)  # spans 16x: a log axis
CHANNEL_OFFSETS = (-0.3, -0.1, 0.1, 0.3)
PER_CHANNEL_STATS = ("mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max")


def run_id(margin: float, seed: int) -> str:
    return f"m{margin:g}-s{seed}"


def p_value(margin: float, seed: int, step: int) -> float:
    return 3.0 - margin * step / 100 + 0.1 * seed


def p_final(margin: float, seed: int) -> float:
    return p_value(margin, seed, STEPS[-1])


def p_opt(margin: float, seed: int) -> float:
    return 4.0 + 0.1 * margin + 0.5 * seed


def final_accuracy(margin: float, seed: int) -> float:
    return 0.9 - 0.01 * margin + 0.001 * seed


def final_map(margin: float, seed: int) -> float:
    return 0.6 - 0.02 * margin + 0.003 * seed


def probe_map(margin: float, seed: int, p: float) -> float:
    return 0.5 + 0.01 * seed - 0.001 * margin * p


def probe_accuracy(margin: float, seed: int, p: float) -> float:
    return 0.8 + 0.02 * seed - 0.002 * p + 0.001 * margin


def make_runs(
    statuses: dict[str, str] | None = None, margins: tuple[float, ...] = MARGINS
) -> pd.DataFrame:
    statuses = statuses or {}
    rows = []
    for margin in margins:
        for seed in SEEDS:
            rid = run_id(margin, seed)
            rows.append(
                {
                    "run_id": rid,
                    "run_dir": rid,
                    "head.margin": margin,
                    "seed": seed,
                    "status": statuses.get(rid, "done"),
                    "p_final": p_final(margin, seed),
                    "p_opt": p_opt(margin, seed),
                    "test_accuracy": final_accuracy(margin, seed),
                    "test_map": final_map(margin, seed),
                    "val_accuracy": 0.88,
                    # the validation mAP at the learned p, on the probe curve
                    "val_map": probe_map(margin, seed, p_final(margin, seed)),
                }
            )
    return pd.DataFrame(rows)


def make_params(per_channel: bool = False, margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    stats = PER_CHANNEL_STATS if per_channel else ("value",)
    rows = []
    for margin in margins:
        for seed in SEEDS:
            for step in STEPS:
                centre = p_value(margin, seed, step)
                for offset, stat in enumerate(stats):
                    rows.append(
                        {
                            "run_id": run_id(margin, seed),
                            "step": step,
                            "epoch": step / 10,
                            "module": "pool",
                            "param": "p",
                            "stat": stat,
                            # only the central stat carries p; the others are far away
                            "value": centre + 100.0 * offset,
                            "grad": 0.01,
                        }
                    )
    return pd.DataFrame(rows)


def make_metrics(margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    rows = []
    for margin in margins:
        for seed in SEEDS:
            for epoch in EPOCHS:
                rows.append(
                    {
                        "run_id": run_id(margin, seed),
                        "epoch": epoch,
                        "step": epoch * 10,
                        "train_loss": 1.0 / epoch,
                        "train_accuracy": 0.5 + 0.1 * epoch,
                        "val_accuracy": 0.4 + 0.1 * epoch + 0.01 * seed,
                        "test_accuracy": 0.3 + 0.1 * epoch + 0.02 * seed,
                        "lr": 0.1,
                        "p": p_value(margin, seed, epoch * 10),
                    }
                )
    return pd.DataFrame(rows)


def make_probe(margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    rows = [
        {
            "run_id": run_id(margin, seed),
            "p": p,
            "accuracy": probe_accuracy(margin, seed, p),
            "map": probe_map(margin, seed, p),
            "recall@1": 0.7,
        }
        for margin in margins
        for seed in SEEDS
        for p in PROBE_P
    ]
    return pd.DataFrame(rows)


def make_final_params(per_channel: bool, margins: tuple[float, ...] = MARGINS) -> pd.DataFrame:
    offsets = CHANNEL_OFFSETS if per_channel else (0.0,)
    rows = [
        {
            "run_id": run_id(margin, seed),
            "module": "pool",
            "param": "p",
            "index": index,
            "value": p_final(margin, seed) + offset,
        }
        for margin in margins
        for seed in SEEDS
        for index, offset in enumerate(offsets)
    ]
    return pd.DataFrame(rows)


def make_data(statuses: dict[str, str] | None = None, per_channel: bool = False) -> SweepData:
    return SweepData(
        runs=make_runs(statuses),
        swept=["head.margin"],
        metrics=make_metrics(),
        params=make_params(per_channel),
        probe=make_probe(),
        final_params=make_final_params(per_channel),
    )


def luminance(colour) -> float:
    red, green, blue = to_rgb(colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def label(margin: float) -> str:
    return f"head.margin={margin:g}"


def assert_figure_files(paths, out_dir, names) -> None:
    expected = {out_dir / f"{name}.{fmt}" for name in names for fmt in ("png", "pdf")}
    assert set(paths) == expected
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert data.startswith(b"%PDF")


def legend_labels(fig) -> list[str]:
    return [text.get_text() for text in fig.legends[0].get_texts()]



def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def errorbar_data(container) -> tuple[list, list, list]:
    line, _, (bars,) = container.lines
    extents = [(segment[0][1], segment[1][1]) for segment in bars.get_segments()]
    return list(line.get_xdata()), list(line.get_ydata()), extents



def drawn_colours(fig, name: str) -> set[str]:
    """Colours of the lines and dots labelled ``name`` and of the bars in the panel titled so."""
    colours = set()
    for ax in fig.axes:
        colours |= {to_hex(line.get_color()) for line in ax.get_lines() if line.get_label() == name}
        colours |= {to_hex(c.get_edgecolor()[0]) for c in ax.collections if c.get_label() == name}
        if ax.get_title() == name:
            colours |= {to_hex(bar.get_facecolor()) for bar in ax.patches}
    return colours




def axes_width_fraction(fig) -> float:
    """The share of the figure's width from the left edge of its leftmost panel to the right edge
    of its rightmost one (as drawn)."""
    fig.draw_without_rendering()
    boxes = [ax.get_window_extent() for ax in fig.axes if ax.get_visible()]
    return (max(box.x1 for box in boxes) - min(box.x0 for box in boxes)) / fig.bbox.width



def one_seed(data: SweepData) -> SweepData:
    """``data`` with the runs of seed 0 only."""
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["run_id"].str.endswith("-s0")]

    return SweepData(keep(data.runs), data.swept, keep(data.metrics), keep(data.params),
                           keep(data.probe), keep(data.final_params))


def legend_texts(fig) -> str:
    return " | ".join(
        text.get_text() for legend in fig.legends for text in [legend.get_title(), *legend.get_texts()]
    )

