"""What the Redis transport adds to the contract: claims of dead consumers' messages, several
processes, restarts with persistence, foreign entries, and secrets kept out of sight."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.asyncio

from fastapi_bus import EventBus, EventRouter, RetryPolicy
from fastapi_bus.core.exceptions import ConfigurationError, TransportError
from fastapi_bus.core.headers import DEAD_LETTER_REASON
from fastapi_bus.core.messages import Message
from fastapi_bus.transports import transport_from_url
from fastapi_bus.transports.base import Subscription, dead_letter_queue
from fastapi_bus.transports.redis import RedisTransport
from fastapi_bus.transports.redis import consumer as redis_consumer
from tests.certificates import HOST, Certificates, make_certificates
from tests.helpers import OrderPlaced
from tests.utils import free_port, wait_until, wait_until_async, wait_until_sync

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

WORK = Subscription(queue="work", patterns=("work.*",), prefetch=4)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Consumers:
    """``tests.redis_consumer`` processes of one test, each writing to a file of its own."""

    def __init__(self, url: str, prefix: str, folder: Path) -> None:
        self._command = [sys.executable, "-m", "tests.redis_consumer", url, prefix, "work"]
        self._folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *extra: str) -> Path:
        out = self._folder / f"{name}.txt"
        root = Path(__file__).resolve().parents[2]
        self.processes.append(subprocess.Popen([*self._command, str(out), *extra], cwd=root))
        wait_until_sync(lambda: "ready" in lines(out), timeout=30, what=f"{name} ready")
        return out

    async def killed_mid_message(self, transport: RedisTransport, body: bytes) -> list[Message]:
        """Start a consumer that hangs on ``body``, kill it while it holds the message, then
        consume the queue with ``transport``; what ``transport`` gets (as it gets it)."""
        out = self.start("doomed", "hang")
        await transport.publish(Message(name="work.item", body=body))
        await wait_until(lambda: f"started {body.decode()}" in lines(out), timeout=30)
        doomed = self.processes[-1]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        got: list[Message] = []

        async def survivor(message: Message) -> None:
            got.append(message)

        await transport.consume(WORK, survivor)
        return got


@pytest.fixture
def consumers(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Consumers]:
    """Starts consumer processes; kills what is left at the end."""
    made = Consumers(redis_url, redis_prefix, tmp_path)
    yield made
    for process in made.processes:
        process.kill()
        process.wait()


async def test_a_dead_consumers_message_is_claimed_by_another(
    redis_url: str, redis_prefix: str, consumers: Consumers
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix, claim_idle=1)
    await transport.start()
    try:
        got = await consumers.killed_mid_message(transport, b"1")
        await wait_until(lambda: len(got) == 1, timeout=30, what="the claimed message")
        assert got[0].body == b"1"
        assert got[0].redelivered is True
        assert got[0].attempt == 2, "the delivery the dead consumer did not survive counts"
    finally:
        await transport.close(grace=1)


async def test_dead_consumers_leave_the_group_once_they_hold_nothing(
    redis_url: str, redis_prefix: str, consumers: Consumers
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix, claim_idle=0.5)
    await transport.start()
    client = redis.asyncio.Redis.from_url(redis_url)
    stream = f"{{{redis_prefix}}}:q:work"
    try:
        # A consumer process killed holding a message, a consumer that never read anything,
        # and one that took a message and was never heard of again.
        doomed = consumers.start("doomed", "hang")
        await transport.publish(Message(name="work.item", body=b"1"))
        await wait_until(lambda: "started 1" in lines(doomed), timeout=30)
        consumers.processes[-1].kill()
        consumers.processes[-1].wait()
        await client.xgroup_createconsumer(stream, "bus", "ghost")
        await transport.publish(Message(name="work.item", body=b"2"))
        assert await client.xreadgroup("bus", "holder", {stream: ">"}, count=1)
        got: list[bytes] = []

        async def survivor(message: Message) -> None:
            got.append(message.body)

        await transport.consume(WORK, survivor)

        async def others() -> list[str]:
            listed = await client.xinfo_consumers(stream, "bus")
            return [n for info in listed if (n := info["name"].decode()) != transport._name]

        await wait_until_async(others, 0, 30)
        await wait_until(lambda: sorted(got) == [b"1", b"2"], what="both claimed messages")
    finally:
        await client.aclose()
        await transport.close(grace=1)


async def test_a_message_that_kills_its_consumers_is_dead_lettered(
    redis_url: str, redis_prefix: str, consumers: Consumers
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix, claim_idle=1, max_deliveries=1)
    await transport.start()
    try:
        got = await consumers.killed_mid_message(transport, b"deadly")
        await wait_until_async(lambda: transport.browse(dead_letter_queue("work")), 1, 30)
        (dead,) = await transport.browse(dead_letter_queue("work"))
        assert dead.body == b"deadly"
        assert "without being acknowledged" in dead.headers[DEAD_LETTER_REASON]
        assert got == []
        assert await transport.browse("work") == []
    finally:
        await transport.close(grace=1)


async def test_pruning_keeps_a_consumer_that_holds_entries(
    redis_url: str, redis_prefix: str
) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    await transport.start()
    client = redis.asyncio.Redis.from_url(redis_url)
    stream = f"{{{redis_prefix}}}:q:work"
    try:
        await transport.declare(WORK)
        await client.xgroup_createconsumer(stream, "bus", "ghost")
        await transport.publish(Message(name="work.item", body=b"1"))
        assert await client.xreadgroup("bus", "holder", {stream: ">"}, count=1)
        session = transport._session
        assert session is not None
        assert await session.prune_consumers(stream, "nobody", -1) == 1
        (left,) = await client.xinfo_consumers(stream, "bus")
        assert (left["name"], left["pending"]) == (b"holder", 1)
    finally:
        await client.aclose()
        await transport.close(grace=1)


async def test_processes_compete_for_one_queue(
    redis_url: str, redis_prefix: str, consumers: Consumers
) -> None:
    outs = [consumers.start("first"), consumers.start("second")]
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    await transport.start()
    try:
        for n in range(200):
            await transport.publish(Message(name="work.item", body=str(n).encode()))

        def handled() -> list[list[str]]:
            return [[line for line in lines(out) if line != "ready"] for out in outs]

        await wait_until(lambda: sum(map(len, handled())) >= 200, timeout=60)
        first, second = handled()
        bodies = [line.split()[0] for line in first + second]
        assert sorted(bodies, key=int) == [str(n) for n in range(200)], "each exactly once"
        assert first and second, "both processes took a share"
    finally:
        await transport.close(grace=1)


async def test_a_slow_handler_keeps_its_message(redis_url: str, redis_prefix: str) -> None:
    slow, other = (RedisTransport(redis_url, prefix=redis_prefix, claim_idle=0.3) for _ in "ab")
    deliveries: list[str] = []
    done = asyncio.Event()

    async def handle(message: Message) -> None:
        deliveries.append(message.id)
        # Longer than several claim periods: the claim must be renewed meanwhile.
        await asyncio.sleep(1.5)
        done.set()

    for transport in (slow, other):
        await transport.start()
    try:
        await slow.consume(WORK, handle)
        await slow.publish(Message(name="work.item", body=b"x"))
        await wait_until(lambda: len(deliveries) == 1)
        await other.consume(WORK, handle)
        await asyncio.wait_for(done.wait(), 30)
        # Acknowledged and deleted once the handler has returned, and handled only once.
        await wait_until_async(lambda: slow.browse("work"), 0)
        assert len(deliveries) == 1
    finally:
        for transport in (slow, other):
            await transport.close(grace=5)


async def test_a_lost_stream_is_declared_again(redis_url: str, redis_prefix: str) -> None:
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    await transport.start()
    got: list[bytes] = []

    async def handle(message: Message) -> None:
        got.append(message.body)

    try:
        await transport.consume(WORK, handle)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.delete("{" + redis_prefix + "}:q:work")
        finally:
            await client.aclose()
        await transport.publish(Message(name="work.item", body=b"after"))
        await wait_until(lambda: got == [b"after"], timeout=30)
    finally:
        await transport.close(grace=1)


@pytest.mark.parametrize("hiredis", [False, True], ids=["packed", "xreadgroup"])
async def test_entries_waiting_in_a_batch_arrive_intact(
    redis_url: str, redis_prefix: str, hiredis: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries already waiting are read in batches (packed by a script unless hiredis parses
    the replies): each one's fields and bytes survive, whatever they hold (spaces, newlines,
    binary, empty values, several fields)."""
    monkeypatch.setattr(redis_consumer, "HIREDIS_AVAILABLE", hiredis)
    transport = RedisTransport(redis_url, prefix=redis_prefix)
    await transport.start()
    try:
        subscription = Subscription(queue="batch", patterns=("batch.*",), prefetch=8)
        await transport.declare(subscription)
        sent = [
            Message(name="batch.item", body=b"one two\nthree", headers={"k": "v w"}),
            Message(name="batch.item", body=b""),
            Message(name="batch.item", body=bytes(range(256)), correlation_id="c 1"),
        ] + [Message(name="batch.item", body=str(n).encode()) for n in range(20)]
        for message in sent:
            await transport.publish(message)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            stream = "{" + redis_prefix + "}:q:batch"
            await client.xadd(stream, {"a": b"1 2", "b\n": b"", "": b"\x00"})
        finally:
            await client.aclose()
        got: list[Message] = []

        async def collect(message: Message) -> None:
            got.append(message)

        await transport.consume(subscription, collect)
        await wait_until(lambda: len(got) == len(sent) + 1, timeout=30)
        assert [(m.id, m.body, m.headers, m.correlation_id) for m in got[: len(sent)]] == [
            (m.id, m.body, m.headers, m.correlation_id) for m in sent
        ]
        assert got[-1].body == b'{"a": "1 2", "b\\n": "", "": "\\u0000"}'
    finally:
        await transport.close()


