"""Counting the events that another benchmark module's sides validate, without changing it.

``benchmarks/redis_consume.py`` and ``benchmarks/kafka_consume.py`` time their own sides and
return only the seconds. :func:`counted` swaps their ``Tick`` model for a subclass (of the same
name, so the bus still routes it) that notes the ``n`` of every event validated from a
message, while their sides run; building an event (``Tick(n=...)``, as filling a stream does)
is not counted.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, model_validator

_building = contextvars.ContextVar("building", default=False)


@contextlib.contextmanager
def counted(module: types.ModuleType) -> Iterator[list[int]]:
    """While in the block, ``module.Tick`` is a counting subclass; yields the ``n`` seen."""
    original: type[BaseModel] = getattr(module, "Tick")  # noqa: B009
    seen: list[int] = []

    class Tick(original):  # type: ignore[valid-type,misc]
        def __init__(self, **data: Any) -> None:
            token = _building.set(True)
            try:
                super().__init__(**data)
            finally:
                _building.reset(token)

        @model_validator(mode="after")
        def _count(self) -> Tick:
            if not _building.get():
                seen.append(self.n)
            return self

    Tick.__qualname__ = original.__qualname__
    Tick.__module__ = original.__module__
    setattr(module, "Tick", Tick)  # noqa: B010
    try:
        yield seen
    finally:
        setattr(module, "Tick", original)  # noqa: B010
