"""Validation of an experiment tree, and a pydantic ``ValidationError`` turned into the one-line
message a user can act on.

The line names the file and YAML line, the dotted field (without the union tags pydantic puts
into the location), the bad value and, for a misspelt name, the closest allowed one.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pooling_lab.errors import UserError
from pooling_lab.experiment.schema import ExperimentConfig


def describe_validation_error(
    error: ValidationError, path: Path, text: str, context: str = "", lines: dict[str, int | None] | None = None
) -> UserError:
    """``lines`` maps dotted keys set elsewhere in the file (sweep axes) to their YAML line."""
    errors = error.errors()
    first = errors[0]
    parts, holder = _user_path(first["loc"])
    if first["type"] == "union_tag_invalid":
        parts.append("name")
    field = ".".join(str(part) for part in parts) or "(top level)"
    line = _line_of(field, lines or {}) or yaml_line(text, parts)
    source = f"{path}:{line}" if line else str(path)
    message = _message(first, parts, holder)
    if context:
        message = f"{message} ({context})"
    if len(errors) > 1:
        message = f"{message} (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return UserError(message, source=source, field=field)


def validate(
    tree: dict[str, Any], path: Path, text: str, context: str = "", lines: dict[str, int | None] | None = None
) -> ExperimentConfig:
    """The tree as an ``ExperimentConfig``, or the one-line error (``context`` says which sweep run)."""
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as error:
        raise describe_validation_error(error, path, text, context, lines) from None


def _user_path(loc: tuple[Any, ...]) -> tuple[list[Any], type[BaseModel] | None]:
    """The path as the user wrote it, and the model that holds its last part.

    Pydantic puts the tag of a discriminated union into the location (``model.pool.gem.p``);
    the user wrote ``model.pool.p``, so a part that picks a union member is dropped.
    """
    parts: list[Any] = []
    holder: type[BaseModel] | None = None
    current: Any = ExperimentConfig
    for part in loc:
        members = {_tag(model): model for model in _models_in(current)}
        if len(members) > 1 and part in members:
            current = members[part]
            continue
        if isinstance(part, str) and "[" in part:  # pydantic's label for a union member
            continue
        parts.append(part)
        holder = next(iter(members.values())) if len(members) == 1 else None
        field = holder.model_fields.get(part) if holder else None
        current = field.annotation if field else None
    return parts, holder


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation stands for (through ``Annotated`` and unions, not containers)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
    return []


def _tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("name")
    return field.default if field else None


def _line_of(field: str, lines: dict[str, int | None]) -> int | None:
    """The line of the key that set ``field``, a part of it, or a value inside it."""
    for key, line in lines.items():
        if field == key or field.startswith(f"{key}.") or key.startswith(f"{field}."):
            return line
    return None


def _message(detail: dict[str, Any], parts: list[Any], holder: type[BaseModel] | None) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        allowed = list(holder.model_fields) if holder else []
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
    if kind == "value_error" and isinstance(detail.get("input"), dict):
        return text  # a check of a whole section: its message names the values
    return f"{text} (got {_shown(detail.get('input'))})"


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