async def test_foreign_entries_are_dead_lettered_with_a_reason(
    redis_url: str, redis_prefix: str
) -> None:
    events = EventRouter(retry=RetryPolicy.never())
    handled: list[str] = []

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    bus = EventBus(RedisTransport(redis_url, prefix=redis_prefix), service="shop", routers=[events])
    await bus.start()
    try:
        await bus.start_consuming()
        stream = "{" + redis_prefix + "}:q:" + bus.queue_for(bus.routes[0])
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.xadd(stream, {"foo": "bar"})
            await client.xadd(stream, {"m": b"\xff\xfe not json \x00"})
            await client.xadd(stream, {"m": b'{"id": 5, "name": []}\n{"order_id": 1}'})
        finally:
            await client.aclose()
        await bus.publish(OrderPlaced(order_id="good", total=1))
        await wait_until(lambda: handled == ["good"], timeout=30)
        await wait_until_async(lambda: bus.dead_letters.list(), 3, timeout=30)
        letters = await bus.dead_letters.list()
        assert all("validat" in letter.reason for letter in letters), [
            letter.reason for letter in letters
        ]
    finally:
        await bus.close(grace=1)


def test_the_password_never_shows() -> None:
    transport = transport_from_url("redis://:s3cret@127.0.0.1:6379/0")
    assert isinstance(transport, RedisTransport)
    assert "s3cret" not in repr(transport)
    assert "s3cret" not in transport.url
    assert "***" in transport.url


