"""The queues of the in-process broker: bounded, with waiting publishers and consumers that may
live on other threads' event loops (``TestClient`` runs the app on a thread of its own)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Iterable

from fastapi_bus.core.messages import Message, MessageState, message_from_state, message_state
from fastapi_bus.core.names import pattern_matches

__all__ = ["MemoryBroker", "MemoryQueue"]


def _resolve(waiter: asyncio.Future[None]) -> bool:
    """Wake ``waiter``, which may belong to another thread's event loop; False if that loop
    is closed (nobody will see the wake-up)."""
    loop = waiter.get_loop()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        if not waiter.done():
            waiter.set_result(None)
        return True
    try:
        loop.call_soon_threadsafe(_set_if_pending, waiter)
    except RuntimeError:  # that loop is closed: nobody waits there any more
        return False
    return True


def _copy(state: MessageState) -> MessageState:
    """A state of its own (a message rebuilt from a state takes its dict over)."""
    return state.copy() if isinstance(state, dict) else state


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class MemoryQueue:
    """A FIFO of messages with a bound on publishing (requeues always fit, so none is lost).

    Safe to share between event loops in different threads (several ``TestClient`` apps on
    one named broker): state changes under a lock, and waiters are woken on their own loop.
    Messages wait as plain data (:func:`~fastapi_bus.core.messages.message_state`), as they
    would in a broker: each consumer gets a :class:`Message` of its own, and a backlog of
    thousands gives the garbage collector nothing to sweep.

    A message added wakes one waiting consumer (waking them all made every message cost a
    task switch per idle consumer); a consumer woken that leaves without a message, or that
    sees more waiting, wakes the next, so no wake-up is lost. Waiting publishers are all woken
    on a change and check again.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self.patterns: set[str] = set()
        self._lock = threading.Lock()
        self._items: collections.deque[MessageState] = collections.deque()
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []
        #: Messages handed to consumers and not yet acknowledged.
        self.unacked = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting(self) -> int:
        """How many consumers wait for a message."""
        return len(self._getters)

    def snapshot(self) -> list[Message]:
        with self._lock:
            return [message_from_state(_copy(state)) for state in self._items]

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

    def _wake_getter(self) -> None:
        """Wake the consumer that has waited longest, if a message waits for one."""
        while True:
            with self._lock:
                if not self._items or not self._getters:
                    return
                getter = self._getters.pop(0)
            if _resolve(getter):
                return

    def offer(self, message: Message) -> bool:
        """Append ``message`` if there is room, without waiting; False if the queue is full."""
        # ``with self._lock``, written out (``acquire``, ``release``): about a tenth of a
        # microsecond less, for every message published.
        lock = self._lock
        lock.acquire()
        try:
            if self.maxsize and len(self._items) >= self.maxsize:
                return False
            self._items.append(message_state(message))
            if not self._getters:
                return True
            getter = self._getters.pop(0)
        finally:
            lock.release()
        if not _resolve(getter):
            self._wake_getter()
        return True

    async def put(self, message: Message) -> None:
        while not self.offer(message):
            with self._lock:
                if self.maxsize and len(self._items) >= self.maxsize:
                    waiter = asyncio.get_running_loop().create_future()
                    self._putters.append(waiter)
                else:
                    continue
            await self._wait(waiter, self._putters)

    async def get(self) -> Message:
        woken = False
        while True:
            with self._lock:
                if self._items:
                    message = message_from_state(self._items.popleft())
                    self.unacked += 1
                    putters = self._take(self._putters) if self._putters else []
                    more = woken and bool(self._items) and bool(self._getters)
                    break
                waiter = asyncio.get_running_loop().create_future()
                self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                with self._lock:
                    woken = waiter not in self._getters
                    if not woken:
                        self._getters.remove(waiter)
                if woken:  # pass on the wake-up this consumer will not use
                    self._wake_getter()
                raise
            woken = True
        self._wake(putters)
        if more:
            self._wake_getter()
        return message

    def ack(self) -> None:
        with self._lock:
            self.unacked -= 1

    def ack_and_take(self) -> Message | None:
        """:meth:`ack`, then :meth:`take_nowait`, in one step (a consumer's next message)."""
        # ``with self._lock``, written out as in :meth:`offer`: for every message consumed.
        lock = self._lock
        lock.acquire()
        try:
            if not self._items:
                self.unacked -= 1
                return None
            message = message_from_state(self._items.popleft())
            if not self._putters:
                return message
            putters = self._take(self._putters)
        finally:
            lock.release()
        self._wake(putters)
        return message

    def take_nowait(self) -> Message | None:
        """The next message, now unacknowledged, or ``None`` if the queue is empty."""
        with self._lock:
            if not self._items:
                return None
            self.unacked += 1
            message = message_from_state(self._items.popleft())
            if not self._putters:
                return message
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
            self._items.appendleft(message_state(message))
            if not self._getters:
                return
            getter = self._getters.pop(0)
        if not _resolve(getter):
            self._wake_getter()


class MemoryBroker:
    """Queues and bindings, shared by the transports that use one broker name."""

    def __init__(self, max_queue_size: int) -> None:
        self.max_queue_size = max_queue_size
        self.queues: dict[str, MemoryQueue] = {}
        #: The queues each event name routes to, worked out once per name until the
        #: queues or their bindings change.
        self.routes: dict[str, list[MemoryQueue]] = {}

    def queue(self, name: str) -> MemoryQueue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = MemoryQueue(name, self.max_queue_size)
            self.routes = {}
        return queue

    def bind(self, name: str, patterns: Iterable[str]) -> MemoryQueue:
        """The queue ``name`` (made if new), bound to ``patterns`` as well."""
        queue = self.queue(name)
        queue.patterns.update(patterns)
        self.routes = {}
        return queue

    def remove(self, name: str) -> None:
        if self.queues.pop(name, None) is not None:
            self.routes = {}

    def route(self, name: str) -> list[MemoryQueue]:
        # A change in another thread replaces the cache: one worked out meanwhile goes into
        # the old one, never into the new.
        routes = self.routes
        queues = routes.get(name)
        if queues is None:
            queues = [
                queue
                for queue in self.queues.values()
                if any(pattern_matches(pattern, name) for pattern in queue.patterns)
            ]
            routes[name] = queues
        return queues
