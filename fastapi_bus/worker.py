"""Running an app's event handlers apart from its web server (``fastapi-bus worker``).

A worker drives the app's ASGI lifespan the way a server does (so the app's middleware, its
lifespan and the bus's startup order all apply), serves no HTTP, and stops gracefully on
SIGTERM or SIGINT: no new messages, in-flight handlers get the grace period, exit status 0. A
second signal exits at once; the broker then delivers the unacknowledged messages again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi_bus.bus import BusState, EventBus
from fastapi_bus.exceptions import BusError, ConfigurationError
from fastapi_bus.health import HealthFile, HealthServer, start_health, stop_health
from fastapi_bus.routing import EventRoute

__all__ = ["Lifespan", "StartupError", "Worker", "configure_bus", "select_handlers"]

logger = logging.getLogger("fastapi_bus.worker")

ASGIMessage = dict[str, Any]
#: How often a worker started by a supervisor checks that its supervisor is still there.
_PARENT_CHECK = 1.0


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


def configure_bus(
    bus: EventBus,
    *,
    prefetch: int | None = None,
    concurrency: int | None = None,
    grace: float | None = None,
) -> None:
    """Apply worker options to a bus before it starts; this process always consumes."""
    bus.consume = True  # whatever FASTAPI_BUS_CONSUME says: running handlers is the point
    if prefetch is not None:
        bus.prefetch = prefetch
    if concurrency is not None:
        bus.concurrency = concurrency
        # A handler never runs more calls at once than it has messages in hand.
        if prefetch is None and concurrency > bus.prefetch:
            bus.prefetch = concurrency
    if grace is not None:
        bus.shutdown_grace = grace


def select_handlers(bus: EventBus, spec: str | Iterable[str] | None) -> list[EventRoute]:
    """Restrict ``bus`` to some handlers: names and ``tag:NAME`` items, comma-separated.

    Raises :class:`ConfigurationError` naming the known handlers or tags if one is unknown.
    """
    bus.build()
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    items = [item.strip() for item in items if item.strip()]
    names = {item for item in items if not item.startswith("tag:")}
    tags = {item[4:].strip() for item in items if item.startswith("tag:")}
    known_names = sorted(route.name for route in bus.routes)
    known_tags = sorted({tag for route in bus.routes for tag in route.tags})
    if not bus.routes:
        raise ConfigurationError(f"service {bus.service!r} has no handlers to run")
    unknown = sorted(names - set(known_names))
    if unknown:
        raise ConfigurationError(
            f"unknown handler(s): {', '.join(unknown)}; known handlers: {', '.join(known_names)}"
        )
    unknown = sorted(tags - set(known_tags))
    if unknown:
        raise ConfigurationError(
            f"no handler has the tag(s): {', '.join(unknown)}; "
            f"known tags: {', '.join(known_tags) or '(none)'}"
        )
    if items:
        bus.only, bus.only_tags = names, tags
    else:
        bus.only = bus.only_tags = None
    return [route for route in bus.routes if bus.selects(route)]


class Worker:
    """Runs an app's lifespan and the selected handlers until told to stop."""

    def __init__(
        self,
        app: Callable[..., Any],
        bus: EventBus,
        handlers: list[EventRoute],
        *,
        health_host: str = "127.0.0.1",
        health_port: int | None = None,
        health_file: Path | None = None,
        health_interval: float = 5.0,
        parent_pid: int | None = None,
    ) -> None:
        self.app = app
        self.bus = bus
        self.handlers = handlers
        self.lifespan = Lifespan(app)
        self.parent_pid = parent_pid
        self.server = (
            HealthServer(self.health, health_host, health_port) if health_port is not None else None
        )
        self.file = HealthFile(health_file, self.health, health_interval) if health_file else None
        self.stopping = asyncio.Event()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while connected and every selected handler's consumer runs."""
        transport = self.bus.transport
        connected = bool(transport.connected)
        consuming = self.bus.state is BusState.CONSUMING
        handlers = {
            route.name: (
                ("running" if connected else "disconnected")
                if consuming and route.name in self.bus.consuming
                else "stopped"
            )
            for route in self.handlers
        }
        healthy = (
            not self.stopping.is_set()
            and consuming
            and connected
            and all(state == "running" for state in handlers.values())
        )
        if healthy:
            status = "ok"
        elif self.stopping.is_set():
            status = "stopping"
        else:
            status = "starting" if self.bus.state is BusState.CREATED else "unavailable"
        details = {
            "status": status,
            "pid": os.getpid(),
            "service": self.bus.service,
            "broker": {"url": transport.url, "connected": connected},
            "handlers": handlers,
        }
        return healthy, details

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():
            sys.stderr.write(
                f"fastapi-bus worker: second {name}: exiting now; unfinished messages go back "
                "to their queues\n"
            )
            sys.stderr.flush()
            sys.stdout.flush()
            if self.file is not None:
                self.file.remove()
            # No cleanup on purpose: the broker redelivers whatever was not acknowledged.
            os._exit(128 + signum)
        logger.warning(
            "%s received: stopping; running handlers have up to %gs to finish "
            "(send it again to exit at once)",
            name,
            self.bus.shutdown_grace,
        )
        self.stopping.set()

    async def _watch_parent(self) -> None:
        # Polled: nothing signals a process when its parent dies (prctl is Linux-only).
        while os.getppid() == self.parent_pid:  # noqa: ASYNC110
            await asyncio.sleep(_PARENT_CHECK)
        logger.warning("the supervisor (pid %s) is gone: stopping", self.parent_pid)
        self.stopping.set()

    async def run(self) -> int:
        """Start, run until a signal, stop. Returns the exit status; raises
        :class:`StartupError` if the app does not start."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        background: list[asyncio.Task[None]] = []
        try:
            # Health comes up first: /live answers while the app is still starting.
            background += await start_health(self.server, self.file)
            if self.parent_pid is not None:
                background.append(asyncio.create_task(self._watch_parent()))
            await self.lifespan.startup()
            logger.info(
                "worker ready: service %r, handlers: %s",
                self.bus.service,
                ", ".join(route.name for route in self.handlers),
            )
            assert self.lifespan.task is not None
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({stop, self.lifespan.task}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not self.stopping.is_set():
                logger.error("the app's lifespan ended on its own: stopping")
                self.stopping.set()
            return 0 if await self.lifespan.shutdown() else 1
        finally:
            await stop_health(self.server, background)
            for signum in signals:
                loop.remove_signal_handler(signum)
