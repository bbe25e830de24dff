"""What publishing on RabbitMQ waits for: confirms, returns, and a channel that comes back."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika.abc

__all__ = ["Returned", "is_cancelled", "wait_for_channel"]


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
