"""The RabbitMQ transport: its connection's lifecycle, publishing with confirms, consuming.

The design (topology, delays, guarantees) is explained in the package docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote, urlsplit

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
from fastapi_bus.core.logs import message_extra
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import (
    AsyncAPIPart,
    Consumer,
    Pulled,
    Subscription,
    Transport,
    Unroutable,
    check_unroutable,
    redact_url,
    report_unroutable,
)
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
from fastapi_bus.transports.rabbitmq.mapping import encode
from fastapi_bus.transports.rabbitmq.publishing import Returned, is_cancelled, wait_for_channel
from fastapi_bus.transports.rabbitmq.topology import QueueType, Topology

logger = logging.getLogger("fastapi_bus.rabbitmq")


class RabbitMQTransport(Transport):
    """The RabbitMQ transport. See the package docstring for the topology and guarantees.

    Args:
        url: ``amqp://user:password@host:5672/vhost`` or ``amqps://...`` for TLS. Query
            parameters such as ``?heartbeat=30`` are passed on to aio-pika.
        exchange: name of the bus's topic exchange; services that talk to each other use the
            same one.
        queue_type: ``"quorum"`` (replicated, the default) or ``"classic"`` for the queues of
            subscriptions, their dead-letter queues and delay queues.
        connect_timeout: how many seconds ``start()`` keeps retrying an unreachable broker.
        publish_timeout: how many seconds a publish may wait for the broker's confirm,
            including waiting for a reconnection, before it raises ``TransportError``.
        unroutable: what to do with an event no queue is bound to: ``"log"`` (a warning, the
            default), ``"raise"`` (``UnroutableError``) or ``"ignore"``.
        ssl_context: the ``ssl.SSLContext`` for ``amqps://`` (CA, client certificate).
        reconnect_interval: seconds between reconnection attempts after the connection drops.
        auto_delete_topology: for tests: transient classic queues that expire a minute after
            they were last used, and auto-delete exchanges, so nothing is left behind.
    """

    protocol = "amqp"

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        exchange: str = "fastapi_bus",
        queue_type: QueueType = "quorum",
        connect_timeout: float = 30.0,
        publish_timeout: float = 30.0,
        unroutable: Unroutable = "log",
        ssl_context: ssl.SSLContext | None = None,
        reconnect_interval: float = 1.0,
        auto_delete_topology: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigurationError(
                f"RabbitMQTransport needs an amqp:// or amqps:// URL, got {redact_url(url)!r}"
            )
        if queue_type not in ("quorum", "classic"):
            raise ConfigurationError(
                f"queue_type must be 'quorum' or 'classic', not {queue_type!r}"
            )
        if not exchange:
            raise ConfigurationError(
                "exchange needs a name (the default exchange cannot route topics)"
            )
        if ssl_context is not None and parts.scheme != "amqps":
            raise ConfigurationError("ssl_context needs an amqps:// URL")
        self._url = url
        self._password = unquote(parts.password) if parts.password else None
        self._topology = Topology(
            exchange=exchange,
            queue_type="classic" if auto_delete_topology else queue_type,
            test=auto_delete_topology,
            process_id=uuid.uuid4().hex[:12],
        )
        #: Seconds ``start()`` keeps retrying an unreachable broker (settable until then).
        self.connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._unroutable = check_unroutable(unroutable)
        self._ssl_context = ssl_context
        self._reconnect_interval = reconnect_interval

        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractRobustChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
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
        return redact_url(self._url)

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
        if self._password:
            text = text.replace(self._password, "***")
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
            self._url,
            connect_timeout=self.connect_timeout,
            options=connect_options(
                self._url,
                reconnect_interval=self._reconnect_interval,
                ssl_context=self._ssl_context,
            ),
            scrub=self._scrub,
        )
        try:
            publisher = connection.channel(publisher_confirms=True, on_return_raises=True)
            await asyncio.wait_for(publisher.initialize(), OPERATION_TIMEOUT)
            await self._topology.declare_exchange(publisher)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), OPERATION_TIMEOUT)
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection = connection
        self._publisher = publisher
        self._exchanges = {"": publisher.default_exchange}
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
        connection, self._connection, self._publisher = self._connection, None, None
        self._exchanges = {}
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
        assert self._publisher is not None
        return self._publisher

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
            await self._publish(exchange, message.name, message)
            return
        try:
            await self._publish(self._topology.exchange, message.name, message)
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
            await self._publish(exchange, queue, message)
            return
        try:
            await self._publish("", queue, message)
        except Returned:
            raise UnroutableError(
                f"no queue named {queue!r} exists; message {message.id} was not sent"
            ) from None

    def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            publisher = self._require_publisher()
            # No round trip: the name is declared elsewhere, this is only a handle.
            exchange = aio_pika.Exchange(publisher, name, durable=False, passive=True)
            self._exchanges[name] = exchange
        return exchange

    async def _publish(self, exchange_name: str, routing_key: str, message: Message) -> None:
        amqp_message = encode(message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        pause = 0.05
        problem = "no answer"
        while True:
            publisher = self._require_publisher()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(
                    f"RabbitMQ at {self.url} did not confirm message {message.id} within "
                    f"{self._publish_timeout:g}s ({problem}); it may or may not have been stored"
                )
            try:
                await self._exchange(exchange_name).publish(
                    amqp_message, routing_key, mandatory=True, timeout=remaining
                )
                return
            except aio_pika.exceptions.PublishError:
                raise Returned() from None
            except aio_pika.exceptions.DeliveryError as exc:
                raise TransportError(
                    f"RabbitMQ refused message {message.id} (basic.nack): {self._scrub(str(exc))}"
                ) from None
            except asyncio.TimeoutError:
                problem = "timed out"
                continue
            except asyncio.CancelledError:
                if self._closing is not None or is_cancelled(asyncio.current_task()):
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
                self._delays.forget()
                with contextlib.suppress(Exception):
                    async with self._temporary_channel() as channel:
                        await self._topology.declare_exchange(channel)
                    if self._delays.knows(exchange_name):
                        await self._delays.ensure(exchange_name)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                # RuntimeError covers aio-pika's ChannelInvalidStateError: reconnecting.
                problem = self._scrub(str(exc) or type(exc).__name__)
            if self._closing is not None or not self._running:
                raise TransportClosedError(
                    f"the RabbitMQ transport closed before message {message.id} was confirmed"
                )
            logger.debug(
                "publishing %s failed (%s); waiting for the connection",
                message.id,
                problem,
                extra=message_extra(message),
            )
            await wait_for_channel(publisher, self._stopping, deadline)
            # ready() can answer before aio-pika noticed the loss: do not spin.
            await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
            pause = min(pause * 2, 1.0)

    # consuming

    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        connection = self._require_connection()
        await self.declare(subscription)
        runner = await start_consumer(
            connection, self._topology, subscription, consumer, url=self.url, scrub=self._scrub
        )
        self._consumers.append(runner)

    # inspection

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        return await self._inspector.browse(queue, limit)

    async def pull(self, queue: str) -> Pulled | None:
        return await self._inspector.pull(queue)

    async def purge(self, queue: str) -> int:
        return await self._inspector.purge(queue)
