"""``pooling-lab list``: what can be named in an experiment file."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from pooling_lab.cli import _App, app, console

catalogue = _App(help="List what can be named in an experiment file.", no_args_is_help=True)
app.add_typer(catalogue, name="list")


@catalogue.command("pools")
def list_pools() -> None:
    """Global and local pools: name, kind, learnable parameters and defaults."""
    from rich.table import Table

    from pooling_lab.pooling import GLOBAL_POOLS, LOCAL_POOLS
    from pooling_lab.registry import describe_defaults

    table = Table(title="pools (model.pool: global; model.local_pool: local)")
    for column in ("name", "kind", "learnable", "defaults", "what"):
        table.add_column(column)
    for kind, registry in (("global", GLOBAL_POOLS), ("local", LOCAL_POOLS)):
        for entry in registry.entries():
            learnable = ", ".join(registry.build(entry.name, channels=8).traced()) or "-"
            defaults = ", ".join(f"{k}={v}" for k, v in describe_defaults(entry).items()) or "-"
            table.add_row(entry.name, kind, learnable, escape(defaults), _what(entry))
    console.print(table)


@catalogue.command("heads")
def list_heads() -> None:
    """Classification heads and their defaults."""
    from pooling_lab.models.heads import HEADS

    _print_registry("heads (head:)", HEADS)


@catalogue.command("backbones")
def list_backbones() -> None:
    """Backbones and their defaults."""
    from pooling_lab.models import BACKBONES

    _print_registry("backbones (model.backbone:)", BACKBONES)


def _what(entry: Any) -> str:
    """A registry entry's summary as plain text: its docstring's ``name`` literals unquoted."""
    return escape(entry.summary.replace("``", ""))


def _print_registry(title: str, registry: Any) -> None:
    from rich.table import Table

    from pooling_lab.registry import describe_defaults

    table = Table(title=title)
    for column in ("name", "defaults", "what"):
        table.add_column(column)
    for entry in registry.entries():
        defaults = ", ".join(f"{k}={v}" for k, v in describe_defaults(entry).items()) or "-"
        table.add_row(entry.name, escape(defaults), _what(entry))
    console.print(table)
