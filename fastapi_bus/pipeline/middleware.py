"""Consumer middleware: wrap the call of a handler, composed once per handler at startup.

A middleware is a class whose instances wrap the next step::

    class Timing:
        def __init__(self, app: ConsumeApp, *, label: str = "handled") -> None:
            self.app = app
            self.label = label

        async def __call__(self, delivery: Delivery) -> None:
            start = time.perf_counter()
            try:
                await self.app(delivery)
            finally:
                log.info("%s %s in %.3fs", self.label, delivery.message.name,
                         time.perf_counter() - start)

    BusExtension(..., middleware=[Middleware(Timing, label="done")])

Returning lets the message be acknowledged; raising hands it back to the broker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.pipeline.delivery import ConsumeApp, Delivery

__all__ = ["Middleware", "build_pipeline"]


async def _NEXT(delivery: Delivery) -> None:
    """Stands for the next step when middleware options are checked."""


class Middleware:
    """A middleware class and its options: ``Middleware(cls, **options)``."""

    def __init__(self, cls: Callable[..., ConsumeApp], **options: Any) -> None:
        if not callable(cls):
            raise ConfigurationError(f"Middleware needs a class, got {cls!r}")
        self.cls = cls
        self.options = options
        try:
            # The next step is passed at startup; check the options now, at declaration.
            inspect.signature(cls).bind(_NEXT, **options)
        except TypeError as exc:
            raise ConfigurationError(f"{self!r}: {exc}") from None
        except ValueError:  # no signature to check (a builtin): checked when built
            pass

    def __iter__(self) -> Iterator[Any]:
        return iter((self.cls, self.options))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        name = getattr(self.cls, "__name__", repr(self.cls))
        return f"Middleware({name}{', ' if options else ''}{options})"


def build_pipeline(app: ConsumeApp, middleware: Sequence[Middleware]) -> ConsumeApp:
    """Wrap ``app`` in ``middleware``, the first in the list outermost."""
    for spec in reversed(middleware):
        try:
            app = spec.cls(app, **spec.options)
        except TypeError as exc:
            raise ConfigurationError(f"{spec!r} cannot be built: {exc}") from None
    return app
