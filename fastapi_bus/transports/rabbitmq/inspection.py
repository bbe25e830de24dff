"""Reading queues without consuming them: browse, pull and purge (the dead-letter tools).

``browse`` takes messages with ``basic.get`` and returns them all with one ``nack``. ``pull``
keeps what it took unacknowledged on a shared channel until it is settled: if that channel
closes, RabbitMQ puts the messages back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from fastapi_bus.core.exceptions import TransportError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Pulled
from fastapi_bus.transports.rabbitmq.connection import OPERATION_TIMEOUT
from fastapi_bus.transports.rabbitmq.mapping import decode
from fastapi_bus.transports.rabbitmq.topology import QueueType

#: Browsing a quorum queue with up to this many more messages than asked for keeps its order.
_BROWSE_ROTATE_MAX = 10_000


class Inspector:
    """The transport's browse, pull and purge, and the channel pulled messages wait on.

    ``require_connection`` returns the connection or raises if the transport is not running;
    ``open_channel`` gives a temporary channel on it; ``queue_exists`` asks the broker on a
    channel of its own; ``url`` (redacted) and ``scrub`` are for the errors.
    """

    def __init__(
        self,
        *,
        queue_type: QueueType,
        url: str,
        scrub: Callable[[str], str],
        require_connection: Callable[[], aio_pika.abc.AbstractRobustConnection],
        open_channel: Callable[[], AbstractAsyncContextManager[aio_pika.abc.AbstractChannel]],
        queue_exists: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._queue_type = queue_type
        self._url = url
        self._scrub = scrub
        self._require_connection = require_connection
        self._open_channel = open_channel
        self._queue_exists = queue_exists
        self._pull_channel: aio_pika.abc.AbstractChannel | None = None
        self._pull_lock = asyncio.Lock()

    def reset(self) -> None:
        """Before a (re)start: asyncio primitives belong to the loop that first waits on them."""
        self._pull_lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the pull channel, which returns the messages pulled and not settled."""
        if self._pull_channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pull_channel.close(), OPERATION_TIMEOUT)
            self._pull_channel = None

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        self._require_connection()
        if limit <= 0:
            return []
        found: list[Message] = []
        try:
            async with self._open_channel() as channel:
                handle = await channel.get_queue(queue, ensure=False)
                last: aio_pika.abc.AbstractIncomingMessage | None = None
                for _ in range(limit + _BROWSE_ROTATE_MAX):
                    incoming = await handle.get(no_ack=False, fail=False, timeout=OPERATION_TIMEOUT)
                    if incoming is None:
                        break
                    last = incoming
                    if len(found) < limit:
                        found.append(decode(incoming))
                    if len(found) == limit and not self._must_rotate(incoming):
                        break
                if last is not None:
                    # One nack for all of them: they go back to the queue in their order.
                    await last.nack(multiple=True, requeue=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return []
        except asyncio.TimeoutError:
            raise TransportError(f"browsing {queue!r} on {self._url} timed out") from None
        except aio_pika.exceptions.AMQPError as exc:
            raise TransportError(f"cannot browse {queue!r}: {self._scrub(str(exc))}") from None
        return found

    async def pull(self, queue: str) -> Pulled | None:
        self._require_connection()
        # Messages pulled earlier wait on the shared channel: keep a missing queue from
        # closing it under them.
        if not await self._queue_exists(queue):
            return None
        async with self._pull_lock:
            try:
                channel = self._pull_channel
                if channel is None or channel.is_closed:
                    # Shared by all pulled messages, which stay unacknowledged on it until
                    # settled; plain, because a broker error on it must close only it.
                    channel = aio_pika.Channel(self._require_connection(), publisher_confirms=False)
                    await asyncio.wait_for(channel.initialize(), OPERATION_TIMEOUT)
                    self._pull_channel = channel
                handle = await channel.get_queue(queue, ensure=False)
                incoming = await handle.get(no_ack=False, fail=False, timeout=OPERATION_TIMEOUT)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return None
            except asyncio.TimeoutError:
                raise TransportError(f"pulling from {queue!r} on {self._url} timed out") from None
            except aio_pika.exceptions.AMQPError as exc:
                raise TransportError(
                    f"cannot pull from {queue!r}: {self._scrub(str(exc))}"
                ) from None
        return None if incoming is None else RabbitMQPulled(incoming, queue)

    async def purge(self, queue: str) -> int:
        self._require_connection()
        try:
            async with self._open_channel() as channel:
                handle = await channel.get_queue(queue, ensure=False)
                result = await asyncio.wait_for(handle.purge(), OPERATION_TIMEOUT)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        except asyncio.TimeoutError:
            raise TransportError(f"purging {queue!r} on {self._url} timed out") from None
        except aio_pika.exceptions.AMQPError as exc:
            raise TransportError(f"cannot purge {queue!r}: {self._scrub(str(exc))}") from None
        return int(result.message_count or 0)

    def _must_rotate(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> bool:
        """Whether to take the rest of the queue too, to keep its order.

        A classic queue puts returned messages back where they were; a quorum queue puts them
        at its tail. Taking every message before returning them all keeps a quorum queue in
        order, which is affordable up to a point."""
        remaining = incoming.message_count or 0
        return self._queue_type == "quorum" and 0 < remaining <= _BROWSE_ROTATE_MAX


class RabbitMQPulled(Pulled):
    """A pulled message, unacknowledged on the pull channel until it is settled."""

    def __init__(self, incoming: aio_pika.abc.AbstractIncomingMessage, queue: str) -> None:
        super().__init__(decode(incoming))
        self._incoming = incoming
        self._queue = queue

    async def ack(self) -> None:
        await self._settle(ack=True)

    async def release(self) -> None:
        await self._settle(ack=False)

    async def _settle(self, *, ack: bool) -> None:
        try:
            if ack:
                await self._incoming.ack()
            else:
                await self._incoming.nack(requeue=True)
        except Exception as exc:
            raise TransportError(
                f"message {self.message.id} of {self._queue!r} could not be settled ({exc}); "
                "it went back to its queue when its channel closed"
            ) from None
