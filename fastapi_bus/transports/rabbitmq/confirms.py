"""Publishing one message until RabbitMQ confirms it, through whatever happens meanwhile.

A publish waits while the broker blocks publishers, sends the message on the publishing channel
and waits for the broker's confirm. If the channel or the connection goes away, it waits for
aio-pika to restore them and sends again; a nack (a quorum queue electing its leader) is sent
again on a new channel. All of it within ``publish_timeout``: then it raises, saying whether the
message may have been stored. A message may so be stored twice, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import aio_pika.abc
import aio_pika.exceptions
import aiormq
import aiormq.exceptions

from fastapi_bus.core.exceptions import TransportClosedError, TransportError
from fastapi_bus.core.logs import message_extra
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.rabbitmq.blocking import is_blocked, unconfirmed, wait_unblocked
from fastapi_bus.transports.rabbitmq.mapping import encode
from fastapi_bus.transports.rabbitmq.publishing import (
    PublishChannel,
    Returned,
    is_cancelled,
    wait_for_channel,
)

__all__ = ["ConfirmedPublisher"]

logger = logging.getLogger("fastapi_bus.rabbitmq")


async def _publish(
    publisher: aio_pika.abc.AbstractRobustChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: aiormq.spec.Basic.Properties,
    timeout: float,
) -> None:
    """Send one mandatory message on ``publisher`` (a channel with confirms) and wait for the
    broker's confirm. This is what ``aio_pika.Exchange.publish`` does, minus building a message
    object per publish, and with ``wait=False``: the frames go to the connection's writer
    without holding the channel's lock until they are written (so that publishes in flight
    together go out in one write), while the confirm is awaited all the same."""
    if publisher.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{publisher!r} closed")
    # aiormq's channel (its abstract base does not declare ``wait``).
    channel = cast(aiormq.Channel, await publisher.get_underlay_channel())
    await channel.basic_publish(
        body,
        exchange=exchange,
        routing_key=routing_key,
        properties=properties,
        mandatory=True,
        timeout=timeout,
        wait=False,
    )


class ConfirmedPublisher:
    """Publishes on one transport's publishing channel; see the module docstring.

    Args:
        channel: the transport's publishing channel.
        timeout: ``publish_timeout``, in seconds.
        url: the broker URL without credentials, for errors.
        scrub: removes the password from a text.
        connection: the transport's connection (``None`` while it has none).
        closing: whether the transport is closing (a publish then stops waiting).
        stopping: set when the transport closes (wakes a publish that waits for the channel).
        exchange_lost: declares exchange ``name`` again after someone deleted it.
    """

    def __init__(
        self,
        channel: PublishChannel,
        *,
        timeout: float,
        url: str,
        scrub: Callable[[str], str],
        connection: Callable[[], aio_pika.abc.AbstractRobustConnection],
        closing: Callable[[], bool],
        stopping: Callable[[], asyncio.Event],
        exchange_lost: Callable[[str], Awaitable[None]],
    ) -> None:
        self._channel = channel
        #: ``publish_timeout``, in seconds.
        self.timeout = timeout
        self._url = url
        self._scrub = scrub
        self._connection = connection
        self._closing = closing
        self._stopping = stopping
        self._exchange_lost = exchange_lost

    def _publisher(self) -> aio_pika.abc.AbstractRobustChannel:
        self._connection()  # raises once the transport is closed
        assert self._channel.channel is not None
        return self._channel.channel

    async def publish(self, exchange_name: str, routing_key: str, message: Message) -> None:
        """Publish ``message``; returns once RabbitMQ confirmed it. Raises ``Returned`` if no
        queue took it, ``TransportError`` if it could not be confirmed in time."""
        properties = encode(message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pause = 0.05
        problem = "no answer"
        sent = False
        while True:
            publisher = self._publisher()
            connection = self._connection()
            if is_blocked(connection):
                await wait_unblocked(connection, deadline)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise unconfirmed(connection, self._url, message.id, self.timeout, problem, sent)
            sent = True
            try:
                await _publish(
                    publisher, exchange_name, routing_key, message.body, properties, remaining
                )
                return
            except aio_pika.exceptions.PublishError:
                raise Returned() from None
            except aio_pika.exceptions.DeliveryError as exc:
                # Not stored (a quorum queue electing a leader): again, on a new channel.
                problem = f"refused with basic.nack: {self._scrub(str(exc))}"
                await self._channel.renew(publisher, connection)
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
                pause = min(pause * 2, 1.0)
                continue
            except asyncio.TimeoutError:
                problem = "timed out"
                continue
            except asyncio.CancelledError:
                if self._closing() or is_cancelled(asyncio.current_task()):
                    raise
                # aiormq cancels pending confirms when their channel closes.
                problem = "the channel closed before the confirm"
            except aiormq.exceptions.ChannelAccessRefused as exc:
                raise TransportError(
                    f"RabbitMQ refused message {message.id}: {self._scrub(str(exc))}"
                ) from None
            except aio_pika.exceptions.ChannelNotFoundEntity as exc:
                # Someone deleted an exchange we publish to; declare it again and retry.
                problem = self._scrub(str(exc))
                await self._exchange_lost(exchange_name)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                # RuntimeError covers aio-pika's ChannelInvalidStateError: reconnecting.
                problem = self._scrub(str(exc) or type(exc).__name__)
            if self._closing():
                raise TransportClosedError(
                    f"the RabbitMQ transport closed before message {message.id} was confirmed"
                )
            logger.debug(
                "publishing %s failed (%s); waiting for the connection",
                message.id,
                problem,
                extra=message_extra(message),
            )
            await wait_for_channel(publisher, self._stopping(), deadline)
            # ready() can answer before aio-pika noticed the loss: do not spin.
            await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
            pause = min(pause * 2, 1.0)
