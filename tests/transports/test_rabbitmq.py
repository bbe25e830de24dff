"""What the RabbitMQ transport does beyond the shared contract, against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions
import pytest

from fastapi_bus.core.exceptions import (
    ConfigurationError,
    PublishError,
    TransportClosedError,
    TransportError,
    UnroutableError,
)
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription, dead_letter_queue
from fastapi_bus.transports.rabbitmq import (
    ATTEMPT_HEADER,
    CAUSATION_HEADER,
    DELAY_LEVELS_MS,
    PUBLISHED_AT_HEADER,
    RabbitMQTransport,
    _delay_level,
)
from tests.utils import free_port, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)


class Broker:
    """Makes transports on one fresh exchange and deletes everything they made at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.exchange = f"test-rmq-{uuid.uuid4().hex[:12]}"
        self.transports: list[RabbitMQTransport] = []
        self.queues: set[str] = set()
        self.exchanges: set[str] = {self.exchange}

    def queue(self, suffix: str = "q") -> str:
        name = f"{self.exchange}.{suffix}"
        self.queues.update((name, dead_letter_queue(name)))
        return name

    def make(self, url: str | None = None, **options: Any) -> RabbitMQTransport:
        options.setdefault("exchange", self.exchange)
        transport = RabbitMQTransport(url or self.url, **options)
        self.transports.append(transport)
        return transport

    async def start(self, url: str | None = None, **options: Any) -> RabbitMQTransport:
        transport = self.make(url, **options)
        await transport.start()
        return transport

    @contextlib.asynccontextmanager
    async def raw(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        """A plain aio-pika channel, to look at the broker without the transport."""
        connection = await aio_pika.connect(self.url)
        try:
            yield await connection.channel()
        finally:
            await connection.close()

    async def cleanup(self) -> None:
        for transport in self.transports:
            await transport.close(grace=1)
        for level in DELAY_LEVELS_MS:
            for kind in ("quorum", "classic"):
                for suffix in ("", ".direct"):
                    name = f"{self.exchange}.delay.{level}ms.{kind}{suffix}"
                    self.queues.add(name)
                    self.exchanges.add(name)
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            for kind, name in [("queue", q) for q in self.queues] + [
                ("exchange", x) for x in self.exchanges
            ]:
                try:
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                except aio_pika.exceptions.AMQPException:
                    channel = await connection.channel()  # an error closed it; go on
        finally:
            await connection.close()


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[Broker]:
    made = Broker(rabbitmq_url)
    yield made
    await made.cleanup()


def sub(queue: str, *patterns: str, **options: Any) -> Subscription:
    return Subscription(queue=queue, patterns=patterns or ("test.event",), **options)


def with_password(url: str, password: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{parts.username or 'guest'}:{password}@{host}:{port or parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, parts.fragment))


class TcpProxy:
    """Stands between the transport and RabbitMQ, and can cut every connection abruptly, as a
    killed server or a broken network would, or refuse new ones for a while."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 5672
        self.port = free_port()
        self.url = with_password(target, parts.password or "guest", self.port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.refuse()
        self.cut()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                upstream_reader, upstream = await asyncio.open_connection(
                    self.host, self.target_port
                )
            except OSError:
                writer.transport.abort()
                return
            self._writers.update((writer, upstream))
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(upstream_reader, writer))
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    made = TcpProxy(rabbitmq_url)
    yield made
    await made.close()


# topology


async def test_durable_quorum_topology_by_default(broker: Broker) -> None:
    transport = await broker.start()
    queue = broker.queue()
    await transport.declare(sub(queue, "orders.*"))
    await transport.declare(sub(queue, "orders.*"))  # idempotent
    async with broker.raw() as channel:
        # Declaring with exactly these settings succeeds only if they are the queue's own.
        await channel.declare_exchange(broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await channel.declare_queue(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead_letter_queue(queue),
            },
        )
        await channel.declare_queue(
            dead_letter_queue(queue), durable=True, arguments={"x-queue-type": "quorum"}
        )
    recorder = Recorder()
    await transport.consume(sub(queue, "orders.*"), recorder)
    await transport.publish(Message(name="orders.placed", body=b"1"))
    await wait_until(lambda: len(recorder.messages) == 1)
    await transport.publish(Message(name="orders.paid", body=b"2"))
    await wait_until(lambda: len(recorder.messages) == 2)
    assert [m.body for m in recorder.messages] == [b"1", b"2"], "bound once despite two declares"


async def test_classic_queue_type(broker: Broker) -> None:
    transport = await broker.start(queue_type="classic")
    queue = broker.queue()
    await transport.declare(sub(queue))
    async with broker.raw() as channel:
        arguments = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue(queue),
        }
        await channel.declare_queue(
            queue, durable=True, arguments={"x-queue-type": "classic", **arguments}
        )
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="'classic'"):
            await channel.declare_queue(
                queue, durable=True, arguments={"x-queue-type": "quorum", **arguments}
            )


async def test_mismatched_queue_is_a_configuration_error(broker: Broker) -> None:
    queue = broker.queue()
    async with broker.raw() as channel:
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})
    transport = await broker.start()  # wants quorum
    with pytest.raises(ConfigurationError) as caught:
        await transport.declare(sub(queue))
    text = str(caught.value)
    assert queue in text
    assert "inequivalent arg" in text, "RabbitMQ's word on what differs"
    assert "quorum" in text, "and what we want"
    assert "queue_type" in text and "delete" in text
    with pytest.raises(ConfigurationError):
        await transport.consume(sub(queue), Recorder())
    # The failure closed nothing that the transport needs.
    other = broker.queue("other")
    recorder = Recorder()
    await transport.consume(sub(other), recorder)
    await transport.publish(Message(name="test.event", body=b"still fine"))
    await wait_until(lambda: len(recorder.messages) == 1)


async def test_mismatched_exchange_fails_start(broker: Broker) -> None:
    async with broker.raw() as channel:
        await channel.declare_exchange(broker.exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    transport = broker.make()
    with pytest.raises(ConfigurationError, match=re.escape(broker.exchange)):
        await transport.start()
    with pytest.raises(TransportClosedError):
        await transport.publish(Message(name="test.event", body=b""))


async def test_broadcast_queue_is_exclusive_to_its_process(broker: Broker) -> None:
    first = await broker.start(auto_delete_topology=True)
    second = await broker.start(auto_delete_topology=True)
    base = broker.queue("cache")
    subscription = sub(base, broadcast=True)
    names = [first.consumer_queue(subscription), second.consumer_queue(subscription)]
    assert names[0] != names[1]
    assert all(name.startswith(f"{base}.") for name in names)
    recorders = [Recorder(), Recorder()]
    await first.consume(subscription, recorders[0])
    await second.consume(subscription, recorders[1])
    await first.publish(Message(name="test.event", body=b"flush"))
    await wait_until(lambda: all(len(r.messages) == 1 for r in recorders))
    async with broker.raw() as channel:
        with pytest.raises(aiormq.exceptions.ChannelLockedResource):
            await channel.declare_queue(names[0], passive=True)
    async with broker.raw() as channel:
        # The dead-letter queue is the shared one of the base name.
        await channel.declare_queue(dead_letter_queue(base), passive=True)
    await first.close()
    async with broker.raw() as channel:
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(names[0], passive=True)


# publishing


async def test_wire_format(broker: Broker) -> None:
    transport = await broker.start()
    queue = broker.queue()
    await transport.declare(sub(queue))
    published_at = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=timezone.utc)
    sent = Message(
        name="test.event",
        body=b'{"a": 1}',
        headers={"tenant": "acme"},
        correlation_id="corr",
        causation_id="cause",
        published_at=published_at,
        attempt=2,
    )
    await transport.publish(sent)
    async with broker.raw() as channel:
        raw = await (await channel.get_queue(queue)).get(no_ack=True)
    headers = dict(raw.headers)
    headers.pop("x-delivery-count", None)  # a quorum queue's own
    assert raw.body == sent.body
    assert raw.message_id == sent.id
    assert raw.type == "test.event"
    assert raw.routing_key == "test.event"
    assert raw.correlation_id == "corr"
    assert raw.content_type == "application/json"
    assert raw.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert raw.timestamp is not None
    assert int(raw.timestamp.timestamp()) == int(published_at.timestamp())
    assert headers == {
        "tenant": "acme",
        CAUSATION_HEADER: "cause",
        ATTEMPT_HEADER: 2,
        PUBLISHED_AT_HEADER: "2024-05-17T12:30:45.123456+00:00",
    }


async def test_published_at_survives_to_the_microsecond(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    queue = broker.queue()
    recorder = Recorder()
    await transport.consume(sub(queue), recorder)
    sent = Message(name="test.event", body=b"", headers={"x-bus-dead-letter-reason": "why"})
    await transport.publish(sent)
    await wait_until(lambda: len(recorder.messages) == 1)
    got = recorder.messages[0]
    assert got.published_at == sent.published_at
    assert got.causation_id is None
    assert got.headers == {"x-bus-dead-letter-reason": "why"}, "only the transport's are taken"


async def test_message_from_a_foreign_producer(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    queue = broker.queue()
    recorder = Recorder()
    await transport.consume(sub(queue, "legacy.#"), recorder)
    async with broker.raw() as channel:
        exchange = await channel.get_exchange(broker.exchange)
        await exchange.publish(
            aio_pika.Message(b"old", headers={"count": 5, "flag": True, "text": "yes"}),
            routing_key="legacy.thing",
        )
    await wait_until(lambda: len(recorder.messages) == 1)
    got = recorder.messages[0]
    assert got.name == "legacy.thing"
    assert got.body == b"old"
    assert got.id
    assert got.attempt == 1
    assert got.headers == {"count": "5", "flag": "True", "text": "yes"}


async def test_unroutable_is_logged_by_default(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    transport = await broker.start(auto_delete_topology=True)
    await transport.declare(sub(broker.queue()))
    lost = Message(name="nobody.listens", body=b"")
    with caplog.at_level(logging.WARNING, logger="fastapi_bus.rabbitmq"):
        await transport.publish(lost)
    assert any(
        "nobody.listens" in r.getMessage() and lost.id in r.getMessage() for r in caplog.records
    )


async def test_unroutable_can_raise(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True, unroutable="raise")
    await transport.declare(sub(broker.queue()))
    with pytest.raises(UnroutableError, match=r"nobody\.listens"):
        await transport.publish(Message(name="nobody.listens", body=b""))
    # A routable event right after still goes through on the same channel.
    await transport.publish(Message(name="test.event", body=b""))


async def test_unroutable_can_be_ignored(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    transport = await broker.start(auto_delete_topology=True, unroutable="ignore")
    await transport.declare(sub(broker.queue()))
    with caplog.at_level(logging.DEBUG, logger="fastapi_bus.rabbitmq"):
        await transport.publish(Message(name="nobody.listens", body=b""))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_send_to_a_missing_queue_raises(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    missing = broker.queue("missing")
    with pytest.raises(UnroutableError, match=re.escape(missing)):
        await transport.send(missing, Message(name="test.event", body=b""))
    with pytest.raises(UnroutableError, match=re.escape(missing)):
        await transport.send(missing, Message(name="test.event", body=b""), delay=0.1)


async def test_many_concurrent_publishers_on_one_connection(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    queue = broker.queue()
    seen: set[bytes] = set()

    async def consumer(message: Message) -> None:
        seen.add(message.body)

    await transport.consume(sub(queue, prefetch=200), consumer)
    bodies = [str(n).encode() for n in range(2000)]
    await asyncio.gather(*(transport.publish(Message(name="test.event", body=b)) for b in bodies))
    await wait_until(lambda: len(seen) == len(bodies), timeout=30)
    assert seen == set(bodies)


# delays


def test_delay_levels_never_round_down() -> None:
    assert list(DELAY_LEVELS_MS) == sorted(set(DELAY_LEVELS_MS))
    assert len(DELAY_LEVELS_MS) < 50, "few delay queues"
    for delay in (0.0001, 0.1, 0.25, 0.3, 1, 1.0001, 59.9, 3600, 86_400 * 27.9):
        level = _delay_level(delay)
        assert level >= delay * 1000
        assert level <= max(2 * delay * 1000, 250), "not much later than asked either"
    with pytest.raises(PublishError, match="longest"):
        _delay_level(86_400 * 60)


async def test_delayed_publish_is_routed_by_event_name(broker: Broker) -> None:
    transport = await broker.start()
    orders, invoices = Recorder(), Recorder()
    await transport.consume(sub(broker.queue("orders"), "orders.*"), orders)
    await transport.consume(sub(broker.queue("invoices"), "invoices.*"), invoices)
    sent = Message(name="orders.placed", body=b"later", headers={"k": "v"})
    start = time.monotonic()
    await transport.publish(sent, delay=0.2)
    await transport.publish(Message(name="orders.placed", body=b"later too"), delay=0.2)
    await wait_until(lambda: len(orders.messages) == 2)
    arrived = time.monotonic()
    assert arrived - start >= 0.2
    got = orders.messages[0]
    assert (got.id, got.body, got.headers) == (sent.id, b"later", {"k": "v"}), "no x-death"
    assert invoices.messages == []


async def test_delayed_send_reaches_only_its_queue(broker: Broker) -> None:
    transport = await broker.start()
    target, bystander = Recorder(), Recorder()
    target_queue = broker.queue("target")
    await transport.consume(sub(target_queue), target)
    await transport.consume(sub(broker.queue("bystander")), bystander)
    start = time.monotonic()
    await transport.send(target_queue, Message(name="test.event", body=b"retry"), delay=0.3)
    await wait_until(lambda: len(target.messages) == 1)
    assert time.monotonic() - start >= 0.3
    assert bystander.messages == []


async def test_publish_recovers_from_deleted_exchanges(broker: Broker) -> None:
    transport = await broker.start(unroutable="raise")
    queue = broker.queue()
    recorder = Recorder()
    await transport.consume(sub(queue), recorder)
    await transport.publish(Message(name="test.event", body=b"1"), delay=0.1)
    await wait_until(lambda: len(recorder.messages) == 1)
    delay_level = f"{broker.exchange}.delay.250ms.quorum"
    async with broker.raw() as channel:
        await channel.queue_delete(delay_level)
        await channel.exchange_delete(delay_level)
    await transport.publish(Message(name="test.event", body=b"2"), delay=0.1)
    await wait_until(lambda: len(recorder.messages) == 2)
    async with broker.raw() as channel:
        await channel.exchange_delete(broker.exchange)
    # The exchange is declared again, but the bindings went with the old one.
    with pytest.raises(UnroutableError):
        await transport.publish(Message(name="test.event", body=b"lost"))
    await transport.declare(sub(queue))
    await transport.publish(Message(name="test.event", body=b"3"))
    await wait_until(lambda: [m.body for m in recorder.messages] == [b"1", b"2", b"3"])


async def test_publish_with_a_too_long_delay_raises(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    with pytest.raises(PublishError):
        await transport.publish(Message(name="test.event", body=b""), delay=86_400 * 365)


# consuming


async def test_concurrency_below_prefetch(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    release = asyncio.Event()
    running = most = done = 0

    async def consumer(message: Message) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        done += 1

    await transport.consume(sub(broker.queue(), prefetch=10, concurrency=2), consumer)
    for n in range(12):
        await transport.publish(Message(name="test.event", body=str(n).encode()))
    await wait_until(lambda: running == 2)
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert most == 2
    release.set()
    await wait_until(lambda: done == 12)
    assert most == 2


async def test_close_returns_deliveries_that_had_not_started(broker: Broker) -> None:
    transport = await broker.start()
    queue = broker.queue()
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[bytes] = []

    async def consumer(message: Message) -> None:
        started.set()
        await release.wait()
        handled.append(message.body)

    await transport.consume(sub(queue, prefetch=5, concurrency=1), consumer)
    for n in range(5):
        await transport.publish(Message(name="test.event", body=str(n).encode()))
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.create_task(transport.close(grace=30))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(closing, 30)
    assert handled == [b"0"]
    reader = await broker.start()
    left = await reader.browse(queue)
    # A quorum queue puts returned messages at its tail, behind any never delivered.
    assert sorted(m.body for m in left) == [b"1", b"2", b"3", b"4"]


async def test_close_twice_and_use_after_close(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    await transport.consume(sub(broker.queue()), Recorder())
    await asyncio.gather(transport.close(grace=1), transport.close(grace=1))
    await transport.close()
    with pytest.raises(TransportClosedError):
        await transport.publish(Message(name="test.event", body=b""))
    with pytest.raises(TransportClosedError):
        await transport.declare(sub(broker.queue()))
    await broker.make().close()  # never started


async def test_browse_keeps_the_order_of_a_quorum_queue(broker: Broker) -> None:
    transport = await broker.start()
    queue = broker.queue()
    await transport.declare(sub(queue))
    for n in range(5):
        await transport.send(queue, Message(name="test.event", body=str(n).encode()))
    for _ in range(3):
        assert [m.body for m in await transport.browse(queue, limit=2)] == [b"0", b"1"]
    assert [m.body for m in await transport.browse(queue)] == [str(n).encode() for n in range(5)]
    assert await transport.browse(queue, limit=0) == []
    assert await transport.browse(f"{queue}.nothing-here") == []


# connections and credentials


async def test_password_never_appears(rabbitmq_url: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-Pa55word"
    url = with_password(rabbitmq_url, secret, port=free_port())
    transport = RabbitMQTransport(url, connect_timeout=0.5)
    assert secret not in transport.url and "***" in transport.url
    assert secret not in repr(transport)
    with caplog.at_level(logging.DEBUG), pytest.raises(TransportError) as caught:
        await transport.start()
    assert "cannot connect" in str(caught.value)
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert secret not in caplog.text
    assert any("retrying" in r.getMessage() for r in caplog.records)


async def test_wrong_credentials_fail_fast_without_the_password(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "not-the-Pa55word"
    transport = RabbitMQTransport(with_password(rabbitmq_url, secret), connect_timeout=30)
    with caplog.at_level(logging.DEBUG), pytest.raises(TransportError, match="credentials"):
        await transport.start()
    assert secret not in caplog.text


async def test_start_waits_for_the_broker(
    broker: Broker, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    transport = broker.make(proxy.url, connect_timeout=1, auto_delete_topology=True)
    transport.connect_timeout = 30  # as `fastapi-bus worker --connect-timeout` sets it
    with caplog.at_level(logging.WARNING, logger="fastapi_bus.rabbitmq"):
        starting = asyncio.create_task(transport.start())
        await wait_until(lambda: "retrying" in caplog.text)
        await proxy.listen()
        await asyncio.wait_for(starting, 30)
    recorder = Recorder()
    await transport.consume(sub(broker.queue()), recorder)
    await transport.publish(Message(name="test.event", body=b""))
    await wait_until(lambda: len(recorder.messages) == 1)


async def test_recovers_from_a_dropped_connection(broker: Broker, proxy: TcpProxy) -> None:
    await proxy.listen()
    transport = await broker.start(proxy.url, auto_delete_topology=True, reconnect_interval=0.1)
    seen: set[bytes] = set()

    async def consumer(message: Message) -> None:
        seen.add(message.body)

    queue = broker.queue()
    await transport.consume(sub(queue), consumer)
    for n in range(50):
        await transport.publish(Message(name="test.event", body=str(n).encode()))
    # Like a killed broker: no goodbye, the sockets just die, and it stays away until let back
    # (otherwise the reconnection can be over before the test sees it gone).
    await proxy.refuse()
    proxy.cut()
    await wait_until(lambda: not transport.connected)
    # These wait for the reconnection, then go through.
    publishing = asyncio.gather(
        *(
            transport.publish(Message(name="test.event", body=str(n).encode()))
            for n in range(50, 100)
        )
    )
    await proxy.listen()
    await publishing
    await wait_until(lambda: len(seen) == 100, timeout=30)
    assert transport.connected
    assert seen == {str(n).encode() for n in range(100)}


async def test_publish_gives_up_when_the_broker_stays_away(broker: Broker, proxy: TcpProxy) -> None:
    await proxy.listen()
    transport = await broker.start(
        proxy.url, auto_delete_topology=True, publish_timeout=0.5, reconnect_interval=0.1
    )
    queue = broker.queue()
    await transport.declare(sub(queue))
    await proxy.refuse()
    proxy.cut()
    with pytest.raises(TransportError, match="did not confirm"):
        await transport.publish(Message(name="test.event", body=b"lost"))
    await proxy.listen()
    recorder = Recorder()
    await transport.consume(sub(queue), recorder)
    await transport.publish(Message(name="test.event", body=b"kept"))
    await wait_until(lambda: [m.body for m in recorder.messages] == [b"kept"])


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        RabbitMQTransport("memory://")
    with pytest.raises(ConfigurationError):
        RabbitMQTransport("amqp://localhost/", queue_type="lazy")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RabbitMQTransport("amqp://localhost/", unroutable="shout")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RabbitMQTransport("amqp://localhost/", exchange="")
    with pytest.raises(ConfigurationError, match="amqps"):
        RabbitMQTransport("amqp://localhost/", ssl_context=ssl.create_default_context())


async def test_tls_settings_reach_the_connection(rabbitmq_url: str) -> None:
    # The test server speaks plain AMQP, so the TLS handshake fails: that it is attempted with
    # our context is what this shows.
    context = ssl.create_default_context()
    url = with_password(rabbitmq_url, "guest").replace("amqp://", "amqps://", 1)
    transport = RabbitMQTransport(url, ssl_context=context, connect_timeout=0.5)
    assert transport.url.startswith("amqps://")
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.start()
