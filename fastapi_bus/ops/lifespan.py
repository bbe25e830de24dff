"""Driving an ASGI app's lifespan the way a server does, and the one-line errors of start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from fastapi_bus.core.exceptions import BusError

__all__ = ["Lifespan", "StartupError", "describe_error"]

logger = logging.getLogger("fastapi_bus.ops.worker")

ASGIMessage = dict[str, Any]


class StartupError(Exception):
    """The app's lifespan failed to start; the message is one line, fit for a terminal."""


def describe_error(exc: BaseException) -> str:
    """One line about ``exc``: the message alone for our errors, else with the type."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and inner and isinstance(inner[0], BaseException):
        exc = inner[0]  # an exception group, from a task group in the app's lifespan
        inner = getattr(exc, "exceptions", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, BusError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Lifespan:
    """Drives an ASGI app through the lifespan protocol, as a server would."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[ASGIMessage] = asyncio.Queue()
        self._outbox: asyncio.Queue[ASGIMessage] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        await self.app(scope, self._inbox.get, self._outbox.put)

    async def _reply(self) -> ASGIMessage | None:
        """The app's next message, or ``None`` if the app returned or raised instead."""
        assert self.task is not None
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    def _failure(self) -> BaseException | None:
        assert self.task is not None
        if self.task.done() and not self.task.cancelled():
            return self.task.exception()
        return None

    async def startup(self) -> None:
        """Run the app's startup; raises :class:`StartupError` if it fails."""
        self.task = asyncio.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is not None and reply["type"] == "lifespan.startup.complete":
            return
        if reply is not None:
            # The app re-raises after reporting; wait for that to get the exception itself.
            with contextlib.suppress(BaseException):
                await self.task
            logger.debug("startup failed:\n%s", reply.get("message", ""))
        error = self._failure()
        if error is not None:
            raise StartupError(describe_error(error))
        raise StartupError("the app does not run its lifespan, so the bus cannot start")

    async def shutdown(self) -> bool:
        """Run the app's shutdown; returns whether it completed without error."""
        if self.task is None or self.task.done():
            return False
        await self._inbox.put({"type": "lifespan.shutdown"})
        reply = await self._reply()
        with contextlib.suppress(BaseException):
            await self.task
        if reply is not None and reply["type"] == "lifespan.shutdown.complete":
            return True
        error = self._failure()
        logger.error("shutdown failed: %s", describe_error(error) if error else reply)
        return False
