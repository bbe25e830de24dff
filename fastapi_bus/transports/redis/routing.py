"""Routing events to queues, as RabbitMQ's topic exchange would.

Each queue's patterns are kept in the hash ``{prefix}:bindings``, and every change raises the
counter ``{prefix}:bindings-version``. A publisher matches event names against its cached copy of
the bindings and writes to the chosen streams in one script that first checks the version: if a
binding changed meanwhile, the script writes nothing, and the publisher reloads the bindings and
routes again. So routing is as exact as a broker's, at the cost of one round trip per publish.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable

from fastapi_bus.core.exceptions import TransportError
from fastapi_bus.core.names import pattern_matches
from fastapi_bus.transports.redis.session import Session

__all__ = ["Router"]

#: Reloading the bindings this many times in a row means they change faster than we can route.
_TRIES = 10


def _ms(delay: float) -> int:
    # One more millisecond: the server's clock has whole milliseconds, and early is never allowed.
    return math.ceil(delay * 1000) + 1


class Router:
    """Routes, sends and delays encoded messages for one transport."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._version: str | None = None
        self._bindings: dict[str, tuple[str, ...]] = {}
        self._routes: dict[str, list[str]] = {}

    async def _refresh(self) -> str:
        keys = self._session.keys
        pipe = self._session.client.pipeline(transaction=True)
        pipe.get(keys.version)
        pipe.hgetall(keys.bindings)
        version, bindings = await pipe.execute()
        self._bindings = {
            queue.decode(): tuple(patterns.decode().split()) for queue, patterns in bindings.items()
        }
        self._routes = {}
        self._version = version.decode() if version else "0"
        return self._version

    def _queues(self, name: str) -> list[str]:
        queues = self._routes.get(name)
        if queues is None:
            queues = sorted(
                queue
                for queue, patterns in self._bindings.items()
                if any(pattern_matches(p, name) for p in patterns)
            )
            if len(self._routes) > 10_000:
                self._routes.clear()
            self._routes[name] = queues
        return queues

    async def _routed(self, name: str, write: Callable[[str, list[str]], Awaitable[int]]) -> int:
        """``write(version, queues)`` for the queues bound to ``name``, routed again whenever
        the bindings changed meanwhile (``write`` returned -1)."""
        for _ in range(_TRIES):
            version = self._version or await self._refresh()
            written = await write(version, self._queues(name))
            if written >= 0:
                return written
            self._version = None
        raise TransportError("the Redis bindings kept changing; the message was not published")

    async def publish(self, name: str, value: bytes) -> int:
        """Write ``value`` to every queue bound to event ``name`` and to its broadcast channel;
        returns how many queues and listening processes got it."""
        keys = self._session.keys

        async def write(version: str, queues: list[str]) -> int:
            reached: int = await self._session.route(
                keys=[keys.version, *map(keys.stream, queues)],
                args=[version, value, keys.channel(name)],
            )
            return reached

        return await self._routed(name, write)

    async def delay(self, name: str, value: bytes, delay: float) -> int:
        """Keep ``value`` for every queue bound to ``name`` now, due in ``delay`` seconds."""
        return await self._routed(
            name, lambda version, queues: self._delay(queues, value, delay, version)
        )

    async def delay_to(self, queue: str, value: bytes, delay: float) -> int:
        """Keep ``value`` for ``queue``, due in ``delay`` seconds; 0 if there is no such queue."""
        return await self._delay([queue], value, delay, "")

    async def _delay(self, queues: list[str], value: bytes, delay: float, version: str) -> int:
        keys = self._session.keys
        stored: int = await self._session.delay(
            keys=[keys.queues, keys.delayed, keys.version],
            args=[_ms(delay), uuid.uuid4().hex, value, version, *queues],
        )
        return stored

    async def send(self, queue: str, value: bytes) -> int:
        """Write ``value`` to ``queue``'s stream; 0 if there is no such queue."""
        keys = self._session.keys
        sent: int = await self._session.send(
            keys=[keys.queues, keys.stream(queue)], args=[queue, value]
        )
        return sent