async def test_a_wrong_password_fails_at_once_without_showing_it(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path, "--requirepass", "right-pass")
    server.start()
    try:
        url = server.url.replace("redis://", "redis://:wr0ng-pass@", 1)
        transport = RedisTransport(url, connect_timeout=5)
        with pytest.raises(TransportError, match="credentials") as raised:
            await transport.start()
        assert "wr0ng-pass" not in str(raised.value)
        right = RedisTransport(server.url.replace("redis://", "redis://:right-pass@", 1))
        await right.start()
        await right.close()
    finally:
        server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Certificates]]:
    """A ``redis-server`` that speaks only TLS, with a certificate from a throwaway authority."""
    server = shutil.which("redis-server")
    if server is None or shutil.which("openssl") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server and openssl are needed for the TLS test (CI=true)")
        pytest.skip("redis-server or openssl is not installed")
    certificates = make_certificates(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certificates.server_cert),
            "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
            "--logfile", "server.log",
        ],
    )  # fmt: skip
    try:
        wait_until_sync(lambda: _answers(port), timeout=30, what="redis-server with TLS")
        yield port, certificates
    finally:
        process.kill()
        process.wait()


async def test_rediss_publishes_and_consumes_over_tls(
    tls_redis: tuple[int, Certificates],
) -> None:
    port, certificates = tls_redis
    url = f"rediss://{HOST}:{port}/0?ssl_ca_certs={quote(str(certificates.ca))}"
    transport = transport_from_url(url)
    got: list[Message] = []

    async def handle(message: Message) -> None:
        got.append(message)

    await transport.start()
    try:
        await transport.consume(WORK, handle)
        await transport.publish(Message(name="work.tls", body=b"secret"))
        await wait_until(lambda: len(got) == 1, what="the message sent over TLS")
        assert got[0].body == b"secret"
    finally:
        await transport.close(grace=1)


