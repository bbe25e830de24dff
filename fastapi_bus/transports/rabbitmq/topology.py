"""What the transport declares on the broker, and what it says when the broker disagrees.

The bus's topic exchange, and for each subscription its queue (bound once per pattern) and its
dead-letter queue. A name that already exists with other settings is a
:class:`~fastapi_bus.ConfigurationError` that quotes RabbitMQ and says how to fix it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.transports.base import Subscription, dead_letter_queue
from fastapi_bus.transports.rabbitmq.connection import OPERATION_TIMEOUT

QueueType = Literal["quorum", "classic"]

#: With ``auto_delete_topology``, every queue goes this long after it was last used.
TEST_QUEUE_EXPIRES_MS = 60_000


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """How one queue is declared."""

    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any]

    def describe(self) -> str:
        kind = self.arguments.get("x-queue-type", "classic")
        flags = [kind, "durable" if self.durable else "transient"]
        if self.exclusive:
            flags.append("exclusive")
        if self.auto_delete:
            flags.append("auto-delete")
        extra = {k: v for k, v in self.arguments.items() if k != "x-queue-type"}
        return ", ".join(flags) + (f", arguments {extra}" if extra else "")


@dataclasses.dataclass(frozen=True)
class Topology:
    """The names and settings of what one transport declares.

    ``test`` is ``auto_delete_topology``: transient queues that expire, auto-delete exchanges.
    ``process_id`` tells this transport's broadcast queues from other processes' ones.
    """

    exchange: str
    queue_type: QueueType
    test: bool
    process_id: str

    def consumer_queue(self, subscription: Subscription) -> str:
        """The queue this transport consumes for ``subscription``: its own for a broadcast."""
        if subscription.broadcast:
            return f"{subscription.queue}.{self.process_id}"
        return subscription.queue

    def type_arguments(self) -> dict[str, Any]:
        if self.test:
            return {"x-expires": TEST_QUEUE_EXPIRES_MS}
        return {"x-queue-type": self.queue_type}

    def dead_letter_spec(self, subscription: Subscription) -> QueueSpec:
        return QueueSpec(
            name=dead_letter_queue(subscription.queue),
            durable=not self.test,
            exclusive=False,
            auto_delete=False,
            arguments=self.type_arguments(),
        )

    def queue_spec(self, subscription: Subscription) -> QueueSpec:
        to_dead_letters = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue(subscription.queue),
        }
        if subscription.broadcast:
            return QueueSpec(
                name=self.consumer_queue(subscription),
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments={"x-queue-type": "classic", **to_dead_letters},
            )
        return QueueSpec(
            name=subscription.queue,
            durable=not self.test,
            exclusive=False,
            auto_delete=False,
            arguments={**self.type_arguments(), **to_dead_letters},
        )

    async def declare_exchange(self, channel: aio_pika.abc.AbstractChannel) -> None:
        try:
            await asyncio.wait_for(
                channel.declare_exchange(
                    self.exchange,
                    aio_pika.ExchangeType.TOPIC,
                    durable=not self.test,
                    auto_delete=self.test,
                ),
                OPERATION_TIMEOUT,
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            wanted = "a transient auto-delete" if self.test else "a durable"
            raise ConfigurationError(
                f"exchange {self.exchange!r} already exists with different settings. "
                f"RabbitMQ says: {_reply_text(exc)}. fastapi-bus needs {wanted} topic exchange: "
                "delete the existing one or choose another name with exchange=..."
            ) from None

    async def declare_subscription(
        self, channel: aio_pika.abc.AbstractChannel, subscription: Subscription
    ) -> tuple[str, str]:
        """Declare the exchange and the subscription's queues; returns the queues' names."""
        await self.declare_exchange(channel)
        dead_letters = self.dead_letter_spec(subscription)
        await declare_queue(channel, dead_letters)
        spec = self.queue_spec(subscription)
        queue = await declare_queue(channel, spec)
        for pattern in subscription.patterns:
            await asyncio.wait_for(queue.bind(self.exchange, pattern), OPERATION_TIMEOUT)
        return spec.name, dead_letters.name


async def declare_queue(
    channel: aio_pika.abc.AbstractChannel, spec: QueueSpec
) -> aio_pika.abc.AbstractQueue:
    """Declare the queue ``spec`` describes; a mismatch is a ConfigurationError."""
    try:
        return await asyncio.wait_for(
            channel.declare_queue(
                spec.name,
                durable=spec.durable,
                exclusive=spec.exclusive,
                auto_delete=spec.auto_delete,
                arguments=spec.arguments,
            ),
            OPERATION_TIMEOUT,
        )
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"queue {spec.name!r} already exists with different settings. RabbitMQ says: "
            f"{_reply_text(exc)}. fastapi-bus declares it as: {spec.describe()}. To fix it, "
            "either configure the transport to match the existing queue (queue_type=...), "
            "or move its messages elsewhere and delete it so that it is declared again."
        ) from None


def _reply_text(exc: BaseException) -> str:
    """The broker's explanation, as in ``PRECONDITION_FAILED - inequivalent arg ...``."""
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, str) and arg:
            return arg
    return str(exc)
