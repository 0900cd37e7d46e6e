"""``--set key.path=value`` overrides, applied to the YAML tree before validation."""

from __future__ import annotations

import re
from typing import Any

import yaml

from pooling_lab.errors import UserError
from pooling_lab.experiment.schema import DOTTED_KEY
from pooling_lab.experiment.yaml_file import YamlLoader


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value parsed as YAML: numbers, lists, mappings, null)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(DOTTED_KEY, key):
        raise UserError(f"--set expects key.path=value, got {text!r}")
    try:
        return key, yaml.load(value, YamlLoader) if value.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {key}: value {value!r} is not valid YAML") from None


def set_dotted(tree: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    """Set ``tree[a][b] = value`` for parts ``[a, b]``, creating mappings on the way."""
    node = tree
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: index + 1])
            raise UserError(f"cannot set it: {where} is {child!r}, not a mapping", source=source, field=".".join(parts))
        node = child
    node[parts[-1]] = value


def override_path(key: str) -> list[str]:
    """The parts of an override key; a sweep axis name is itself dotted, so
    ``sweep.grid.head.margin`` is the axis ``head.margin`` of ``sweep.grid``."""
    for kind in ("grid", "zip"):
        if key.startswith(f"sweep.{kind}."):
            return ["sweep", kind, key.removeprefix(f"sweep.{kind}.")]
    return key.split(".")
