"""Compact text for swept values, shared by run folder names, tables and figure legends."""

from __future__ import annotations

import json
import numbers
from typing import Any


def format_value(value: Any) -> str:
    """``0.3``, ``3``, ``arcface``; a component mapping ``{name: gem, p: 2}`` -> ``gem,p=2``; a
    list -> ``1,2``.  Mappings and lists stored as JSON text (as runs.csv keeps them) are read back
    first, so a value reads the same wherever it is shown."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):g}"
    if isinstance(value, dict):  # the name first, whatever order the mapping was stored in
        ordered = sorted(value.items(), key=lambda item: item[0] != "name")
        return ",".join(format_value(v) if k == "name" else f"{k}={format_value(v)}" for k, v in ordered)
    if isinstance(value, list | tuple):
        return ",".join(format_value(v) for v in value)
    return str(value)
