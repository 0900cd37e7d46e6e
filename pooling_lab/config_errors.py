"""Turn a pydantic ``ValidationError`` into the one-line message a user can act on.

The line names the file and YAML line, the dotted field (without the union tags pydantic puts
into the location), the bad value and, for a misspelt name, the closest allowed one.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pooling_lab.errors import UserError


def describe_validation_error(
    error: ValidationError, raw: dict[str, Any], path: Path, text: str, context: str = ""
) -> UserError:
    errors = error.errors()
    first = errors[0]
    parts = _field_path(first["loc"], raw)
    field = ".".join(str(part) for part in parts) or "(top level)"
    line = yaml_line(text, parts)
    source = f"{path}:{line}" if line else str(path)
    message = _message(first, parts, raw)
    if context:
        message = f"{message} ({context})"
    if len(errors) > 1:
        message = f"{message} (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return UserError(message, source=source, field=field)


def _field_path(loc: tuple[Any, ...], raw: Any) -> list[Any]:
    """Drop the union tags from a pydantic location: ``model.pool.gem.p`` -> ``model.pool.p``."""
    parts: list[Any] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("name") == part:
            continue
        if isinstance(part, str) and "[" in part:  # pydantic's label for a union member
            continue
        parts.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return parts


def _message(detail: dict[str, Any], parts: list[Any], raw: dict[str, Any]) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(detail, parts, raw)
        hint = _suggest(str(parts[-1]), allowed) if parts else ""
        return f"unknown key{hint}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "union_tag_invalid":
        expected = re.findall(r"'([^']+)'", detail["ctx"]["expected_tags"])
        value = detail["ctx"]["tag"]
        return f"unknown name {value!r}{_suggest(str(value), expected)}; allowed: {', '.join(expected)}"
    if kind == "literal_error":
        expected = re.findall(r"'([^']+)'", detail["ctx"]["expected"])
        value = detail.get("input")
        return f"{value!r} is not allowed{_suggest(str(value), expected)}; allowed: {', '.join(expected)}"
    if kind == "missing":
        return "required but missing"
    text = detail["msg"].removeprefix("Value error, ")
    return f"{text} (got {_shown(detail.get('input'))})"


def _allowed_keys(detail: dict[str, Any], parts: list[Any], raw: dict[str, Any]) -> list[str]:
    """The keys the enclosing model accepts (read off the error context when pydantic gives it)."""
    from pooling_lab.config import ExperimentConfig

    model: Any = ExperimentConfig
    node: Any = raw
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation, node)
        if model is None:
            return []
    return [name for name in getattr(model, "model_fields", {}) if name != "name" or "name" in (node or {})]


def _model_of(annotation: Any, node: Any) -> Any:
    """The pydantic model behind an annotation, choosing the union member by ``name``."""
    candidates = [annotation]
    seen: list[Any] = []
    while candidates:
        current = candidates.pop()
        if hasattr(current, "model_fields"):
            seen.append(current)
        candidates.extend(getattr(current, "__args__", ()) or ())
        candidates.extend(getattr(current, "__origin__", None) and [current.__origin__] or [])
    if len(seen) == 1:
        return seen[0]
    name = node.get("name") if isinstance(node, dict) else None
    for model in seen:
        tag = model.model_fields.get("name")
        if tag is not None and tag.default == name:
            return model
    return None


def _suggest(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def yaml_line(text: str, parts: list[Any]) -> int | None:
    """1-based line of the deepest key of ``parts`` that the YAML text contains."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
