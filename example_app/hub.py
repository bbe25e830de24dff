"""An in-process hub: fans events out to the browsers connected to this web process.

Each web process has one bus subscription per live topic (a ``broadcast=True`` handler), and
the handler hands every event to :meth:`Hub.publish`. Each connected client (a WebSocket or an
SSE stream) has a :class:`Subscriber`: a bounded queue that its own task empties into its
connection. The hub never waits for a client: a full queue drops its oldest item (or, with
``Overflow.DISCONNECT``, closes the client), so a slow or dead browser costs at most
``maxsize`` items of memory and never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterator
from typing import Any

Item = dict[str, Any]


class Overflow(enum.Enum):
    """What a full client queue does with a new item."""

    #: Drop the oldest item to make room (the client misses it; :attr:`Subscriber.dropped`).
    DROP_OLDEST = "drop_oldest"
    #: Close the client: it reconnects and starts afresh.
    DISCONNECT = "disconnect"


class Subscriber:
    """One client's queue of items on one topic."""

    def __init__(self, topic: str, maxsize: int, overflow: Overflow) -> None:
        self.topic = topic
        self.overflow = overflow
        self.dropped = 0
        self.closed = False
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize)
        #: The client's event loop (a server may run connections on more than one).
        self._loop = asyncio.get_running_loop()

    def qsize(self) -> int:
        return self._queue.qsize()

    def offer(self, item: Item) -> None:
        """Queue ``item`` without waiting, applying the overflow policy when full."""
        if _running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self._offer, item)
        else:
            self._offer(item)

    def _offer(self, item: Item) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.overflow is Overflow.DISCONNECT:
                self.close()
                return
            self._queue.get_nowait()
            self._queue.put_nowait(item)

    def close(self) -> None:
        """Wake the client's task with the end of its stream (``get`` returns ``None``)."""
        if _running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self.close)
            return
        if self.closed:
            return
        self.closed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def get(self) -> Item | None:
        """The next item, or ``None`` once closed."""
        return await self._queue.get()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Hub:
    """Topics of subscribers; :meth:`publish` hands an item to each of a topic's clients."""

    def __init__(self, maxsize: int = 100, overflow: Overflow = Overflow.DROP_OLDEST) -> None:
        if maxsize < 1:
            raise ValueError("a client queue holds at least one item")
        self.maxsize = maxsize
        self.overflow = overflow
        self._topics: dict[str, set[Subscriber]] = {}

    def subscribe(self, topic: str) -> Subscriber:
        subscriber = Subscriber(topic, self.maxsize, self.overflow)
        self._topics.setdefault(topic, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.close()
        clients = self._topics.get(subscriber.topic)
        if clients is not None:
            clients.discard(subscriber)
            if not clients:
                del self._topics[subscriber.topic]

    @contextlib.contextmanager
    def subscription(self, topic: str) -> Iterator[Subscriber]:
        subscriber = self.subscribe(topic)
        try:
            yield subscriber
        finally:
            self.unsubscribe(subscriber)

    def publish(self, topic: str, item: Item) -> int:
        """Give ``item`` to every client of ``topic``; returns how many. Never waits."""
        clients = list(self._topics.get(topic, ()))
        for client in clients:
            client.offer(item)
        return len(clients)

    def clients(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def close(self) -> None:
        """End every client's stream (at shutdown)."""
        for clients in list(self._topics.values()):
            for client in list(clients):
                self.unsubscribe(client)
