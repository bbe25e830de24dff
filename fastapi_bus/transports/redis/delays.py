"""Delayed messages: a sorted set of what is due when, moved into the streams by every process.

``send(..., delay=)`` and ``publish(..., delay=)`` keep the message in a hash and its token in
the sorted set ``{prefix}:delayed``, scored by when it is due on the Redis server's clock. Each
transport runs a mover that moves what is due into the target queues' streams in one script, so
any number of processes can run it at once: a message moves exactly once, and is never early.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi_bus.transports.redis.session import Session, stop_task

__all__ = ["DelayMover"]

logger = logging.getLogger("fastapi_bus.redis")

#: The longest the mover sleeps: a message another process delays is at most this late.
POLL = 0.2
#: Messages moved per script call.
BATCH = 200


class DelayMover:
    """Moves due messages into their streams until stopped."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """Look again now (this process just delayed a message that may be due sooner)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, or until :meth:`wake`."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, self.wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _run(self) -> None:
        keys = self._session.keys
        pause = 0.05
        while True:
            try:
                moved, next_ms = await self._session.move_due(
                    keys=[keys.delayed, keys.queues], args=[BATCH, keys.stream("")]
                )
            except Exception as exc:
                self._session.down(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            if int(moved) >= BATCH:
                continue
            await self._sleep(POLL if int(next_ms) < 0 else min(int(next_ms) / 1000, POLL))

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
