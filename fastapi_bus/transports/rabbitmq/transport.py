"""The RabbitMQ transport: its connection's lifecycle, publishing with confirms, consuming.

The design (topology, delays, guarantees) is explained in the package docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions

from fastapi_bus.core.exceptions import (
    ConfigurationError,
    TransportClosedError,
    TransportError,
    UnroutableError,
)
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import (
    AsyncAPIPart,
    Consumer,
    Pulled,
    Subscription,
    Transport,
    Unroutable,
    check_unroutable,
    report_unroutable,
)
from fastapi_bus.transports.rabbitmq.addresses import parse_addresses
from fastapi_bus.transports.rabbitmq.confirms import ConfirmedPublisher
from fastapi_bus.transports.rabbitmq.connection import (
    OPERATION_TIMEOUT,
    connect,
    connect_options,
    temporary_channel,
)
from fastapi_bus.transports.rabbitmq.consumer import QueueConsumer, start_consumer
from fastapi_bus.transports.rabbitmq.delays import DelayQueues
from fastapi_bus.transports.rabbitmq.description import describe
from fastapi_bus.transports.rabbitmq.inspection import Inspector
from fastapi_bus.transports.rabbitmq.publishing import (
    PublishChannel,
    Returned,
)
from fastapi_bus.transports.rabbitmq.topology import QueueType, Topology

logger = logging.getLogger("fastapi_bus.rabbitmq")


class RabbitMQTransport(Transport):
    """The RabbitMQ transport. See the package docstring for the topology and guarantees.

    Args:
        url: ``amqp://user:password@host:5672/vhost`` or ``amqps://...`` for TLS. Query
            parameters such as ``?heartbeat=30`` go to aio-pika (``?connect_timeout=`` is
            ours). Several nodes: ``amqp://user:password@host1:5672,host2:5672/vhost`` or a
            list of URLs, tried in turn when connecting and reconnecting.
        exchange: name of the bus's topic exchange; services that talk to each other use the
            same one.
        queue_type: ``"quorum"`` (replicated, the default) or ``"classic"`` for the queues of
            subscriptions, their dead-letter queues and delay queues.
        connect_timeout: how many seconds ``start()`` keeps retrying an unreachable broker
            (default: the URL's ``?connect_timeout=``, else 30).
        publish_timeout: how many seconds a publish may wait for the broker's confirm,
            including waiting for a reconnection or for the broker to unblock publishers (a
            memory or disk alarm), before it raises ``TransportError`` saying which.
        unroutable: what to do with an event no queue is bound to: ``"log"`` (a warning, the
            default), ``"raise"`` (``UnroutableError``) or ``"ignore"``.
        ssl_context: the ``ssl.SSLContext`` for ``amqps://`` (CA, client certificate).
        reconnect_interval: seconds between reconnection attempts after the connection drops.
        auto_delete_topology: for tests: transient classic queues that expire a minute after
            they were last used, and auto-delete exchanges, so nothing is left behind.
        consumer_timeout: seconds a delivery may stay unacknowledged before RabbitMQ closes the
            channel (its ``consumer_timeout``, 30 minutes by default). Sent with each consumer
            as ``x-consumer-timeout`` (RabbitMQ 3.12+ applies it; older brokers use their
            configured one, so keep both equal), and the bus keeps every handler's timeout
            within it. ``None``: the broker has no such limit.
    """

    protocol = "amqp"

    def __init__(
        self,
        url: str | Sequence[str] = "amqp://guest:guest@localhost:5672/",
        *,
        exchange: str = "fastapi_bus",
        queue_type: QueueType = "quorum",
        connect_timeout: float | None = None,
        publish_timeout: float = 30.0,
        unroutable: Unroutable = "log",
        ssl_context: ssl.SSLContext | None = None,
        reconnect_interval: float = 1.0,
        auto_delete_topology: bool = False,
        consumer_timeout: float | None = 1800.0,
    ) -> None:
        addresses = parse_addresses(url)
        if queue_type not in ("quorum", "classic"):
            raise ConfigurationError(
                f"queue_type must be 'quorum' or 'classic', not {queue_type!r}"
            )
        if not exchange:
            raise ConfigurationError(
                "exchange needs a name (the default exchange cannot route topics)"
            )
        if ssl_context is not None and not addresses.urls[0].startswith("amqps:"):
            raise ConfigurationError("ssl_context needs an amqps:// URL")
        if consumer_timeout is not None and not consumer_timeout > 0:
            raise ConfigurationError(f"consumer_timeout must be positive, got {consumer_timeout!r}")
        self._addresses = addresses
        self._passwords = sorted(addresses.passwords, key=len, reverse=True)
        self._topology = Topology(
            exchange=exchange,
            queue_type="classic" if auto_delete_topology else queue_type,
            test=auto_delete_topology,
            process_id=uuid.uuid4().hex[:12],
        )
        #: Seconds ``start()`` keeps retrying an unreachable broker (settable until then).
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else addresses.connect_timeout or 30.0
        )
        #: The broker's consumer timeout in seconds; the bus fits handler timeouts within it.
        self.consumer_timeout = consumer_timeout
        self._unroutable = check_unroutable(unroutable)
        self._ssl_context = ssl_context
        self._reconnect_interval = reconnect_interval

        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publishing = PublishChannel()
        self._confirmed = ConfirmedPublisher(
            self._publishing,
            timeout=publish_timeout,
            url=self.url,
            scrub=self._scrub,
            connection=self._require_connection,
            closing=lambda: self._closing is not None or not self._running,
            stopping=lambda: self._stopping,
            exchange_lost=self._exchange_lost,
        )
        self._consumers: list[QueueConsumer] = []
        self._declared: dict[str, Subscription] = {}
        self._known_queues: set[str] = set()
        self._delays = DelayQueues(self._topology, self._temporary_channel, self._scrub)
        self._inspector = Inspector(
            queue_type=self._topology.queue_type,
            url=self.url,
            scrub=self._scrub,
            require_connection=self._require_connection,
            open_channel=self._temporary_channel,
            queue_exists=self._queue_exists,
        )
        self._background: set[asyncio.Task[None]] = set()
        self._running = False
        self._stopping = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self._addresses.display

    @property
    def exchange(self) -> str:
        """The name of the bus's topic exchange."""
        return self._topology.exchange

    def asyncapi(
        self, part: AsyncAPIPart, *, name: str = "", queue: str = "", broadcast: bool = False
    ) -> dict[str, Any]:
        return describe(
            part, url=self.url, exchange=self.exchange, queue_type=self._topology.queue_type,
            name=name, queue=queue, broadcast=broadcast,
        )  # fmt: skip

    def _scrub(self, text: str) -> str:
        """``text`` without the password, for errors that quote the broker or aio-pika."""
        for password in self._passwords:
            text = text.replace(password, "***")
        return text

    # lifecycle

    async def start(self) -> None:
        if self._running:
            return
        if self._closing is not None:
            await self._closing
        self._closing = None
        # Fresh ones: asyncio primitives belong to the loop that first waits on them, and a
        # transport may be started again in another loop (a second TestClient).
        self._stopping = asyncio.Event()
        self._delays.reset()
        self._inspector.reset()
        connection = await connect(
            self._addresses,
            connect_timeout=self.connect_timeout,
            options=connect_options(
                self._addresses.urls[0],
                reconnect_interval=self._reconnect_interval,
                ssl_context=self._ssl_context,
            ),
            scrub=self._scrub,
        )
        try:
            await self._topology.declare_exchange(await self._publishing.open(connection))
        except BaseException:
            self._publishing.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), OPERATION_TIMEOUT)
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection = connection
        self._running = True

    async def close(self, grace: float = 10.0) -> None:
        if self._closing is None:
            if not self._running:
                return
            self._running = False
            self._stopping.set()
            for consumer in self._consumers:
                consumer.halt()
            self._closing = asyncio.create_task(self._shutdown(grace))
        await asyncio.shield(self._closing)

    @property
    def connected(self) -> bool:
        connection = self._connection
        return self._running and connection is not None and connection.connected.is_set()

    async def stop_consuming(self, grace: float = 10.0) -> None:
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.halt()
        await asyncio.gather(*(consumer.stop(grace) for consumer in consumers))

    async def _shutdown(self, grace: float) -> None:
        await self.stop_consuming(grace)
        await self._inspector.close()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        connection, self._connection = self._connection, None
        self._publishing.clear()
        self._declared.clear()
        self._known_queues.clear()
        self._delays.forget()
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), OPERATION_TIMEOUT)
            except Exception as exc:
                logger.info("closing the connection to %s failed: %s", self.url, exc)

    def _require_connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if not self._running or self._connection is None:
            raise TransportClosedError(f"the RabbitMQ transport for {self.url} is not running")
        return self._connection

    def _require_publisher(self) -> aio_pika.abc.AbstractRobustChannel:
        self._require_connection()
        assert self._publishing.channel is not None
        return self._publishing.channel

    def _temporary_channel(self) -> AbstractAsyncContextManager[aio_pika.abc.AbstractChannel]:
        """A plain channel for operations that may fail: a broker error closes only it."""
        return temporary_channel(self._require_connection(), url=self.url, scrub=self._scrub)

    async def _on_reconnect(self, *_: object) -> None:
        # Durable topology survives a restart; transient queues and the per-level delay cache do
        # not, so forget the cache and declare the subscriptions again, off the reconnect path.
        self._delays.forget()
        self._known_queues.clear()
        subscriptions = list(self._declared.values())
        if subscriptions:
            self._spawn(self._redeclare(subscriptions))

    async def _redeclare(self, subscriptions: list[Subscription]) -> None:
        for subscription in subscriptions:
            try:
                await self.declare(subscription)
            except Exception as exc:
                logger.warning(
                    "re-declaring %r after a reconnect failed: %s", subscription.queue, exc
                )

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # topology

    def consumer_queue(self, subscription: Subscription) -> str:
        """The queue this transport consumes for ``subscription``: its own for a broadcast."""
        return self._topology.consumer_queue(subscription)

    async def declare(self, subscription: Subscription) -> None:
        self._require_connection()
        try:
            async with self._temporary_channel() as channel:
                names = await self._topology.declare_subscription(channel, subscription)
                self._known_queues.update(names)
        except (ConfigurationError, TransportError):
            raise
        except asyncio.TimeoutError:
            raise TransportError(
                f"declaring {subscription.queue!r} on {self.url} timed out"
            ) from None
        except aio_pika.exceptions.AMQPError as exc:
            raise TransportError(
                f"cannot declare {subscription.queue!r}: {self._scrub(str(exc))}"
            ) from None
        self._declared[self.consumer_queue(subscription)] = subscription

    async def _queue_exists(self, queue: str) -> bool:
        """Whether ``queue`` exists, asked on a channel of its own (a 404 closes the channel)."""
        if queue in self._known_queues:
            return True
        try:
            async with self._temporary_channel() as channel:
                await asyncio.wait_for(
                    channel.declare_queue(queue, passive=True), OPERATION_TIMEOUT
                )
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            pass  # another process's exclusive queue: it exists
        except asyncio.TimeoutError:
            raise TransportError(f"checking queue {queue!r} on {self.url} timed out") from None
        self._known_queues.add(queue)
        return True

    # publishing

    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        self._require_publisher()
        if delay is not None and delay > 0:
            exchange = await self._delays.exchange(delay, direct=False)
            await self._confirmed.publish(exchange, message.name, message)
            return
        try:
            await self._confirmed.publish(self._topology.exchange, message.name, message)
        except Returned:
            report_unroutable(self._unroutable, message, logger)

    async def send(self, queue: str, message: Message, *, delay: float | None = None) -> None:
        self._require_publisher()
        if delay is not None and delay > 0:
            # RabbitMQ silently drops a dead-lettered message that has nowhere to go, so check
            # that the queue is there before the message disappears into a delay queue.
            if not await self._queue_exists(queue):
                raise UnroutableError(f"no queue named {queue!r} exists; nothing was sent")
            exchange = await self._delays.exchange(delay, direct=True)
            await self._confirmed.publish(exchange, queue, message)
            return
        try:
            await self._confirmed.publish("", queue, message)
        except Returned:
            raise UnroutableError(
                f"no queue named {queue!r} exists; message {message.id} was not sent"
            ) from None

    async def _exchange_lost(self, name: str) -> None:
        self._delays.forget()
        with contextlib.suppress(Exception):
            async with self._temporary_channel() as channel:
                await self._topology.declare_exchange(channel)
            if self._delays.knows(name):
                await self._delays.ensure(name)

    # consuming

    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        connection = self._require_connection()
        await self.declare(subscription)
        runner = await start_consumer(
            connection,
            self._topology,
            subscription,
            consumer,
            url=self.url,
            scrub=self._scrub,
            consumer_timeout=self.consumer_timeout,
        )
        self._consumers.append(runner)

    # inspection

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        return await self._inspector.browse(queue, limit)

    async def pull(self, queue: str) -> Pulled | None:
        return await self._inspector.pull(queue)

    async def purge(self, queue: str) -> int:
        return await self._inspector.purge(queue)
