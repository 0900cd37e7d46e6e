"""The pooling package sits below the models: none of its modules imports from pooling_lab
outside itself, except the registry (not even for type checking)."""

from __future__ import annotations

import ast
from pathlib import Path

import pooling_lab.pooling

ALLOWED = ("pooling_lab.pooling", "pooling_lab.registry")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_pooling_imports_nothing_above_it():
    package = Path(pooling_lab.pooling.__file__).parent
    upward = {
        f"{path.name}: {module}"
        for path in sorted(package.glob("*.py"))
        for module in imported_modules(path)
        if module.startswith("pooling_lab") and not module.startswith(ALLOWED)
    }
    assert upward == set()
