"""Running an app's event handlers apart from its web server (``fastapi-bus worker``).

A worker drives the app's ASGI lifespan the way a server does (so the app's middleware, its
lifespan and the bus's startup order all apply), serves no HTTP, and stops gracefully on
SIGTERM or SIGINT: no new messages, in-flight handlers get the grace period, exit status 0. A
second signal exits at once; the broker then delivers the unacknowledged messages again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.ops.health import HealthFile, HealthServer, start_health, stop_health
from fastapi_bus.ops.lifespan import Lifespan, StartupError
from fastapi_bus.routing.route import EventRoute
from fastapi_bus.runtime.bus import BusState, EventBus
from fastapi_bus.telemetry import find_exposition

__all__ = ["Lifespan", "StartupError", "Worker", "configure_bus", "select_handlers"]

logger = logging.getLogger("fastapi_bus.ops.worker")

#: How often a worker started by a supervisor checks that its supervisor is still there.
_PARENT_CHECK = 1.0


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
            HealthServer(
                self.health, health_host, health_port, metrics=find_exposition(bus.metrics)
            )
            if health_port is not None
            else None
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