async def test_a_certificate_that_does_not_verify_fails_at_once(
    tls_redis: tuple[int, Certificates],
) -> None:
    port, _ = tls_redis
    # No ssl_ca_certs: the system's authorities do not know the throwaway one.
    transport = RedisTransport(f"rediss://{HOST}:{port}/0", connect_timeout=600)
    with pytest.raises(TransportError, match="does not verify"):
        await asyncio.wait_for(transport.start(), 60)


def test_bad_settings_fail_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisTransport("http://localhost")
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisTransport(prefix="a{b}")
    with pytest.raises(ConfigurationError, match="claim_idle"):
        RedisTransport(claim_idle=0)


# A server of the test's own, with persistence, that it can stop and start.


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class OwnRedis:
    """A ``redis-server`` on a spare port that keeps its data in an append-only file."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.port = free_port()
        self._options = options
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        self.process = subprocess.Popen(
            [
                server, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self._directory), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--logfile", "server.log",
                *self._options,
            ],
        )  # fmt: skip
        wait_until_sync(lambda: _answers(self.port), timeout=30, what="redis-server to start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is needed for the restart test (CI=true)")
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.kill()
            server.process.wait()


@pytest.fixture
async def pair(own_redis: OwnRedis) -> AsyncIterator[tuple[RedisTransport, RedisTransport]]:
    prefix = f"restart-{uuid.uuid4().hex[:8]}"
    publisher, worker = (
        RedisTransport(own_redis.url, prefix=prefix, publish_timeout=60) for _ in "pw"
    )
    await worker.start()
    await publisher.start()
    yield publisher, worker
    await publisher.close(grace=1)
    await worker.close(grace=1)


TOTAL = int(os.environ.get("FASTAPI_BUS_RESTART_EVENTS", "3000"))
PUBLISHERS = 8


async def test_every_published_event_is_handled_across_a_restart(
    own_redis: OwnRedis, pair: tuple[RedisTransport, RedisTransport]
) -> None:
    publisher, worker = pair
    handled: list[int] = []
    published: set[int] = set()
    failed: set[int] = set()
    published_when_stopped: list[int] = []

    async def handler(message: Message) -> None:
        handled.append(int(message.body))

    numbers = iter(range(TOTAL))

    async def publish_some() -> None:
        for number in numbers:
            try:
                await publisher.publish(Message(name="work.item", body=str(number).encode()))
            except TransportError:
                failed.add(number)  # allowed: the caller was told
            else:
                published.add(number)

    async def restart() -> None:
        await wait_until(lambda: len(published) >= TOTAL // 10, timeout=60)
        await asyncio.to_thread(own_redis.stop)
        published_when_stopped.append(len(published))
        await asyncio.to_thread(own_redis.start)

    await worker.consume(Subscription(queue="work", patterns=("work.*",), prefetch=100), handler)
    await asyncio.gather(restart(), *(publish_some() for _ in range(PUBLISHERS)))
    assert published_when_stopped[0] < TOTAL, "the restart happened while publishing"
    assert len(published) + len(failed) == TOTAL
    await wait_until(lambda: published <= set(handled), timeout=60, what="every published event")
    duplicates = len(handled) - len(set(handled))
    print(f"restart: {len(published)} published, {len(failed)} failed, {duplicates} duplicates")
    # The consumer came back by itself: an event published after the restart is handled.
    await publisher.publish(Message(name="work.item", body=str(TOTAL).encode()))
    await wait_until(lambda: TOTAL in handled, timeout=30)
