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
import collections
import contextlib
import logging
import threading
import uuid
import weakref
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

from fastapi_bus.exceptions import ConfigurationError, TransportClosedError, UnroutableError
from fastapi_bus.messages import Message, pattern_matches
from fastapi_bus.transports.base import (
    Pulled,
    Subscription,
    Transport,
    Unroutable,
    check_unroutable,
    dead_letter_queue,
    report_unroutable,
)
from fastapi_bus.types import Consumer

__all__ = ["MemoryTransport"]

logger = logging.getLogger("fastapi_bus.memory")


def _resolve(waiter: asyncio.Future[None]) -> None:
    """Wake ``waiter``, which may belong to another thread's event loop."""
    loop = waiter.get_loop()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        if not waiter.done():
            waiter.set_result(None)
        return
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_set_if_pending, waiter)


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Queue:
    """A FIFO of messages with a bound on publishing (requeues always fit, so none is lost).

    Safe to share between event loops in different threads (several ``TestClient`` apps on
    one named broker): state changes under a lock, and waiters are woken on their own loop.
    Every waiter is woken on a change and checks again, so no wake-up can be lost.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self.patterns: set[str] = set()
        self._lock = threading.Lock()
        self._items: collections.deque[Message] = collections.deque()
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []
        #: Messages handed to consumers and not yet acknowledged.
        self.unacked = 0

    def __len__(self) -> int:
        return len(self._items)

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self._items)

    @staticmethod
    def _take(waiters: list[asyncio.Future[None]]) -> list[asyncio.Future[None]]:
        taken = waiters[:]
        waiters.clear()
        return taken

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            _resolve(waiter)

    async def _wait(
        self, waiter: asyncio.Future[None], waiters: list[asyncio.Future[None]]
    ) -> None:
        try:
            await waiter
        finally:
            with self._lock, contextlib.suppress(ValueError):
                waiters.remove(waiter)

    async def put(self, message: Message) -> None:
        while True:
            with self._lock:
                if not self.maxsize or len(self._items) < self.maxsize:
                    self._items.append(message)
                    getters = self._take(self._getters)
                    break
                waiter = asyncio.get_running_loop().create_future()
                self._putters.append(waiter)
            await self._wait(waiter, self._putters)
        self._wake(getters)

    async def get(self) -> Message:
        while True:
            with self._lock:
                if self._items:
                    message = self._items.popleft()
                    self.unacked += 1
                    putters = self._take(self._putters)
                    break
                waiter = asyncio.get_running_loop().create_future()
                self._getters.append(waiter)
            await self._wait(waiter, self._getters)
        self._wake(putters)
        return message

    def ack(self) -> None:
        with self._lock:
            self.unacked -= 1

    def take_nowait(self) -> Message | None:
        with self._lock:
            if not self._items:
                return None
            self.unacked += 1
            message = self._items.popleft()
            putters = self._take(self._putters)
        self._wake(putters)
        return message

    def purge(self) -> int:
        with self._lock:
            count = len(self._items)
            self._items.clear()
            putters = self._take(self._putters)
        self._wake(putters)
        return count

    def requeue(self, message: Message) -> None:
        """Give an unacknowledged message back, at the head of the queue."""
        with self._lock:
            self.unacked -= 1
            self._items.appendleft(message)
            getters = self._take(self._getters)
        self._wake(getters)


class _Broker:
    """Queues and bindings, shared by the transports that use one broker name."""

    def __init__(self, max_queue_size: int) -> None:
        self.max_queue_size = max_queue_size
        self.queues: dict[str, _Queue] = {}

    def queue(self, name: str) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name, self.max_queue_size)
        return queue

    def route(self, name: str) -> list[_Queue]:
        return [
            queue
            for queue in self.queues.values()
            if any(pattern_matches(pattern, name) for pattern in queue.patterns)
        ]


class _MemoryPulled(Pulled):
    def __init__(self, queue: _Queue, message: Message) -> None:
        super().__init__(message)
        self._queue = queue

    async def ack(self) -> None:
        self._queue.ack()

    async def release(self) -> None:
        self._queue.requeue(self.message.replace(redelivered=True))


_shared_brokers: weakref.WeakValueDictionary[str, _Broker] = weakref.WeakValueDictionary()


class _ConsumerLoop:
    """Workers that take messages from one queue and hand them to one consumer."""

    def __init__(self, queue: _Queue, consumer: Consumer, workers: int) -> None:
        self.queue = queue
        self.consumer = consumer
        self.stopping = False
        self.busy: set[asyncio.Task[None]] = set()
        self.tasks = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self.stopping:
            message = await self.queue.get()
            # From here on the message is ours until it is acknowledged or returned.
            self.busy.add(task)
            try:
                await self.consumer(message)
            except asyncio.CancelledError:
                self.queue.requeue(message.replace(redelivered=True))
                raise
            except Exception:
                logger.exception("consumer of %r failed; the message goes back", self.queue.name)
                self.queue.requeue(message.replace(redelivered=True))
                # Yield, so that a message that always fails cannot starve the event loop.
                await asyncio.sleep(0)
            else:
                self.queue.ack()
            finally:
                self.busy.discard(task)

    async def stop(self, grace: float) -> None:
        self.stopping = True
        for task in self.tasks:
            if task not in self.busy:
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
        max_queue_size: how many messages a queue holds before publishers wait.
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
        self._broker: _Broker | None = None
        self._consumers: list[_ConsumerLoop] = []
        self._delayed: set[asyncio.Task[None]] = set()
        self._own_queues: list[str] = []
        self._process_id = uuid.uuid4().hex[:12]
        self._running = False

    @property
    def url(self) -> str:
        return self._url

    # lifecycle

    async def start(self) -> None:
        if self._broker is None:
            if self._name:
                broker = _shared_brokers.get(self._name)
                if broker is None:
                    broker = _Broker(self._max_queue_size)
                    _shared_brokers[self._name] = broker
                self._broker = broker
            else:
                self._broker = _Broker(self._max_queue_size)
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
            broker.queues.pop(name, None)
        self._own_queues.clear()

    def _require_broker(self) -> _Broker:
        if self._broker is None:
            raise TransportClosedError("the memory transport is not started")
        return self._broker

    def _require_running(self) -> _Broker:
        if not self._running:
            raise TransportClosedError("the memory transport is not running")
        return self._require_broker()

    # topology

    def _queue_name(self, subscription: Subscription) -> str:
        if subscription.broadcast:
            return f"{subscription.queue}.{self._process_id}"
        return subscription.queue

    async def declare(self, subscription: Subscription) -> None:
        broker = self._require_running()
        name = self._queue_name(subscription)
        queue = broker.queue(name)
        queue.patterns.update(subscription.patterns)
        if subscription.broadcast and name not in self._own_queues:
            self._own_queues.append(name)
        broker.queue(dead_letter_queue(subscription.queue))

    # publishing

    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        broker = self._require_running()
        if delay:
            self._later(delay, self._route, broker, message)
            return
        await self._route(broker, message)

    async def _route(self, broker: _Broker, message: Message) -> None:
        queues = broker.route(message.name)
        if not queues:
            report_unroutable(self._unroutable, message, logger)
        for queue in queues:
            await queue.put(message)

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
    async def _put(queue: _Queue, message: Message) -> None:
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
