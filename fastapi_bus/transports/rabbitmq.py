"""``amqp://`` and ``amqps://``: RabbitMQ through aio-pika.

Topology
========

One durable **topic exchange** per bus (``exchange=``, default ``"fastapi_bus"``). An event is
published to it with its name as the routing key. Each subscription owns a durable queue
(quorum by default) bound to the exchange once per pattern, and a dead-letter queue
``<queue>.dlq`` of the same type. The queue dead-letters to its ``.dlq`` through the default
exchange, so anything the broker itself gives up on (a ``delivery-limit`` or ``max-length``
policy, a message this transport cannot decode) ends up there too.

A broadcast subscription gets an exclusive, auto-delete classic queue per transport instance,
``<queue>.<random suffix>``, bound to the same patterns. It disappears with its connection, so a
process only sees broadcasts published while it is connected. Its dead-letter queue is the shared,
durable ``<queue>.dlq``.

Delays
======

RabbitMQ has no delayed delivery without a plugin, so delays are built from what it ships: a
queue-level message TTL and dead-lettering. A delay is rounded **up** to one of a fixed set of
levels (:data:`DELAY_LEVELS_MS`, 0.1 s to 28 days), so there are few delay queues and a
message never arrives early. Each level has, on demand:

* a fanout exchange ``<exchange>.delay.<ms>ms.<queue type>`` bound to
* a queue of the same name with ``x-message-ttl = <ms>``, which nobody consumes. When the TTL runs
  out, RabbitMQ dead-letters the message to ``<exchange>`` (the bus's topic exchange).

Every message in one delay queue has the same TTL, so the oldest is always the next to expire:
there is no head-of-line blocking, which per-message TTLs would cause. The fanout exchange is what
keeps the routing key: a message enters the delay queue with its event name as routing key, and
dead-lettering keeps that key, so the topic exchange routes it as if it had just been published.

``send(queue, message, delay=...)`` uses a second family, ``...<queue type>.direct``, that
dead-letters to the default exchange with the target queue's name as routing key.

Delay queues expire (``x-expires``) a while after their TTL once nobody declares them any more;
the transport re-declares a level before using it if its last declaration is getting old, so a
queue never expires while it may still hold a message. Their fanout exchanges are auto-delete and
go with them.

Two limits: a message that has no queue to go to when its delay ends is dropped by RabbitMQ
(``unroutable`` cannot report it then), and a delay queue holds its messages on one node if it
is classic (quorum delay queues are replicated like the others).

Guarantees
==========

* ``publish``/``send`` return only after RabbitMQ confirmed the message (publisher confirms);
  concurrent calls share one channel and their confirms are pipelined. If the connection drops,
  they wait (up to ``publish_timeout``) for aio-pika to reconnect and publish again, so a
  message may be stored twice, never zero times; otherwise they raise
  :class:`~fastapi_bus.TransportError`.
* A consumer call that returns acks its message; one that raises nacks it back to the queue. A
  message whose ack could not be sent (the connection dropped) is redelivered by the broker.
* ``close`` cancels the consumers, lets running calls finish within the grace period, and then
  closes the channels, which returns every unacknowledged message to its queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions
import tenacity

from fastapi_bus.exceptions import (
    ConfigurationError,
    PublishError,
    TransportClosedError,
    TransportError,
    UnroutableError,
)
from fastapi_bus.messages import JSON, Message, new_id
from fastapi_bus.transports.base import (
    Pulled,
    Subscription,
    Transport,
    dead_letter_queue,
    redact_url,
)
from fastapi_bus.types import Consumer, Headers

__all__ = ["DELAY_LEVELS_MS", "RabbitMQTransport"]

logger = logging.getLogger("fastapi_bus.rabbitmq")

QueueType = Literal["quorum", "classic"]
Unroutable = Literal["ignore", "log", "raise"]

#: Our headers for what AMQP has no property for. They never reach ``Message.headers``.
CAUSATION_HEADER = "x-bus-causation-id"
ATTEMPT_HEADER = "x-bus-attempt"
PUBLISHED_AT_HEADER = "x-bus-published-at"
_OWN_HEADERS = frozenset({CAUSATION_HEADER, ATTEMPT_HEADER, PUBLISHED_AT_HEADER})
#: Headers RabbitMQ adds when it dead-letters or redelivers; not the application's business.
_BROKER_HEADERS = frozenset({"x-death", "x-delivery-count"})
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")

_SECOND = 1_000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
#: The delays RabbitMQ can apply, in milliseconds. A delay is rounded up to the next one.
DELAY_LEVELS_MS: tuple[int, ...] = (
    100, 250, 500,
    1 * _SECOND, 2 * _SECOND, 3 * _SECOND, 5 * _SECOND, 7 * _SECOND, 10 * _SECOND,
    15 * _SECOND, 20 * _SECOND, 30 * _SECOND, 45 * _SECOND,
    1 * _MINUTE, 90 * _SECOND, 2 * _MINUTE, 3 * _MINUTE, 5 * _MINUTE, 7 * _MINUTE, 10 * _MINUTE,
    15 * _MINUTE, 20 * _MINUTE, 30 * _MINUTE, 45 * _MINUTE,
    1 * _HOUR, 90 * _MINUTE, 2 * _HOUR, 3 * _HOUR, 4 * _HOUR, 6 * _HOUR, 8 * _HOUR,
    12 * _HOUR, 18 * _HOUR,
    1 * _DAY, 36 * _HOUR, 2 * _DAY, 3 * _DAY, 4 * _DAY, 5 * _DAY, 7 * _DAY, 10 * _DAY,
    14 * _DAY, 21 * _DAY, 28 * _DAY,
)  # fmt: skip
#: RabbitMQ keeps message timestamps in whole milliseconds; this keeps a delay from coming up
#: a fraction of a millisecond short.
_DELAY_MARGIN_MS = 2

#: How long after its TTL an unused delay queue lives (and how often it is re-declared: half).
_DELAY_QUEUE_GRACE_MS = 20 * _MINUTE
#: With ``auto_delete_topology``, every queue goes this long after it was last used.
_TEST_QUEUE_EXPIRES_MS = 60 * _SECOND

#: Browsing a quorum queue with up to this many more messages than asked for keeps its order.
_BROWSE_ROTATE_MAX = 10_000

#: Bound on broker round trips that are not publishes (declares, cancels, closes).
_OPERATION_TIMEOUT = 15.0


class _Returned(Exception):
    """RabbitMQ returned a mandatory message: no queue matched its routing key."""


def _delay_level(delay: float) -> int:
    wanted = math.ceil(delay * _SECOND) + _DELAY_MARGIN_MS
    for level in DELAY_LEVELS_MS:
        if level >= wanted:
            return level
    longest = DELAY_LEVELS_MS[-1] // _SECOND
    raise PublishError(
        f"a delay of {delay:g}s is longer than the longest one supported ({longest}s)"
    )


def _is_cancelled(task: asyncio.Task[Any] | None) -> bool:
    """Whether someone asked to cancel ``task``, as opposed to aiormq cancelling a future of ours
    because its channel went away. Without ``Task.cancelling`` (Python 3.10), assume yes."""
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


# message mapping


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _encode(message: Message) -> aio_pika.Message:
    published_at = _utc(message.published_at)
    headers: dict[str, Any] = dict(message.headers)
    headers[ATTEMPT_HEADER] = message.attempt
    # The AMQP timestamp has whole seconds only.
    headers[PUBLISHED_AT_HEADER] = published_at.isoformat()
    if message.causation_id is not None:
        headers[CAUSATION_HEADER] = message.causation_id
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        message_id=message.id,
        type=message.name,
        timestamp=published_at,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (bool, int, float, datetime)):
        return str(value)
    return None  # tables and arrays have no place in text headers


def _decode(incoming: aio_pika.abc.AbstractIncomingMessage) -> Message:
    raw = dict(incoming.headers or {})
    headers: Headers = {}
    for key, value in raw.items():
        # Other x-bus-* headers (dead-letter reasons, retry state) belong to the layers above.
        if key in _OWN_HEADERS or key in _BROKER_HEADERS or key.startswith(_BROKER_PREFIXES):
            continue
        text = _text(value)
        if text is not None:
            headers[key] = text

    published_at: datetime | None = None
    stamp = _text(raw.get(PUBLISHED_AT_HEADER))
    if stamp:
        with contextlib.suppress(ValueError):
            published_at = _utc(datetime.fromisoformat(stamp))
    if published_at is None and isinstance(incoming.timestamp, datetime):
        published_at = _utc(incoming.timestamp)

    attempt = 1
    with contextlib.suppress(TypeError, ValueError):
        attempt = max(1, int(str(raw.get(ATTEMPT_HEADER, 1))))

    # Foreign producers may leave out the type: the routing key is the next best name.
    name = incoming.type or incoming.routing_key or ""
    return Message(
        name=name,
        body=incoming.body,
        id=incoming.message_id or new_id(),
        headers=headers,
        correlation_id=incoming.correlation_id,
        causation_id=_text(raw.get(CAUSATION_HEADER)),
        published_at=published_at or datetime.now(timezone.utc),
        attempt=attempt,
        content_type=incoming.content_type or JSON,
        redelivered=bool(incoming.redelivered),
    )


# topology


@dataclasses.dataclass(frozen=True)
class _QueueSpec:
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


class _Consumer:
    """Hands the deliveries of one queue to one consumer callable, at most ``limit`` at once."""

    def __init__(
        self,
        queue_name: str,
        consumer: Consumer,
        limit: int,
        channel: aio_pika.abc.AbstractRobustChannel,
    ) -> None:
        self.queue_name = queue_name
        self.consumer = consumer
        self.channel = channel
        self.queue: aio_pika.abc.AbstractRobustQueue | None = None
        self.tag: str | None = None
        self.stopping = False
        self._free = limit
        # Deliveries waiting for a free slot, oldest first. Each future answers "go" (True) or
        # "stopping, give it back" (False): unlike cancelling, that reaches a task that has not
        # started yet, and returns the waiting messages in the order they came.
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[asyncio.Task[None]] = set()

    async def on_message(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        # Called by aio-pika for every delivery; the work happens in a task of our own so that
        # a channel closing under it (a broker restart) does not cancel the consumer call.
        task = asyncio.create_task(self._handle(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _slot(self) -> bool:
        if self.stopping:
            return False
        if self._free and not self._waiting:
            self._free -= 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            go: bool = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()  # handed a slot just as we were cancelled: pass it on
            raise
        return go

    def _release(self) -> None:
        while self._waiting and not self.stopping:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1

    async def _handle(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if not await self._slot():
                await self._settle(incoming, ack=False)
                return
            self._running.add(task)
            try:
                ack = await self._call(incoming)
            finally:
                self._running.discard(task)
                self._release()
        except asyncio.CancelledError:
            await self._settle(incoming, ack=False)
            raise
        if ack is not None:
            await self._settle(incoming, ack=ack)

    async def _call(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> bool | None:
        """Run the consumer: True to ack, False to requeue, None if there is nothing to do."""
        if _channel_gone(incoming):
            # It waited through a reconnection: the broker has put it back already and delivers
            # it again on the new channel, so do not handle it twice.
            return None
        try:
            message = _decode(incoming)
        except Exception:
            logger.exception("undecodable message in %r: dead-lettered", self.queue_name)
            with contextlib.suppress(Exception):
                await incoming.reject(requeue=False)
            return None
        try:
            await self.consumer(message)
        except Exception:
            logger.exception("consumer of %r failed; the message goes back", self.queue_name)
            return False
        return True

    async def _settle(self, incoming: aio_pika.abc.AbstractIncomingMessage, *, ack: bool) -> None:
        try:
            if ack:
                await incoming.ack()
            else:
                await incoming.nack(requeue=True)
        except Exception as exc:
            # The channel that delivered it is gone, so the broker returns it to the queue.
            logger.info(
                "could not %s a message of %r (%s); RabbitMQ will deliver it again",
                "ack" if ack else "requeue",
                self.queue_name,
                exc or type(exc).__name__,
            )

    def halt(self) -> None:
        """Start no more consumer calls; the deliveries waiting for a slot go back."""
        self.stopping = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(False)

    async def stop(self, grace: float) -> None:
        self.halt()
        # With the connection down there is nobody to tell; the broker forgot us already.
        if self.queue is not None and self.tag is not None and not self.channel.is_closed:
            try:
                await asyncio.wait_for(self.queue.cancel(self.tag), _OPERATION_TIMEOUT)
            except Exception as exc:
                logger.info("could not cancel the consumer of %r: %s", self.queue_name, exc)
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(grace, 0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Closing the channel returns whatever is still unacknowledged to the queue.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.channel.close(), _OPERATION_TIMEOUT)


class RabbitMQTransport(Transport):
    """The RabbitMQ transport. See the module docstring for the topology and guarantees.

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
        if unroutable not in ("ignore", "log", "raise"):
            raise ConfigurationError(
                f"unroutable must be 'ignore', 'log' or 'raise', not {unroutable!r}"
            )
        if not exchange:
            raise ConfigurationError(
                "exchange needs a name (the default exchange cannot route topics)"
            )
        if ssl_context is not None and parts.scheme != "amqps":
            raise ConfigurationError("ssl_context needs an amqps:// URL")
        self._url = url
        self._password = unquote(parts.password) if parts.password else None
        self._exchange_name = exchange
        self._queue_type: QueueType = "classic" if auto_delete_topology else queue_type
        #: Seconds ``start()`` keeps retrying an unreachable broker (settable until then).
        self.connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._unroutable = unroutable
        self._ssl_context = ssl_context
        self._reconnect_interval = reconnect_interval
        self._test_topology = auto_delete_topology
        self._process_id = uuid.uuid4().hex[:12]

        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractRobustChannel | None = None
        self._pull_channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._consumers: list[_Consumer] = []
        self._declared: dict[str, Subscription] = {}
        self._known_queues: set[str] = set()
        self._delay_declared: dict[str, float] = {}
        #: Delay exchange name: (TTL in ms, whether it routes to a queue by name).
        self._delay_kinds: dict[str, tuple[int, bool]] = {}
        self._delay_lock = asyncio.Lock()
        self._pull_lock = asyncio.Lock()
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
        return self._exchange_name

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
        self._delay_lock = asyncio.Lock()
        self._pull_lock = asyncio.Lock()
        connection = await self._connect()
        try:
            publisher = connection.channel(publisher_confirms=True, on_return_raises=True)
            await asyncio.wait_for(publisher.initialize(), _OPERATION_TIMEOUT)
            await self._declare_exchange(publisher)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), _OPERATION_TIMEOUT)
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection = connection
        self._publisher = publisher
        self._exchanges = {"": publisher.default_exchange}
        self._running = True

    def _connect_options(self) -> dict[str, Any]:
        query = parse_qs(urlsplit(self._url).query)
        options: dict[str, Any] = {
            "client_properties": {
                "connection_name": f"fastapi-bus {socket.gethostname()} pid {os.getpid()}",
            },
        }
        if "reconnect_interval" not in query:
            options["reconnect_interval"] = self._reconnect_interval
        if self._ssl_context is not None:
            options["ssl_context"] = self._ssl_context
        return options

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        options = self._connect_options()

        def retryable(exc: BaseException) -> bool:
            auth = (
                aio_pika.exceptions.AuthenticationError,
                aio_pika.exceptions.ProbableAuthenticationError,
            )
            return not isinstance(exc, auth) and isinstance(
                exc, (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError)
            )

        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.warning(
                "cannot connect to RabbitMQ at %s (%s); retrying",
                self.url,
                self._scrub(str(exc) or type(exc).__name__),
            )

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_delay(self.connect_timeout),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5),
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    timeout = max(deadline - loop.time(), 1.0)
                    connection: aio_pika.abc.AbstractRobustConnection
                    connection = await aio_pika.connect_robust(
                        self._url, timeout=timeout, **options
                    )
                    return connection
        except (
            aio_pika.exceptions.AuthenticationError,
            aio_pika.exceptions.ProbableAuthenticationError,
        ) as exc:
            user = urlsplit(self._url).username or "guest"
            raise TransportError(
                f"RabbitMQ at {self.url} refused the credentials of user {user!r}: "
                f"{self._scrub(str(exc))}"
            ) from None
        except Exception as exc:
            raise TransportError(
                f"cannot connect to RabbitMQ at {self.url} within {self.connect_timeout:g}s: "
                f"{self._scrub(str(exc) or type(exc).__name__)}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

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
        if self._pull_channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pull_channel.close(), _OPERATION_TIMEOUT)
            self._pull_channel = None
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        connection, self._connection, self._publisher = self._connection, None, None
        self._exchanges = {}
        self._declared.clear()
        self._known_queues.clear()
        self._delay_declared.clear()
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), _OPERATION_TIMEOUT)
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

    async def _on_reconnect(self, *_: object) -> None:
        # Durable topology survives a restart; transient queues and the per-level delay cache do
        # not, so forget the cache and declare the subscriptions again, off the reconnect path.
        self._delay_declared.clear()
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
        if subscription.broadcast:
            return f"{subscription.queue}.{self._process_id}"
        return subscription.queue

    def _type_arguments(self) -> dict[str, Any]:
        if self._test_topology:
            return {"x-expires": _TEST_QUEUE_EXPIRES_MS}
        return {"x-queue-type": self._queue_type}

    def _dead_letter_spec(self, subscription: Subscription) -> _QueueSpec:
        return _QueueSpec(
            name=dead_letter_queue(subscription.queue),
            durable=not self._test_topology,
            exclusive=False,
            auto_delete=False,
            arguments=self._type_arguments(),
        )

    def _queue_spec(self, subscription: Subscription) -> _QueueSpec:
        to_dead_letters = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue(subscription.queue),
        }
        if subscription.broadcast:
            return _QueueSpec(
                name=self.consumer_queue(subscription),
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments={"x-queue-type": "classic", **to_dead_letters},
            )
        return _QueueSpec(
            name=subscription.queue,
            durable=not self._test_topology,
            exclusive=False,
            auto_delete=False,
            arguments={**self._type_arguments(), **to_dead_letters},
        )

    async def _declare_exchange(self, channel: aio_pika.abc.AbstractChannel) -> None:
        try:
            await asyncio.wait_for(
                channel.declare_exchange(
                    self._exchange_name,
                    aio_pika.ExchangeType.TOPIC,
                    durable=not self._test_topology,
                    auto_delete=self._test_topology,
                ),
                _OPERATION_TIMEOUT,
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            wanted = "a transient auto-delete" if self._test_topology else "a durable"
            raise ConfigurationError(
                f"exchange {self._exchange_name!r} already exists with different settings. "
                f"RabbitMQ says: {_reply_text(exc)}. fastapi-bus needs {wanted} topic exchange: "
                "delete the existing one or choose another name with exchange=..."
            ) from None

    async def _declare_queue(
        self, channel: aio_pika.abc.AbstractChannel, spec: _QueueSpec
    ) -> aio_pika.abc.AbstractQueue:
        try:
            return await asyncio.wait_for(
                channel.declare_queue(
                    spec.name,
                    durable=spec.durable,
                    exclusive=spec.exclusive,
                    auto_delete=spec.auto_delete,
                    arguments=spec.arguments,
                ),
                _OPERATION_TIMEOUT,
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"queue {spec.name!r} already exists with different settings. RabbitMQ says: "
                f"{_reply_text(exc)}. fastapi-bus declares it as: {spec.describe()}. To fix it, "
                "either configure the transport to match the existing queue (queue_type=...), "
                "or move its messages elsewhere and delete it so that it is declared again."
            ) from None

    @contextlib.asynccontextmanager
    async def _temporary_channel(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        """A plain channel for operations that may fail: a broker error closes only it."""
        connection = self._require_connection()
        channel = aio_pika.Channel(connection, publisher_confirms=False)
        try:
            await asyncio.wait_for(connection.ready(), _OPERATION_TIMEOUT)
            await asyncio.wait_for(channel.initialize(), _OPERATION_TIMEOUT)
        except asyncio.TimeoutError:
            raise TransportError(f"RabbitMQ at {self.url} did not answer in time") from None
        except aio_pika.exceptions.AMQPError as exc:
            raise TransportError(
                f"cannot open a channel to RabbitMQ at {self.url}: {self._scrub(str(exc))}"
            ) from None
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), _OPERATION_TIMEOUT)

    async def declare(self, subscription: Subscription) -> None:
        self._require_connection()
        try:
            async with self._temporary_channel() as channel:
                await self._declare_topology(channel, subscription)
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

    async def _declare_topology(
        self, channel: aio_pika.abc.AbstractChannel, subscription: Subscription
    ) -> aio_pika.abc.AbstractQueue:
        await self._declare_exchange(channel)
        dead_letters = self._dead_letter_spec(subscription)
        await self._declare_queue(channel, dead_letters)
        spec = self._queue_spec(subscription)
        queue = await self._declare_queue(channel, spec)
        for pattern in subscription.patterns:
            await asyncio.wait_for(queue.bind(self._exchange_name, pattern), _OPERATION_TIMEOUT)
        self._known_queues.update((spec.name, dead_letters.name))
        return queue

    # publishing

    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        self._require_publisher()
        if delay is not None and delay > 0:
            exchange = await self._delay_exchange(delay, direct=False)
            await self._publish(exchange, message.name, message)
            return
        try:
            await self._publish(self._exchange_name, message.name, message)
        except _Returned:
            self._report_unroutable(message)

    def _report_unroutable(self, message: Message) -> None:
        if self._unroutable == "ignore":
            return
        text = f"no queue is bound to event {message.name!r}; message {message.id} was dropped"
        if self._unroutable == "raise":
            raise UnroutableError(text)
        logger.warning(text)

    async def send(self, queue: str, message: Message, *, delay: float | None = None) -> None:
        self._require_publisher()
        if delay is not None and delay > 0:
            # RabbitMQ silently drops a dead-lettered message that has nowhere to go, so check
            # that the queue is there before the message disappears into a delay queue.
            await self._check_queue_exists(queue)
            exchange = await self._delay_exchange(delay, direct=True)
            await self._publish(exchange, queue, message)
            return
        try:
            await self._publish("", queue, message)
        except _Returned:
            raise UnroutableError(
                f"no queue named {queue!r} exists; message {message.id} was not sent"
            ) from None

    async def _check_queue_exists(self, queue: str) -> None:
        if not await self._queue_exists(queue):
            raise UnroutableError(f"no queue named {queue!r} exists; nothing was sent")

    async def _queue_exists(self, queue: str) -> bool:
        """Whether ``queue`` exists, asked on a channel of its own (a 404 closes the channel)."""
        if queue in self._known_queues:
            return True
        try:
            async with self._temporary_channel() as channel:
                await asyncio.wait_for(
                    channel.declare_queue(queue, passive=True), _OPERATION_TIMEOUT
                )
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            pass  # another process's exclusive queue: it exists
        except asyncio.TimeoutError:
            raise TransportError(f"checking queue {queue!r} on {self.url} timed out") from None
        self._known_queues.add(queue)
        return True

    def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            publisher = self._require_publisher()
            # No round trip: the name is declared elsewhere, this is only a handle.
            exchange = aio_pika.Exchange(publisher, name, durable=False, passive=True)
            self._exchanges[name] = exchange
        return exchange

    async def _publish(self, exchange_name: str, routing_key: str, message: Message) -> None:
        amqp_message = _encode(message)
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
                raise _Returned() from None
            except aio_pika.exceptions.DeliveryError as exc:
                raise TransportError(
                    f"RabbitMQ refused message {message.id} (basic.nack): {self._scrub(str(exc))}"
                ) from None
            except asyncio.TimeoutError:
                problem = "timed out"
                continue
            except asyncio.CancelledError:
                if self._closing is not None or _is_cancelled(asyncio.current_task()):
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
                self._delay_declared.clear()
                with contextlib.suppress(Exception):
                    async with self._temporary_channel() as channel:
                        await self._declare_exchange(channel)
                    if exchange_name in self._delay_kinds:
                        await self._ensure_delay(exchange_name)
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                # RuntimeError covers aio-pika's ChannelInvalidStateError: reconnecting.
                problem = self._scrub(str(exc) or type(exc).__name__)
            if self._closing is not None or not self._running:
                raise TransportClosedError(
                    f"the RabbitMQ transport closed before message {message.id} was confirmed"
                )
            logger.debug(
                "publishing %s failed (%s); waiting for the connection", message.id, problem
            )
            await self._wait_for_broker(publisher, deadline)
            # ready() can answer before aio-pika noticed the loss: do not spin.
            await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
            pause = min(pause * 2, 1.0)

    async def _wait_for_broker(
        self, publisher: aio_pika.abc.AbstractRobustChannel, deadline: float
    ) -> None:
        """Until the channel is restored, the transport closes or ``deadline`` passes."""
        waits = [
            asyncio.ensure_future(publisher.ready()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            timeout = max(deadline - asyncio.get_running_loop().time(), 0)
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _delay_exchange(self, delay: float, *, direct: bool) -> str:
        level = _delay_level(delay)
        name = f"{self._exchange_name}.delay.{level}ms.{self._queue_type}"
        if direct:
            name += ".direct"
        self._delay_kinds[name] = (level, direct)
        await self._ensure_delay(name)
        return name

    async def _ensure_delay(self, name: str) -> None:
        """Declare the delay level ``name`` unless this was done recently enough."""
        level, direct = self._delay_kinds[name]
        loop = asyncio.get_running_loop()
        grace = _TEST_QUEUE_EXPIRES_MS if self._test_topology else _DELAY_QUEUE_GRACE_MS
        # Re-declaring resets the queue's x-expires clock. Doing it whenever the last time is
        # more than half the grace ago keeps the queue alive for every message we put into it.
        refresh = grace / _SECOND / 2
        if loop.time() - self._delay_declared.get(name, -math.inf) < refresh:
            return
        async with self._delay_lock:
            if loop.time() - self._delay_declared.get(name, -math.inf) < refresh:
                return
            started = loop.time()
            spec = _QueueSpec(
                name=name,
                durable=not self._test_topology,
                exclusive=False,
                auto_delete=False,
                arguments={
                    "x-message-ttl": level,
                    "x-expires": level + grace,
                    "x-dead-letter-exchange": "" if direct else self._exchange_name,
                    **({} if self._test_topology else {"x-queue-type": self._queue_type}),
                },
            )
            try:
                async with self._temporary_channel() as channel:
                    exchange = await asyncio.wait_for(
                        channel.declare_exchange(
                            name,
                            aio_pika.ExchangeType.FANOUT,
                            durable=not self._test_topology,
                            auto_delete=True,
                        ),
                        _OPERATION_TIMEOUT,
                    )
                    queue = await self._declare_queue(channel, spec)
                    await asyncio.wait_for(queue.bind(exchange), _OPERATION_TIMEOUT)
            except (ConfigurationError, TransportError):
                raise
            except asyncio.TimeoutError:
                raise TransportError(f"declaring delay queue {name!r} timed out") from None
            except aio_pika.exceptions.AMQPError as exc:
                raise TransportError(
                    f"cannot declare delay queue {name!r}: {self._scrub(str(exc))}"
                ) from None
            self._delay_declared[name] = started

    # consuming

    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        connection = self._require_connection()
        await self.declare(subscription)
        channel = connection.channel(publisher_confirms=False)
        try:
            await asyncio.wait_for(channel.initialize(), _OPERATION_TIMEOUT)
        except Exception as exc:
            raise TransportError(
                f"cannot open a channel on {self.url}: {self._scrub(str(exc))}"
            ) from None
        name = self.consumer_queue(subscription)
        runner = _Consumer(name, consumer, subscription.max_concurrency, channel)
        try:
            await asyncio.wait_for(
                channel.set_qos(prefetch_count=subscription.prefetch), _OPERATION_TIMEOUT
            )
            # Declared again on this robust channel, so that aio-pika re-declares, re-binds and
            # re-consumes it after a reconnection.
            queue = await self._declare_queue(channel, self._queue_spec(subscription))
            assert isinstance(queue, aio_pika.abc.AbstractRobustQueue)
            for pattern in subscription.patterns:
                await asyncio.wait_for(queue.bind(self._exchange_name, pattern), _OPERATION_TIMEOUT)
            runner.queue = queue
            runner.tag = await asyncio.wait_for(
                queue.consume(runner.on_message), _OPERATION_TIMEOUT
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), _OPERATION_TIMEOUT)
            if isinstance(exc, (ConfigurationError, TransportError)) or not isinstance(
                exc, Exception
            ):
                raise
            raise TransportError(f"cannot consume {name!r}: {self._scrub(str(exc))}") from None
        self._consumers.append(runner)

    # inspection

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        self._require_connection()
        if limit <= 0:
            return []
        found: list[Message] = []
        try:
            async with self._temporary_channel() as channel:
                handle = await channel.get_queue(queue, ensure=False)
                last: aio_pika.abc.AbstractIncomingMessage | None = None
                for _ in range(limit + _BROWSE_ROTATE_MAX):
                    incoming = await handle.get(
                        no_ack=False, fail=False, timeout=_OPERATION_TIMEOUT
                    )
                    if incoming is None:
                        break
                    last = incoming
                    if len(found) < limit:
                        found.append(_decode(incoming))
                    if len(found) == limit and not self._must_rotate(incoming):
                        break
                if last is not None:
                    # One nack for all of them: they go back to the queue in their order.
                    await last.nack(multiple=True, requeue=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return []
        except asyncio.TimeoutError:
            raise TransportError(f"browsing {queue!r} on {self.url} timed out") from None
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
                    await asyncio.wait_for(channel.initialize(), _OPERATION_TIMEOUT)
                    self._pull_channel = channel
                handle = await channel.get_queue(queue, ensure=False)
                incoming = await handle.get(no_ack=False, fail=False, timeout=_OPERATION_TIMEOUT)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return None
            except asyncio.TimeoutError:
                raise TransportError(f"pulling from {queue!r} on {self.url} timed out") from None
            except aio_pika.exceptions.AMQPError as exc:
                raise TransportError(
                    f"cannot pull from {queue!r}: {self._scrub(str(exc))}"
                ) from None
        return None if incoming is None else _RabbitMQPulled(incoming, queue)

    async def purge(self, queue: str) -> int:
        self._require_connection()
        try:
            async with self._temporary_channel() as channel:
                handle = await channel.get_queue(queue, ensure=False)
                result = await asyncio.wait_for(handle.purge(), _OPERATION_TIMEOUT)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        except asyncio.TimeoutError:
            raise TransportError(f"purging {queue!r} on {self.url} timed out") from None
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


class _RabbitMQPulled(Pulled):
    def __init__(self, incoming: aio_pika.abc.AbstractIncomingMessage, queue: str) -> None:
        super().__init__(_decode(incoming))
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


def _channel_gone(incoming: aio_pika.abc.AbstractIncomingMessage) -> bool:
    try:
        return incoming.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True


def _reply_text(exc: BaseException) -> str:
    """The broker's explanation, as in ``PRECONDITION_FAILED - inequivalent arg ...``."""
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, str) and arg:
            return arg
    return str(exc)
