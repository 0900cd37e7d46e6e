"""The registry derives a component's schema from its constructor."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import Field, ValidationError

from pooling_lab.registry import Registry, describe_defaults


def test_a_variant_forwarding_options_takes_its_base_fields() -> None:
    registry = Registry("thing", context=("channels",))

    @registry.register("base")
    class Base:
        def __init__(self, channels: int, p: Annotated[float, Field(gt=0)] = 3.0, eps: float = 1e-6):
            self.channels, self.p, self.eps = channels, p, eps

    @registry.register("variant")
    class Variant(Base):
        def __init__(self, channels: int, size: int = 8, **base: Any):
            super().__init__(channels, **base)
            self.size = size

    assert describe_defaults(registry.get("variant")) == {"size": 8, "p": 3.0, "eps": 1e-6}
    built = registry.build("variant", channels=4, size=2, p=5.0)
    assert (built.channels, built.size, built.p, built.eps) == (4, 2, 5.0, 1e-6)
    with pytest.raises(ValidationError):
        registry.build("variant", channels=4, p=-1.0)  # the base's constraint holds
    with pytest.raises(ValidationError):
        registry.build("variant", channels=4, unknown=1)
