"""One look for every figure: print-sized fonts, colour-blind-safe colours, and colours that
belong to a swept *value*, so that e.g. margin 0.3 has the same colour in every figure of every
results directory.

- Numeric values take a colour from viridis (perceptually uniform, colour-blind safe) at the
  value's place in a declared range (``COLOUR_RANGES``, e.g. margins over [0, 0.5] rad).  A key
  without a declared range uses the span of the values it is drawn with, and values outside a
  declared range widen it, so distinct values always keep distinct colours.
- Text values (head or pool names) take Okabe-Ito colours; the well-known names own a fixed
  colour (``CATEGORY_COLOURS``), the others take the free colours in order.

Fonts are applied to a finished ``Figure`` (``apply_style``), never through global rcParams.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

OKABE_ITO = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#000000",  # black
)
NEUTRAL = "#000000"  # the one series of a figure without configurations
CATEGORY_COLOURS = {
    "gem": "#E69F00",
    "avg": "#0072B2",
    "max": "#D55E00",
    "arcface": "#D55E00",
    "cosface": "#009E73",
    "cosine": "#56B4E9",
    "linear": "#000000",
    "shared": "#E69F00",
    "per_channel": "#CC79A7",
}
SEQUENTIAL_MAP = "viridis"
SEQUENTIAL_SPAN = (0.0, 0.9)  # stop before viridis' palest yellow
COLOUR_RANGES: Mapping[str, tuple[float, float]] = {
    "head.margin": (0.0, 0.5),  # radians
    "model.pool.p": (1.0, 8.0),
}
LARGE_PALETTE = "tab20"  # beyond eight categories colour-blind safety cannot be kept


@dataclass(frozen=True)
class Style:
    """Sizes of a figure's texts and of the page it is drawn for."""

    font_size: float = 8.0
    column_width_in: float = 3.3
    two_column_width_in: float = 6.9
    dpi: int = 300
    colour_ranges: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: dict(COLOUR_RANGES)
    )

    @property
    def small_font_size(self) -> float:
        """Tick labels and legends."""
        return self.font_size - 1.0


def apply_style(fig: Figure, style: Style) -> None:
    """Set every text of ``fig`` to the style's sizes: titles and axis labels at the font size,
    tick labels, notes in the panels and legends one point smaller, figure-level texts (the
    suptitle) one larger."""
    for text in fig.texts:
        text.set_fontsize(style.font_size + 1.0)
    for ax in fig.axes:
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            text.set_fontsize(style.font_size)
        for text in ax.texts:
            text.set_fontsize(style.small_font_size)
        ax.tick_params(labelsize=style.small_font_size)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    for legend in filter(None, legends):
        for text in [*legend.get_texts(), legend.get_title()]:
            text.set_fontsize(style.small_font_size)


def colour_span(
    key: str, values: Iterable[float], ranges: Mapping[str, tuple[float, float]]
) -> tuple[float, float]:
    """The range that numeric values of ``key`` are coloured over: the declared range widened
    to the values, or the span of the values when none is declared."""
    values = list(values)
    low, high = ranges.get(key, (min(values), max(values)))
    return min(low, *values), max(high, *values)


def sequential_colour(value: float, span: tuple[float, float]) -> str:
    """The viridis colour (as hex) of ``value`` at its place in ``span``."""
    low, high = span
    fraction = (value - low) / (high - low) if high > low else 0.0
    start, stop = SEQUENTIAL_SPAN
    return to_hex(colormaps[SEQUENTIAL_MAP](start + fraction * (stop - start)))


def category_colours(texts: Sequence[str]) -> dict[str, str]:
    """Colour per text: the fixed colour of a well-known name, else the next free Okabe-Ito
    colour in the given order; a larger palette (by position) when there are more than eight."""
    if len(texts) > len(OKABE_ITO):
        cmap = colormaps[LARGE_PALETTE]
        return {text: to_hex(cmap(index % cmap.N)) for index, text in enumerate(texts)}
    fixed = {text: CATEGORY_COLOURS[text] for text in texts if text in CATEGORY_COLOURS}
    taken = set(fixed.values())
    free = iter(colour for colour in OKABE_ITO if colour not in taken)
    return {text: fixed[text] if text in fixed else next(free) for text in texts}
