"""What makes a finished run's numbers suspect: chance accuracy, an absurd pooling exponent."""

from __future__ import annotations

import math
from typing import Any

# A finished run is flagged when its test accuracy is within reach of chance (1 / classes): at most
# CHANCE_RATIO x chance (telling for many classes) and at most CHANCE_GAIN of the way from chance
# to 1 (telling for few classes, where 1.5 x chance is already a fair accuracy) ...
CHANCE_RATIO = 1.5
CHANCE_GAIN = 0.1
# ... or when its pooling exponent p ends outside this range (no pooling is served by such a p).
SENSIBLE_P = (0.5, 1000.0)


def run_flags(final: dict[str, Any], num_classes: int) -> list[str]:
    """What makes a finished run's numbers suspect, one line each (none for a healthy run):
    chance accuracy, a p outside ``SENSIBLE_P``; read from ``test_accuracy`` and ``p_final``."""
    flags = []
    accuracy, p = final.get("test_accuracy", math.nan), final.get("p_final", math.nan)
    chance = 1 / num_classes
    ceiling = min(CHANCE_RATIO * chance, chance + CHANCE_GAIN * (1 - chance))
    if accuracy <= ceiling:
        flags.append(f"chance accuracy: test accuracy {accuracy:.3g} <= {ceiling:.3g} "
                     f"(chance {chance:.3g} with {num_classes} classes)")
    low, high = SENSIBLE_P
    if not math.isnan(p) and not low <= p <= high:
        flags.append(f"p out of range: p = {p:.6g} outside [{low:g}, {high:g}]")
    return flags
