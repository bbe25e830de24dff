"""Per-handler timeouts: a call that runs too long is cancelled and counts as a failure."""

from __future__ import annotations

import asyncio
import math
import sys

from fastapi_bus.core.exceptions import ConfigurationError, HandlerTimeout
from fastapi_bus.pipeline.delivery import ConsumeApp, Delivery

__all__ = ["TimeoutMiddleware", "check_timeout"]


def check_timeout(value: object, owner: str) -> float | None:
    """``value`` as seconds if it is a valid timeout (``None`` or a positive number);
    else a ConfigurationError naming ``owner``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigurationError(
            f"{owner}: timeout must be a positive number of seconds (or None), got {value!r}"
        )
    return float(value)


class TimeoutMiddleware:
    """Cancels the rest of the pipeline (user middleware, dependencies, the handler) when it
    runs past ``seconds``, and raises :class:`~fastapi_bus.HandlerTimeout` instead, which the
    failure step retries and then dead-letters like any other failure.

    The cancellation is delivered once, as ``asyncio.CancelledError`` at the ``await`` the
    handler is stuck in: ``finally`` blocks and the exits of dependencies with ``yield`` run
    and may still await (close a session, roll back). A sync handler runs in a worker thread,
    which cannot be interrupted: it is abandoned (it finishes in the background, its result is
    ignored) so that the message is not held.
    """

    def __init__(self, app: ConsumeApp, *, seconds: float, label: str) -> None:
        self.app = app
        self.seconds = seconds
        self.label = label

    async def __call__(self, delivery: Delivery) -> None:
        if sys.version_info >= (3, 11):
            # In this task: no task and no copy of the context per message, as wait_for makes.
            timeout = asyncio.timeout(self.seconds)
            try:
                async with timeout:
                    await self.app(delivery)
            except TimeoutError:
                # The handler's own TimeoutError (a client's, say) is not ours to rename.
                if not timeout.expired():
                    raise
                raise self._timed_out() from None
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await asyncio.wait_for(self.app(delivery), self.seconds)
        except asyncio.TimeoutError:
            if loop.time() - start < self.seconds:
                raise
            raise self._timed_out() from None

    def _timed_out(self) -> HandlerTimeout:
        return HandlerTimeout(
            f"{self.label} timed out: still running after {self.seconds:g}s, cancelled"
        )
