"""The package keeps the shape its README describes: a folder per pipeline stage, few modules at
the top, none too long to hold in one's head, and no import cycle (function-level imports count:
a cycle hidden in a function is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pooling_lab"
TOP_LEVEL_LIMIT = 8
LINE_LIMIT = 450


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    return {node for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules that importing or running it imports (importing a.b.c runs
    a and a.b too; a module's own parent packages are already running)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_only(tree)
        targets = []
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        edges = set()
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                dependency = ".".join(parts[:end])
                if dependency in known and dependency != name and not name.startswith(f"{dependency}."):
                    edges.add(dependency)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_cycles_are_found_also_when_hidden_in_a_function() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_few_modules_sit_at_the_top_and_none_is_long() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py") if path.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= TOP_LEVEL_LIMIT, top
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > LINE_LIMIT}
    assert long == {}
