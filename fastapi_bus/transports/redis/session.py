"""What the parts of the Redis transport share: the client, the keys, the scripts, and whether
the server is reachable."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi_bus.transports.redis import scripts
from fastapi_bus.transports.redis.scripts import GROUP, Keys

__all__ = ["Session", "is_missing_group", "stop_task"]

logger = logging.getLogger("fastapi_bus.redis")


def is_missing_group(exc: BaseException) -> bool:
    """Whether ``exc`` says that a stream or its consumer group does not exist."""
    return "NOGROUP" in str(exc)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end. redis-py can swallow a cancellation that lands in
    the middle of a command, so the cancellation is repeated until the task has ended."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("task %s ended with %r", task.get_name(), task.exception())


class Session:
    """The shared client (a bounded pool) and the registered scripts of one transport."""

    def __init__(self, client: Any, keys: Keys, *, url: str) -> None:
        #: A ``redis.asyncio.Redis`` on a bounded connection pool.
        self.client = client
        self.keys = keys
        self.url = url
        self._down: str | None = None
        self.declare = client.register_script(scripts.DECLARE)
        self.route = client.register_script(scripts.ROUTE)
        self.send = client.register_script(scripts.SEND)
        self.delay = client.register_script(scripts.DELAY)
        self.move_due = client.register_script(scripts.MOVE_DUE)
        self._ack = client.register_script(scripts.ACK)
        self._move = client.register_script(scripts.MOVE)
        self._read = client.register_script(scripts.READ)
        self._prune = client.register_script(scripts.PRUNE)

    @property
    def connected(self) -> bool:
        return self._down is None

    def down(self, exc: BaseException) -> None:
        """Note that talking to Redis failed (logged once per outage)."""
        if self._down is None:
            self._down = str(exc) or type(exc).__name__
            logger.warning("lost Redis at %s (%s); retrying", self.url, self._down)

    def up(self) -> None:
        """Note that talking to Redis works (again)."""
        if self._down is not None:
            logger.info("Redis at %s is back", self.url)
            self._down = None

    async def ack(self, stream: str, *entry_ids: bytes | str) -> None:
        await self._ack(keys=[stream], args=[GROUP, *entry_ids])

    async def read(self, stream: str, consumer: str, count: int, start: str, *, client: Any) -> Any:
        """Up to ``count`` entries of ``stream`` for ``consumer`` (``start`` ``">"``: new ones,
        ``"0"``: its own pending ones) without blocking, packed as :data:`scripts.READ` says,
        read on ``client``."""
        return await self._read(keys=[stream], args=[GROUP, consumer, count, start], client=client)

    async def move(self, stream: str, entry_id: bytes | str, value: bytes, target: str) -> None:
        """Replace entry ``entry_id`` of ``stream`` by ``value`` at the end of ``target``."""
        await self._move(keys=[stream, target], args=[GROUP, entry_id, value])

    async def prune_consumers(self, stream: str, keep: str, idle_ms: int) -> int:
        """Remove the consumers of ``stream``'s group, other than ``keep``, that hold nothing
        and have been idle longer than ``idle_ms``; how many were removed."""
        return int(await self._prune(keys=[stream], args=[GROUP, keep, idle_ms]))

    async def forget_consumer(self, stream: str, name: str) -> None:
        """Remove consumer ``name`` from the group, if it holds nothing (a consumer that still
        holds entries stays, so that they can be claimed)."""
        pending = await self.client.xpending_range(
            stream, GROUP, min="-", max="+", count=1, consumername=name
        )
        if not pending:
            await self.client.execute_command("XGROUP", "DELCONSUMER", stream, GROUP, name)
