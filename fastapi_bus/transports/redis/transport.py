"""The Redis transport: connecting, declaring, publishing, consuming and inspecting.

The design (keys, streams, delays, guarantees) is explained in the package docstring.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio
import redis.exceptions

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
    dead_letter_queue,
    redact_url,
    report_unroutable,
)
from fastapi_bus.transports.redis.broadcast import BroadcastConsumer
from fastapi_bus.transports.redis.consumer import StreamConsumer
from fastapi_bus.transports.redis.delays import DelayMover
from fastapi_bus.transports.redis.description import describe
from fastapi_bus.transports.redis.inspection import Inspector
from fastapi_bus.transports.redis.mapping import encode
from fastapi_bus.transports.redis.routing import Router
from fastapi_bus.transports.redis.scripts import GROUP, Keys
from fastapi_bus.transports.redis.session import Session

__all__ = ["RedisTransport"]

logger = logging.getLogger("fastapi_bus.redis")

#: Redis 6.2 brought XAUTOCLAIM, which reclaiming a dead consumer's messages needs.
MIN_VERSION = (6, 2)

#: Errors that mean "Redis is not reachable right now": publishing waits and tries again.
_RETRIABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _is_certificate_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a TLS certificate that does not verify: trying
    again cannot help."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)


class RedisTransport(Transport):
    """The Redis transport. See the package docstring for the keys it uses and its guarantees.

    Args:
        url: ``redis://[:password@]host:6379/0``, or ``rediss://...`` for TLS. Query parameters
            (``?ssl_ca_certs=...``, ``?socket_timeout=5``) are passed on to redis-py.
        prefix: the namespace of every key and channel the bus uses (a Redis Cluster hash tag);
            services that talk to each other use the same one.
        claim_idle: seconds after which a message held by a consumer that stopped answering
            (its process died) is handed to another consumer. Live consumers renew their claim
            on what they handle, so a slow handler keeps its message. A consumer that holds
            nothing and has been idle this long leaves its group's consumer list (a live one
            that was only quiet is added back by its next read).
        max_deliveries: a message claimed from dead consumers more often than this goes to the
            dead-letter queue (it is likely what kills them).
        connect_timeout: how many seconds ``start()`` keeps retrying an unreachable server.
        publish_timeout: how many seconds a publish may wait for Redis to come back before it
            raises ``TransportError``.
        unroutable: what to do with an event no queue is bound to: ``"log"`` (a warning, the
            default), ``"raise"`` (``UnroutableError``) or ``"ignore"``.
        max_connections: the size of the shared connection pool (each consumer has one more of
            its own).
    """

    protocol = "redis"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "fastapi_bus",
        claim_idle: float = 60.0,
        max_deliveries: int = 10,
        connect_timeout: float = 30.0,
        publish_timeout: float = 30.0,
        unroutable: Unroutable = "log",
        max_connections: int = 32,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigurationError(
                f"RedisTransport needs a redis:// or rediss:// URL, got {redact_url(url)!r}"
            )
        if not prefix or any(c in prefix for c in "{}* "):
            raise ConfigurationError(f"invalid Redis key prefix {prefix!r}")
        if claim_idle <= 0:
            raise ConfigurationError(f"claim_idle must be positive, got {claim_idle!r}")
        if max_deliveries < 1:
            raise ConfigurationError(f"max_deliveries must be at least 1, got {max_deliveries!r}")
        if max_connections < 2:
            raise ConfigurationError("max_connections must be at least 2")
        self._url = url
        self._password = unquote(parts.password) if parts.password else None
        self._keys = Keys(prefix)
        self._claim_idle = claim_idle
        self._max_deliveries = max_deliveries
        #: Seconds ``start()`` keeps retrying an unreachable server (settable until then).
        self.connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._unroutable = check_unroutable(unroutable)
        self._max_connections = max_connections
        self._name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._session: Session | None = None
        self._router: Router | None = None
        self._mover: DelayMover | None = None
        self._inspector: Inspector | None = None
        self._consumers: list[StreamConsumer | BroadcastConsumer] = []
        self._declared: dict[str, Subscription] = {}

    @property
    def url(self) -> str:
        return redact_url(self._url)

    @property
    def prefix(self) -> str:
        """The namespace of the bus's keys and channels."""
        return self._keys.prefix

    def asyncapi(
        self, part: AsyncAPIPart, *, name: str = "", queue: str = "", broadcast: bool = False
    ) -> dict[str, Any]:
        return describe(
            part, url=self.url, keys=self._keys, name=name, queue=queue, broadcast=broadcast
        )

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _client(self, max_connections: int) -> Any:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self._url,
            max_connections=max_connections,
            timeout=self._publish_timeout,
            health_check_interval=30,
        )
        return redis.asyncio.Redis.from_pool(pool)

    # lifecycle

    async def start(self) -> None:
        if self._session is not None:
            return
        client = self._client(self._max_connections)
        try:
            info = await self._connect(client)
        except BaseException:
            await client.aclose()
            raise
        version = str(info.get("redis_version", "0"))
        if _version(version) < MIN_VERSION:
            await client.aclose()
            raise TransportError(
                f"Redis at {self.url} is version {version}; fastapi-bus needs 6.2 or newer"
            )
        session = Session(client, self._keys, url=self.url)
        self._session = session
        self._router = Router(session)
        self._inspector = Inspector(session)
        self._mover = DelayMover(session)
        self._mover.start()

    async def _connect(self, client: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        tries = 0
        while True:
            tries += 1
            try:
                info: dict[str, Any] = await client.info("server")
            except redis.exceptions.AuthenticationError as exc:
                raise TransportError(
                    f"Redis at {self.url} refused the credentials: {self._scrub(str(exc))}"
                ) from None
            except _RETRIABLE as exc:
                if _is_certificate_error(exc):
                    raise TransportError(
                        f"the TLS certificate of Redis at {self.url} does not verify: "
                        f"{self._scrub(str(exc))}"
                    ) from None
                if loop.time() >= deadline:
                    raise TransportError(
                        f"cannot connect to Redis at {self.url} after {tries} tries: "
                        f"{self._scrub(str(exc))}"
                    ) from None
                if tries == 1:
                    logger.warning(
                        "cannot connect to Redis at %s (%s); retrying for up to %gs",
                        self.url, self._scrub(str(exc)), self.connect_timeout,
                    )  # fmt: skip
                await asyncio.sleep(min(0.25 * tries, 2.0, max(deadline - loop.time(), 0)))
                continue
            if tries > 1:
                logger.warning("connected to Redis at %s after %d tries", self.url, tries)
            return info

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.connected

    def _require(self) -> Session:
        if self._session is None:
            raise TransportClosedError(f"the Redis transport for {self.url} is not running")
        return self._session

    async def stop_consuming(self, grace: float = 10.0) -> None:
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.halt()
        await asyncio.gather(*(consumer.stop(grace) for consumer in consumers))

    async def close(self, grace: float = 10.0) -> None:
        session = self._session
        if session is None:
            return
        await self.stop_consuming(grace)
        if self._mover is not None:
            await self._mover.stop()
        self._session = None
        self._declared.clear()
        await session.client.aclose()

    # topology

    async def declare(self, subscription: Subscription) -> None:
        session = self._require()
        keys = self._keys
        dlq = dead_letter_queue(subscription.queue)
        try:
            if subscription.broadcast:
                await session.client.sadd(keys.queues, dlq)
            else:
                await session.declare(
                    keys=[
                        keys.queues,
                        keys.bindings,
                        keys.version,
                        keys.stream(subscription.queue),
                    ],
                    args=[subscription.queue, dlq, GROUP, *subscription.patterns],
                )
        except redis.exceptions.RedisError as exc:
            raise TransportError(
                f"cannot declare {subscription.queue!r} on {self.url}: {self._scrub(str(exc))}"
            ) from None
        self._declared[subscription.queue] = subscription

    # publishing

    def _routing(self) -> Router:
        self._require()
        assert self._router is not None
        return self._router

    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        router = self._routing()
        value = encode(message)
        if delay is not None and delay > 0:
            stored = await self._retrying(message, lambda: router.delay(message.name, value, delay))
            if stored:
                self._wake_mover()
            else:
                report_unroutable(self._unroutable, message, logger)
            return
        reached = await self._retrying(message, lambda: router.publish(message.name, value))
        if not reached:
            report_unroutable(self._unroutable, message, logger)

    async def send(self, queue: str, message: Message, *, delay: float | None = None) -> None:
        router = self._routing()
        value = encode(message)
        if delay is not None and delay > 0:
            sent = await self._retrying(message, lambda: router.delay_to(queue, value, delay))
            self._wake_mover()
        else:
            sent = await self._retrying(message, lambda: router.send(queue, value))
        if not sent:
            raise UnroutableError(
                f"no queue named {queue!r} exists; message {message.id} was not sent"
            )

    def _wake_mover(self) -> None:
        if self._mover is not None:
            self._mover.wake()

    async def _retrying(self, message: Message, attempt: Any) -> int:
        """``attempt()``, tried again while Redis is unreachable, up to ``publish_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        pause = 0.05
        while True:
            session = self._require()
            try:
                result: int = await attempt()
            except _RETRIABLE as exc:
                session.down(exc)
                if loop.time() + pause > deadline:
                    raise TransportError(
                        f"Redis at {self.url} did not take message {message.id} within "
                        f"{self._publish_timeout:g}s ({self._scrub(str(exc))}); it may or may "
                        "not have been stored"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            except redis.exceptions.RedisError as exc:
                raise TransportError(
                    f"Redis refused message {message.id}: {self._scrub(str(exc))}"
                ) from None
            session.up()
            return result

    # consuming

    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        session = self._require()
        await self.declare(subscription)
        runner: StreamConsumer | BroadcastConsumer
        if subscription.broadcast:
            runner = BroadcastConsumer(session, self._client(2), subscription, consumer)
            await runner.start()
        else:
            runner = StreamConsumer(
                session,
                self._client(2),
                queue=subscription.queue,
                subscription=subscription,
                consumer=consumer,
                name=self._name,
                claim_idle=self._claim_idle,
                max_deliveries=self._max_deliveries,
                redeclare=lambda: self.declare(subscription),
            )
        self._consumers.append(runner)

    # inspection

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        return await self._inspect().browse(queue, limit)

    async def pull(self, queue: str) -> Pulled | None:
        return await self._inspect().pull(queue)

    async def purge(self, queue: str) -> int:
        return await self._inspect().purge(queue)

    def _inspect(self) -> Inspector:
        self._require()
        assert self._inspector is not None
        return self._inspector
