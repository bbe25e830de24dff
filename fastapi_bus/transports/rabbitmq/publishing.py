"""What publishing on RabbitMQ waits for: confirms, returns, and a channel that comes back."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import aio_pika.abc

from fastapi_bus.transports.rabbitmq.connection import OPERATION_TIMEOUT
from fastapi_bus.transports.rabbitmq.failover import quiet_attempts

__all__ = ["PublishChannel", "Returned", "is_cancelled", "wait_for_channel"]


class Returned(Exception):
    """RabbitMQ returned a mandatory message: no queue matched its routing key."""


def is_cancelled(task: asyncio.Task[Any] | None) -> bool:
    """Whether someone asked to cancel ``task``, as opposed to aiormq cancelling a future of ours
    because its channel went away. Without ``Task.cancelling`` (Python 3.10), assume yes."""
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


async def wait_for_channel(
    publisher: aio_pika.abc.AbstractRobustChannel, stopping: asyncio.Event, deadline: float
) -> None:
    """Until the channel is restored, ``stopping`` is set or ``deadline`` passes."""
    waits = [
        asyncio.ensure_future(publisher.ready()),
        asyncio.ensure_future(stopping.wait()),
    ]
    try:
        timeout = max(deadline - asyncio.get_running_loop().time(), 0)
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


class PublishChannel:
    """The transport's publishing channel (with confirms; returned messages raise).

    A publish that RabbitMQ nacks is sent again on a new channel (:meth:`renew`): when a node
    dies, RabbitMQ 3.10 nacks publishes to a quorum queue until it elected a new leader, and
    keeps nacking on a channel that published meanwhile, while a new channel works.
    """

    def __init__(self) -> None:
        self.channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._renewing = asyncio.Lock()

    async def open(
        self, connection: aio_pika.abc.AbstractRobustConnection
    ) -> aio_pika.abc.AbstractRobustChannel:
        channel = connection.channel(publisher_confirms=True, on_return_raises=True)
        with quiet_attempts():  # its close callback's complaint when the connection drops
            await asyncio.wait_for(channel.initialize(), OPERATION_TIMEOUT)
        self.channel = channel
        self._renewing = asyncio.Lock()  # of this event loop
        return channel

    def clear(self) -> None:
        self.channel = None

    async def renew(
        self,
        stale: aio_pika.abc.AbstractRobustChannel,
        connection: aio_pika.abc.AbstractRobustConnection,
    ) -> None:
        """Replace the channel ``stale`` by a new one, once however many publishes ask. If the
        connection is down, keep ``stale``: the connection restores it when it is back."""
        async with self._renewing:
            if self.channel is not stale:
                return
            with contextlib.suppress(Exception):
                await self.open(connection)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stale.close(), OPERATION_TIMEOUT)
