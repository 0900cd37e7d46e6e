"""Reading an experiment file: YAML 1.2 numbers, one-line errors for unreadable files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pooling_lab.errors import UserError


class YamlLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, which reads ``1e-3`` as a string; read it as a float, as YAML 1.2 does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+.0123456789")
)


def read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    """The mapping in ``path`` and its text (kept to find line numbers for errors)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError("no such file", source=source) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read: {error}", source=source) from None
    try:
        data = yaml.load(text, YamlLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error)
        raise UserError(f"not valid YAML: {problem}", source=where) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise UserError(f"expected a mapping of sections at the top, got {found}", source=source)
    return data, text
