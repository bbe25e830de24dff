"""Per-handler timeouts: a call that runs too long is cancelled and counts as a failure."""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any

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
        self._alarm: _Alarm | None = None

    async def __call__(self, delivery: Delivery) -> None:
        if sys.version_info >= (3, 11):
            # In this task: no task and no copy of the context per message, as wait_for makes;
            # and no timer per call either (see _Alarm).
            loop = asyncio.get_running_loop()
            alarm = self._alarm
            if alarm is None or alarm.loop is not loop:
                alarm = self._alarm = _Alarm(loop)
            timeout = asyncio.timeout(None)
            try:
                async with timeout:
                    running = alarm.running
                    running[timeout] = loop.time() + self.seconds
                    if alarm.handle is None:
                        alarm.arm()
                    try:
                        await self.app(delivery)
                    finally:
                        running.pop(timeout, None)
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


class _Alarm:
    """The running calls of one handler's timeout step on one event loop, and one timer for
    them all.

    A timer per call costs its scheduling and cancelling on the loop's heap, more than the rest
    of a short handler's pipeline. Every call gets the same timeout, so the oldest running call
    is the next to time out: the timer is set for its deadline, and when it rings it expires the
    calls past their deadline (their ``asyncio.timeout`` cancels them, as if its own timer had
    rung) and is set again for the oldest left.
    """

    __slots__ = ("handle", "loop", "running")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The running calls' timeouts (entered without a deadline), oldest first, and their
        #: deadlines on the loop's clock.
        self.running: dict[Any, float] = {}
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """Set the timer for the oldest running call's deadline (none if none runs)."""
        running = self.running
        if not running:
            self.handle = None
            return
        self.handle = self.loop.call_at(running[next(iter(running))], self._ring)

    def _ring(self) -> None:
        now = self.loop.time()
        running = self.running
        while running:
            timeout = next(iter(running))
            if running[timeout] > now:
                break
            del running[timeout]
            timeout.reschedule(now)
        self.arm()
