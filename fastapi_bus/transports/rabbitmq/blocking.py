"""Publishing while RabbitMQ blocks publishers.

When the broker runs short of memory or disk (a resource alarm), it sends ``connection.blocked``
to every publishing connection and stops reading from them until the alarm clears. A publish
sent then would sit in the socket's buffer with no confirm coming. Instead, a publish first
waits for the connection to be unblocked, within the publish deadline, and fails with an error
that says why if the alarm lasts longer. Consumers keep working meanwhile: acknowledgements
are what frees the broker's memory.

aiormq keeps the blocked state in a private event, read here; without it (another aiormq) every
connection is taken as unblocked and the publish deadline still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika.abc

from fastapi_bus.core.exceptions import TransportError

__all__ = ["BLOCKED_HINT", "is_blocked", "unconfirmed", "wait_unblocked"]

BLOCKED_HINT = (
    "RabbitMQ blocks publishers (connection.blocked: a memory or disk alarm on the broker); "
    "consumers keep draining the queues, and publishing resumes when the alarm clears"
)


def _amqp(connection: aio_pika.abc.AbstractConnection | None) -> Any:
    transport = getattr(connection, "transport", None)
    return getattr(transport, "connection", None)


def is_blocked(connection: aio_pika.abc.AbstractConnection | None) -> bool:
    """Whether the broker has blocked this (open) connection's publishers."""
    amqp = _amqp(connection)
    unblocked = getattr(amqp, "_Connection__connection_unblocked", None)
    if not isinstance(unblocked, asyncio.Event) or not amqp.connected.is_set():
        return False
    return not unblocked.is_set()


async def wait_unblocked(
    connection: aio_pika.abc.AbstractConnection | None, deadline: float
) -> bool:
    """Wait until the connection is not blocked or ``deadline`` (loop time) passes; returns
    whether it is unblocked."""
    if not is_blocked(connection):
        return True
    timeout = max(deadline - asyncio.get_running_loop().time(), 0)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_amqp(connection).ready(), timeout)
    return not is_blocked(connection)


def unconfirmed(
    connection: aio_pika.abc.AbstractConnection | None,
    url: str,
    message_id: str,
    timeout: float,
    problem: str,
    sent: bool,
) -> TransportError:
    """The error of a publish whose deadline passed: why, and whether the message may exist."""
    if is_blocked(connection):
        problem = BLOCKED_HINT
    fate = "it may or may not have been stored" if sent else "it was not sent"
    return TransportError(
        f"RabbitMQ at {url} did not confirm message {message_id} within {timeout:g}s "
        f"({problem}); {fate}"
    )
