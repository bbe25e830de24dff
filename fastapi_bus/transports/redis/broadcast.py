"""Broadcast subscriptions over Redis Pub/Sub: every process gets every message, nothing is kept.

Each broadcast subscription of a process listens on the channels of its patterns (``PSUBSCRIBE``
with a glob at least as wide as the topic pattern, then the exact topic match here). Messages wait
for the handler in a bounded buffer: when it is full, new ones are dropped with a warning rather
than letting Redis cut off a slow subscriber. A process that is down, or reconnecting, misses
what is published meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi_bus.core.messages import Message
from fastapi_bus.core.names import pattern_matches
from fastapi_bus.transports.base import Consumer, Subscription
from fastapi_bus.transports.redis.description import channel_glob
from fastapi_bus.transports.redis.mapping import decode
from fastapi_bus.transports.redis.session import Session, stop_task

__all__ = ["BUFFER", "BroadcastConsumer"]

logger = logging.getLogger("fastapi_bus.redis")

#: Broadcast messages one subscription holds for its handler before it drops new ones.
BUFFER = 10_000


class BroadcastConsumer:
    """Hands one process's broadcasts of one subscription to one consumer callable."""

    def __init__(
        self, session: Session, client: Any, subscription: Subscription, consumer: Consumer
    ) -> None:
        self._session = session
        self._client = client  # of its own: a subscribed connection does nothing else
        self.queue = subscription.queue
        self._patterns = subscription.patterns
        self._consumer = consumer
        self._buffer: asyncio.Queue[Message] = asyncio.Queue(BUFFER)
        self._pubsub: Any = None
        self._dropped = 0
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._workers = subscription.max_concurrency

    async def start(self) -> None:
        self._pubsub = self._client.pubsub()
        await self._pubsub.psubscribe(
            *sorted({channel_glob(self._session.keys, p) for p in self._patterns})
        )
        self._tasks = [asyncio.create_task(self._listen())]
        self._tasks += [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def _listen(self) -> None:
        pause = 0.05
        prefix = len(self._session.keys.channel(""))
        while not self.stopping:
            try:
                event = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            except Exception as exc:
                if self.stopping:
                    return
                self._session.down(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            if event is None or event.get("type") != "pmessage":
                continue
            channel = event["channel"]
            name = (channel.decode() if isinstance(channel, bytes) else str(channel))[prefix:]
            if not any(pattern_matches(p, name) for p in self._patterns):
                continue
            self._offer(decode(event["data"], name=name))

    def _offer(self, message: Message) -> None:
        try:
            self._buffer.put_nowait(message)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                logger.warning(
                    "broadcast handler of %r is too slow: %d message(s) dropped so far",
                    self.queue,
                    self._dropped,
                )

    async def _work(self) -> None:
        while True:
            message = await self._buffer.get()
            try:
                await self._consumer(message)
            except Exception:
                if message.redelivered:
                    logger.exception("broadcast to %r failed twice; dropped", self.queue)
                else:
                    logger.exception("broadcast to %r failed; trying once more", self.queue)
                    self._offer(message.replace(redelivered=True))
            finally:
                self._buffer.task_done()

    def halt(self) -> None:
        self.stopping = True
        if self._tasks:
            self._tasks[0].cancel()

    async def stop(self, grace: float) -> None:
        self.halt()
        listener, workers = self._tasks[:1], self._tasks[1:]
        for task in listener:
            await stop_task(task)
        # Let the handlers finish what they hold, within the grace period.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._buffer.join(), max(grace, 0))
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._client.aclose()
