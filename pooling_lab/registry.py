"""Name -> factory registries whose config schema is derived from the factory's signature.

Every swappable component (pool, head, backbone) is registered once under a string key.  The
factory's typed keyword arguments *are* the schema: ``spec_model`` turns them into a strict
pydantic model, so a YAML mapping such as ``{name: gem, p: 3.0}`` is validated (unknown keys,
wrong types, out-of-range values) before anything is built, and the defaults are filled in.
Arguments that the builder supplies itself (``channels``, ``num_classes`` ...) are listed as
``context`` and are not part of the schema.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # unknown keys and inf / nan are errors


class StrictModel(BaseModel):
    """The base of every config section: strict as the components' own schemas."""

    model_config = STRICT


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    spec_model: type[BaseModel]
    summary: str


class Registry:
    def __init__(self, kind: str, context: tuple[str, ...] = ()):
        self.kind = kind
        self.context = context
        self._entries: dict[str, Entry] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            first_paragraph = (inspect.getdoc(factory) or "").split("\n\n")[0]
            summary = " ".join(first_paragraph.split())
            self._entries[name] = Entry(name, factory, self._spec_model(name, factory), summary)
            return factory

        return decorate

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries)
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Validate ``kwargs`` against the entry's schema, then call its factory."""
        entry = self.get(name)
        context = {k: kwargs.pop(k) for k in self.context if k in kwargs}
        spec = entry.spec_model(name=name, **kwargs)
        options = spec.model_dump(exclude={"name"})
        return entry.factory(**context, **options)

    def spec_type(self, default: str) -> Any:
        """A pydantic type accepting any registered entry, discriminated by ``name``; a mapping
        without ``name`` is an entry ``default`` (so ``pool: {p: 4}`` or ``--set model.pool.p=4``
        tunes the default pool)."""
        models = [e.spec_model for e in self._entries.values()]
        union = models[0] if len(models) == 1 else Annotated[Union[tuple(models)], Field(discriminator="name")]  # noqa: UP007

        def named(value: Any) -> Any:
            return {"name": default, **value} if isinstance(value, dict) and "name" not in value else value

        return Annotated[union, BeforeValidator(named)]

    def _spec_model(self, name: str, factory: Callable[..., Any]) -> type[BaseModel]:
        fields: dict[str, Any] = {"name": (Literal[name], name)}
        fields |= self._fields(factory)
        model_name = f"{self.kind.title().replace(' ', '')}{name.title().replace('_', '')}Spec"
        return create_model(model_name, __config__=STRICT, **fields)


    def _fields(self, factory: Callable[..., Any]) -> dict[str, Any]:
        """The schema fields of a factory's keyword arguments.  A class constructor that passes
        ``**options`` on to its base class also takes the base constructor's fields, so a
        variant (``wgem`` of ``gem``) states only what it adds."""
        target = factory.__init__ if inspect.isclass(factory) else factory
        hints = typing.get_type_hints(target, include_extras=True)
        fields: dict[str, Any] = {}
        forwards = False
        for param in inspect.signature(factory).parameters.values():
            forwards |= param.kind is param.VAR_KEYWORD
            if param.name in self.context or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (hints.get(param.name, Any), default)
        if forwards and inspect.isclass(factory):
            base = next(c for c in factory.__mro__[1:] if "__init__" in c.__dict__)
            fields |= {k: v for k, v in self._fields(base).items() if k not in fields}
        return fields


def describe_defaults(entry: Entry) -> dict[str, Any]:
    """Schema defaults of one entry (for ``pooling-lab list``)."""
    return {
        field: info.default
        for field, info in entry.spec_model.model_fields.items()
        if field != "name" and not info.is_required()
    }
