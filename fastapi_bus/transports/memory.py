"""``memory://``: an in-process broker with the delivery semantics of a real one.

Queues are bounded (a full queue makes publishers wait), consumers compete, a handler that raises
gets its message again, delays are honoured and ``close`` drains in-flight work. Nothing survives
the process: it is for development, tests and single-process apps.

``memory://`` gives each transport a broker of its own. ``memory://NAME`` shares one broker
among all transports of the process that use the same name, which is how tests run several
services or replicas side by side.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi_bus.core.exceptions import ConfigurationError, TransportClosedError, UnroutableError
from fastapi_bus.core.logs import message_extra
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import (
    AsyncAPIPart,
    Consumer,
    Pulled,
    Subscription,
    Transport,
    Unroutable,
    check_unroutable,
    dead_letter_queue,
    report_unroutable,
)
from fastapi_bus.transports.memory_queues import MemoryBroker, MemoryQueue

__all__ = ["MemoryTransport"]

logger = logging.getLogger("fastapi_bus.memory")


class _MemoryPulled(Pulled):
    def __init__(self, queue: MemoryQueue, message: Message) -> None:
        super().__init__(message)
        self._queue = queue

    async def ack(self) -> None:
        self._queue.ack()

    async def release(self) -> None:
        self._queue.requeue(self.message.replace(redelivered=True))


_shared_brokers: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()


class _ConsumerLoop:
    """Workers that take messages from one queue and hand them to one consumer."""

    def __init__(self, queue: MemoryQueue, consumer: Consumer, workers: int) -> None:
        self.queue = queue
        self.consumer = consumer
        self.stopping = False
        #: The workers waiting for a message (the others hold one, or are about to look).
        self.idle: set[asyncio.Task[None]] = set()
        self.tasks = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        queue, consumer, idle = self.queue, self.consumer, self.idle
        message: Message | None = None
        while not self.stopping:
            if message is None:
                # Waits only when the queue is empty: no suspension per message otherwise.
                message = queue.take_nowait()
                if message is None:
                    idle.add(task)
                    try:
                        message = await queue.get()
                    finally:
                        idle.discard(task)
            # From here on the message is ours until it is acknowledged or returned.
            try:
                await consumer(message)
            except asyncio.CancelledError:
                queue.requeue(message.replace(redelivered=True))
                raise
            except Exception:
                logger.exception(
                    "consumer of %r failed; the message goes back",
                    queue.name,
                    extra=message_extra(message),
                )
                queue.requeue(message.replace(redelivered=True))
                message = None
                # Yield, so that a message that always fails cannot starve the event loop.
                await asyncio.sleep(0)
            else:
                if self.stopping:
                    queue.ack()
                    return
                # Acknowledged, and the next message taken, in one step.
                message = queue.ack_and_take()

    async def stop(self, grace: float) -> None:
        self.stopping = True
        # A worker waiting for a message holds none: it stops now. The others finish theirs.
        for task in self.tasks:
            if task in self.idle:
                task.cancel()
        busy = [task for task in self.tasks if not task.done()]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class MemoryTransport(Transport):
    """The embedded broker. See the module docstring for what it models.

    Args:
        url: ``memory://`` (a broker of its own) or ``memory://NAME`` (shared in the process).
        max_queue_size: how many messages a queue holds before publishers wait for room
            (backpressure: a producer faster than its consumers is slowed to their pace, and
            memory stays bounded). Also ``memory://?max_queue_size=N``. Messages given back
            (a handler failed) and delayed ones always fit, so none is lost.
        unroutable: what to do with an event that no queue is bound to: ``"ignore"``,
            ``"log"`` (a warning, the default) or ``"raise"``.
    """

    protocol = "memory"

    def __init__(
        self,
        url: str = "memory://",
        *,
        max_queue_size: int = 10_000,
        unroutable: Unroutable = "log",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"MemoryTransport needs a memory:// URL, got {url!r}")
        query = parse_qs(parts.query)
        if "max_queue_size" in query:
            max_queue_size = int(query["max_queue_size"][0])
        if max_queue_size < 1:
            raise ConfigurationError("max_queue_size must be at least 1")
        self._url = url
        self._name = parts.netloc + parts.path
        self._max_queue_size = max_queue_size
        self._unroutable = check_unroutable(unroutable)
        self._broker: MemoryBroker | None = None
        self._consumers: list[_ConsumerLoop] = []
        self._delayed: set[asyncio.Task[None]] = set()
        self._own_queues: list[str] = []
        self._process_id = uuid.uuid4().hex[:12]
        self._running = False

    @property
    def url(self) -> str:
        return self._url

    def asyncapi(
        self, part: AsyncAPIPart, *, name: str = "", queue: str = "", broadcast: bool = False
    ) -> dict[str, Any]:
        if part == "server":
            return {"description": "The in-process memory broker (for development and tests)."}
        return {}

    # lifecycle

    async def start(self) -> None:
        if self._broker is None:
            if self._name:
                broker = _shared_brokers.get(self._name)
                if broker is None:
                    broker = MemoryBroker(self._max_queue_size)
                    _shared_brokers[self._name] = broker
                self._broker = broker
            else:
                self._broker = MemoryBroker(self._max_queue_size)
        self._running = True

    @property
    def connected(self) -> bool:
        return self._running

    async def stop_consuming(self, grace: float = 10.0) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(consumer.stop(grace) for consumer in consumers))

    async def close(self, grace: float = 10.0) -> None:
        if not self._running:
            return
        self._running = False
        await self.stop_consuming(grace)
        if not self._name:
            # A private broker dies with its transport, and so do its delayed messages.
            for task in self._delayed:
                task.cancel()
            await asyncio.gather(*self._delayed, return_exceptions=True)
        broker = self._require_broker()
        for name in self._own_queues:
            broker.remove(name)
        self._own_queues.clear()

    def _require_broker(self) -> MemoryBroker:
        if self._broker is None:
            raise TransportClosedError("the memory transport is not started")
        return self._broker

    def _require_running(self) -> MemoryBroker:
        broker = self._broker
        if not self._running or broker is None:
            raise TransportClosedError("the memory transport is not running")
        return broker

    # topology

    def _queue_name(self, subscription: Subscription) -> str:
        if subscription.broadcast:
            return f"{subscription.queue}.{self._process_id}"
        return subscription.queue

    async def declare(self, subscription: Subscription) -> None:
        broker = self._require_running()
        name = self._queue_name(subscription)
        broker.bind(name, subscription.patterns)
        if subscription.broadcast and name not in self._own_queues:
            self._own_queues.append(name)
        broker.queue(dead_letter_queue(subscription.queue))

    # publishing

    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        broker = self._broker
        if not self._running or broker is None:
            broker = self._require_running()  # raises
        if delay:
            self._later(delay, self._route, broker, message)
            return
        if self.publish_nowait(message):
            return
        full = self._offer(broker, message)
        if full:
            await self._put_all(full, message)

    def publish_nowait(self, message: Message) -> bool:
        # The usual message, routed to one queue that has room: ``_offer`` written out, without
        # the coroutine of ``publish``.
        broker = self._broker
        if not self._running or broker is None:
            return False
        queues = broker.routes.get(message.name)  # ``route``, without a call once worked out
        if queues is None:
            queues = broker.route(message.name)
        return len(queues) == 1 and queues[0].offer(message)

    def _offer(self, broker: MemoryBroker, message: Message) -> list[MemoryQueue] | None:
        """Add ``message`` to the queues its name routes to that have room; the others."""
        full = None
        name = message.name
        queues = broker.routes.get(name)  # ``route``, without a call once worked out
        if queues is None:
            queues = broker.route(name)
        if not queues:
            report_unroutable(self._unroutable, message, logger)
        for queue in queues:
            if not queue.offer(message):
                if full is None:
                    full = [queue]
                else:
                    full.append(queue)
        return full

    @staticmethod
    async def _put_all(queues: list[MemoryQueue], message: Message) -> None:
        for queue in queues:
            # Waits for room (backpressure).
            await queue.put(message)

    async def _route(self, broker: MemoryBroker, message: Message) -> None:
        full = self._offer(broker, message)
        if full:
            await self._put_all(full, message)

    async def send(self, queue: str, message: Message, *, delay: float | None = None) -> None:
        broker = self._require_running()
        if queue not in broker.queues:
            raise UnroutableError(
                f"no queue named {queue!r} exists; message {message.id} was not sent"
            )
        target = broker.queues[queue]
        if delay:
            self._later(delay, self._put, target, message)
            return
        await target.put(message)

    @staticmethod
    async def _put(queue: MemoryQueue, message: Message) -> None:
        await queue.put(message)

    def _later(self, delay: float, func: object, *args: object) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay

        async def deliver() -> None:
            # The loop may wake a timer up to its clock resolution early; never deliver early.
            while (remaining := due - loop.time()) > 0:  # noqa: ASYNC110 - a timer, not a poll
                await asyncio.sleep(remaining)
            await func(*args)  # type: ignore[operator]

        task = asyncio.create_task(deliver())
        self._delayed.add(task)
        task.add_done_callback(self._delayed.discard)

    # consuming

    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        broker = self._require_running()
        name = self._queue_name(subscription)
        if name not in broker.queues:
            await self.declare(subscription)
        loop = _ConsumerLoop(broker.queues[name], consumer, subscription.max_concurrency)
        self._consumers.append(loop)

    # inspection

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        broker = self._require_broker()
        found = broker.queues.get(queue)
        return found.snapshot()[:limit] if found else []

    async def pull(self, queue: str) -> Pulled | None:
        found = self._require_broker().queues.get(queue)
        message = found.take_nowait() if found else None
        return None if found is None or message is None else _MemoryPulled(found, message)

    async def purge(self, queue: str) -> int:
        found = self._require_broker().queues.get(queue)
        return found.purge() if found else 0

    def queue_names(self) -> Iterator[str]:
        """The names of the queues this broker holds."""
        return iter(list(self._require_broker().queues))

    def pending(self) -> int:
        """Messages waiting, unacknowledged or delayed, in all queues of this broker."""
        broker = self._require_broker()
        queued = sum(
            len(q) + q.unacked for q in broker.queues.values() if not q.name.endswith(".dlq")
        )
        return queued + len(self._delayed)
