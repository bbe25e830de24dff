"""What is particular to the Kafka transport: URLs and names, in-order commits, groups that
share partitions, restarts that resume from committed offsets, and the bus on Kafka.

The broker tests run on a Tansu broker that the session starts (tests/kafka_broker.py), or on
the Kafka at ``FASTAPI_BUS_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from functools import partial

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from fastapi_bus import EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.core import headers as H
from fastapi_bus.core.exceptions import ConfigurationError, TransportError
from fastapi_bus.core.names import pattern_matches
from fastapi_bus.transports import transport_from_url
from fastapi_bus.transports.base import Subscription, dead_letter_queue
from fastapi_bus.transports.kafka import KafkaTransport
from fastapi_bus.transports.kafka.handoff import Handoff, KeyPartitioner
from fastapi_bus.transports.kafka.mapping import (
    _time_text,
    decode,
    encode,
    encode_record,
    partition_key,
    read,
)
from fastapi_bus.transports.kafka.naming import Names
from fastapi_bus.transports.kafka.offsets import OffsetTracker
from tests.helpers import OrderPlaced
from tests.transports.conftest import kafka_transport
from tests.utils import wait_until, wait_until_async

# URLs, names and mappings


def test_url_names_the_servers_and_hides_the_password() -> None:
    transport = transport_from_url("kafka://app:s3cret@k1:9092,k2:9093?security_protocol=SASL_SSL")
    assert isinstance(transport, KafkaTransport)
    assert transport.url == "kafka://app:***@k1:9092,k2:9093?security_protocol=SASL_SSL"
    assert "s3cret" not in repr(transport)
    assert "s3cret" not in str(transport.asyncapi("server"))


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("kafka://", "names no bootstrap server"),
        ("kafka://k1", "needs a port"),
        ("kafka://k1:9092?linger=5", "unknown Kafka URL parameter 'linger'"),
        ("kafka://u:topsecret@k1?x=1", "needs a port"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(error)) as caught:
        KafkaTransport(url)
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    "pattern", ["orders.placed", "orders.*", "orders.#", "#.placed", "#", "*.eu.*", "a:b.c_d"]
)
def test_topic_regexes_match_what_patterns_match(pattern: str) -> None:
    names = Names("bus")
    regex = re.compile(names.event_regex((pattern,)))
    for name in ("orders", "orders.placed", "orders.eu.placed", "invoices.placed", "a:b.c_d",
                 "a_b.c_d", "x.eu.y", "orders_placed"):  # fmt: skip
        topic = names.event(name)
        assert bool(regex.fullmatch(topic)) == pattern_matches(pattern, name), (pattern, name)


def test_escaped_topic_names_stay_distinct() -> None:
    names = Names("bus")
    topics = {names.event(n) for n in ("a:b", "a_b", "a__b", "a_-b", "a-b")}
    assert len(topics) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", t) for t in topics)


def test_a_message_travels_as_value_and_headers() -> None:
    sent = Message(
        name="orders.placed",
        body=b"{}",
        headers={"tenant": "acme", "partition-key": "order-7"},
        correlation_id="c",
        attempt=2,
        redelivered=True,
    )
    got = decode(sent.body, encode(sent))
    assert got == sent
    assert partition_key(sent) == b"order-7"
    assert partition_key(Message(name="orders.placed", body=b"")) == b"orders.placed"
    foreign = decode(b"raw", [("source", b"other")], name="x")
    assert (foreign.name, foreign.body, foreign.headers) == ("x", b"raw", {"source": "other"})


#: The headers most records carry, in the order the bus writes them.
THREE = ("bus-id", "bus-name", "bus-at")
#: Records the bus cannot read: a header, and what the dead-letter reason says about it.
MALFORMED = [
    (("bus-attempt", b"abc"), "'bus-attempt' is not a whole number of 1 or more: b'abc'"),
    (("bus-attempt", b"\xff"), "'bus-attempt' is not UTF-8 text: b'\\xff'"),
    (("bus-attempt", "\u00b2".encode()), "'bus-attempt' is not a whole number"),  # "²"
    (("bus-attempt", b"9" * 5000), "'bus-attempt' is not a whole number"),
    (("bus-attempt", b"0"), "'bus-attempt' is not a whole number"),
    (("bus-at", b"yesterday"), "'bus-at' is not an ISO 8601 time: b'yesterday'"),
    (("bus-at", b"\xff"), "'bus-at' is not UTF-8 text"),
    (("bus-id", b"\xfe\xff"), "'bus-id' is not UTF-8 text"),
    (("bus-name", b"\xff"), "'bus-name' is not UTF-8 text"),
    (("bus-redelivered", b"yes"), "'bus-redelivered' is not 1 or 0: b'yes'"),
    (("tenant", b"\xff"), "'tenant' is not UTF-8 text"),
]


@pytest.mark.parametrize(("header", "reason"), MALFORMED)
def test_a_malformed_header_is_reported_not_raised(header: tuple[str, bytes], reason: str) -> None:
    headers = [*encode(Message(name="orders.placed", body=b"{}")), header]
    message, problem = read(b"{}", headers)
    assert problem is not None and reason in problem
    assert len(problem) < 200, "a long header is cut short in the reason"
    assert message.body == b"{}" and message.attempt == 1
    assert decode(b"{}", headers) == message.replace(
        id=decode(b"{}", headers).id, published_at=decode(b"{}", headers).published_at
    )


@pytest.mark.parametrize(("header", "reason"), [m for m in MALFORMED if m[0][0] in THREE])
def test_a_malformed_header_of_the_usual_three_is_reported(
    header: tuple[str, bytes], reason: str
) -> None:
    # A record with just the headers most records carry is read on a shorter path.
    usual = encode(Message(name="orders.placed", body=b"{}"))
    assert [key for key, _ in usual] == list(THREE)
    headers = [header if key == header[0] else (key, raw) for key, raw in usual]
    message, problem = read(b"{}", headers)
    assert problem is not None and reason in problem
    assert message.name == ("" if header[0] == "bus-name" else "orders.placed")


def test_the_usual_three_headers_are_read_as_written() -> None:
    sent = Message(name="orders.placed", body=b"{}")
    assert read(sent.body, encode(sent)) == (sent, None)
    naive = [(k, v) for k, v in encode(sent) if k != "bus-at"] + [
        ("bus-at", b"2026-01-02T03:04:05")
    ]
    message, problem = read(b"{}", naive)
    assert problem is None and message.published_at.tzinfo is not None
    blank = [(k, b"" if k == "bus-id" else v) for k, v in encode(sent)]
    assert read(b"{}", blank)[0].id not in ("", sent.id)  # a new id, as for a record without


def test_the_publish_time_is_written_as_isoformat_writes_it() -> None:
    # Written from the number the message keeps, without making the datetime first.
    rng = random.Random(7)
    now = time.time()
    times = [now + rng.uniform(-3e9, 3e9) for _ in range(20_000)]
    times += [now + n * 1e-7 for n in range(20_000)]  # every microsecond, and the halves
    times += [0.0, 1.0, 1.5, 1e9 + 5e-7, 1e9 + 1.5e-6, 1e9 + 0.9999995, 1733500000.9999996]
    for at in times:
        expected = datetime.fromtimestamp(at, timezone.utc).isoformat().encode()
        assert _time_text(at) == expected, at
    sent = Message(name="a", body=b"", headers={"partition-key": "k-1"})
    assert encode_record(sent) == (encode(sent), partition_key(sent)) == (encode(sent), b"k-1")
    assert read(sent.body, encode(sent)) == (sent, None)


def test_records_go_to_the_partitions_the_default_partitioner_picks() -> None:
    # Keyed records must land where other Kafka clients (murmur2, as Java's) put them.
    rng = random.Random(11)
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    for count in range(1, 40):
        partitions = list(range(count))
        for _ in range(100):
            key = rng.randbytes(rng.randrange(0, 30))
            expected = theirs(key, partitions, partitions)
            assert ours(key, partitions, partitions) == expected  # hashed
            assert ours(key, partitions, partitions) == expected  # remembered
    assert ours(None, [0, 1, 2], [1]) == 1


def test_well_formed_records_have_no_problem() -> None:
    sent = Message(name="a", body=b"", attempt=12, redelivered=True, content_type="text/plain")
    assert read(sent.body, encode(sent)) == (sent, None)
    assert read(b"raw", [("source", b"other"), ("empty", None), ("bus-future", b"\xff")])[1] is None


def test_offsets_commit_only_past_finished_records() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.take("p0", offset)
    tracker.finish("p0", 7)
    tracker.finish("p0", 6)
    assert tracker.ready() == {"p0": 5}, "7 and 6 are done, but 5 is not"
    tracker.committed({"p0": 5})
    assert tracker.ready() == {}
    tracker.finish("p0", 5)
    assert tracker.ready() == {"p0": 8}


def test_a_record_taken_before_its_partition_was_forgotten_holds_nothing_after() -> None:
    class Record:
        def __init__(self, offset: int) -> None:
            self.offset = offset

    tracker = OffsetTracker()
    before = tracker.take_records("p0", [Record(5), Record(6)])
    tracker.forget({"p0"})  # a rebalance took it away; it came back
    after = tracker.take_records("p0", [Record(5), Record(6)])
    assert 5 not in before and len(tracker) == 2
    tracker.finish_open(before, 5)  # a handler of the old assignment finishing late
    assert tracker.ready() == {"p0": 5} and len(tracker) == 2, "the new 5 is still open"
    tracker.finish_open(after, 5)
    tracker.finish_open(after, 6)
    assert tracker.ready() == {"p0": 7} and len(tracker) == 0


# on a broker

pytestmark = [pytest.mark.anyio]
broker = pytest.mark.kafka


@pytest.fixture
async def transports(kafka_bootstrap: str) -> AsyncIterator[list[KafkaTransport]]:
    made: list[KafkaTransport] = []
    yield made
    for transport in reversed(made):
        await transport.close(grace=1)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def started(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> KafkaTransport:
    transport = kafka_transport(kafka_bootstrap, prefix)
    assert isinstance(transport, KafkaTransport)
    await transport.start()
    transports.append(transport)
    return transport


def sub(queue: str, concurrency: int | None = None) -> Subscription:
    return Subscription(queue=queue, patterns=("orders.placed",), concurrency=concurrency)


def placed(n: int, key: str | None = None) -> Message:
    headers = {"partition-key": key} if key else {}
    return Message(name="orders.placed", body=str(n).encode(), headers=headers)


@broker
async def test_a_later_message_done_first_waits_for_the_earlier_before_its_commit(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    release_first = asyncio.Event()
    done: list[bytes] = []

    async def handler(message: Message) -> None:
        if message.body == b"0":
            await release_first.wait()
        done.append(message.body)

    subscription = sub("shop.pack", concurrency=2)
    await transport.consume(subscription, handler)
    await transport.publish(placed(0))  # one key: one partition, in this order
    await transport.publish(placed(1))
    await wait_until(lambda: done == [b"1"], timeout=20)
    # 1 is done, but its offset cannot be committed before 0's: both still wait.
    assert [m.body for m in await transport.browse("shop.pack")] == [b"0", b"1"]
    release_first.set()
    await wait_until_async(lambda: transport.browse("shop.pack"), 0, timeout=20)
    assert done == [b"1", b"0"]


def handled_at_least(seen: dict[int, list[bytes]], count: int) -> bool:
    return sum(len(bodies) for bodies in seen.values()) >= count


@broker
async def test_two_consumers_in_one_group_share_the_partitions(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    seen: dict[int, list[bytes]] = {0: [], 1: []}

    def handler(index: int) -> object:
        async def handle(message: Message) -> None:
            seen[index].append(message.body)

        return handle

    for index in (0, 1):
        transport = await started(kafka_bootstrap, prefix, transports)
        await transport.consume(sub("shop.pick"), handler(index))  # type: ignore[arg-type]
    sent = 0
    # Until the group has settled on sharing, one member may get everything: keep publishing
    # (a bounded number of) keyed messages until both have handled some.
    while not (seen[0] and seen[1]):
        assert sent < 600, "the second consumer never got a partition"
        for _ in range(6):
            await transports[0].publish(placed(sent, key=f"order-{sent}"))
            sent += 1
        await wait_until(partial(handled_at_least, seen, sent), timeout=20)
    everything = sorted(int(b) for b in seen[0] + seen[1])
    assert everything == list(range(sent)), "each message handled once, by one member"


@broker
async def test_a_restarted_consumer_resumes_from_its_committed_offsets(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    first = await started(kafka_bootstrap, prefix, transports)
    got: list[bytes] = []

    async def record(message: Message) -> None:
        got.append(message.body)

    await first.consume(sub("shop.bill"), record)
    for n in range(3):
        await first.publish(placed(n))
    await wait_until(lambda: len(got) == 3, timeout=20)
    await first.close(grace=5)
    publisher = await started(kafka_bootstrap, prefix, transports)
    for n in range(3, 6):
        await publisher.publish(placed(n))
    again: list[bytes] = []

    async def record_again(message: Message) -> None:
        again.append(message.body)

    second = await started(kafka_bootstrap, prefix, transports)
    await second.consume(sub("shop.bill"), record_again)
    await wait_until(lambda: len(again) == 3, timeout=20)
    assert again == [b"3", b"4", b"5"], "only what was published while it was down"
    assert got == [b"0", b"1", b"2"]


@broker
async def test_purge_moves_the_group_past_what_waits(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    await transport.declare(sub("shop.audit"))
    for n in range(3):
        await transport.dead_letter("shop.audit", placed(n))
    dlq = dead_letter_queue("shop.audit")
    assert [m.body for m in await transport.browse(dlq)] == [b"0", b"1", b"2"]
    assert await transport.purge(dlq) == 3
    assert await transport.browse(dlq) == []
    assert await transport.purge("shop.nothing") == 0


@broker
async def test_pulling_from_a_consumed_queue_is_refused_clearly(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    got: list[Message] = []

    async def slow(message: Message) -> None:
        got.append(message)
        await asyncio.Event().wait()

    await transport.consume(sub("shop.ship"), slow)
    await transport.send("shop.ship", placed(1))
    await transport.send("shop.ship", placed(2))
    await wait_until(lambda: len(got) == 2, timeout=20)
    tools = await started(kafka_bootstrap, prefix, transports)
    pulled = await tools.pull("shop.ship")
    assert pulled is not None
    with pytest.raises(TransportError, match="no consumer of the queue is running"):
        await pulled.ack()


@broker
async def test_the_bus_retries_through_the_delay_topic_dead_letters_and_replays(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    deliveries: list[tuple[str, int]] = []
    down = [True]
    events = EventRouter(retry=RetryPolicy(attempts=1, backoff=0, delays=(0.2,)))

    @events.on(OrderPlaced)
    async def broken(event: OrderPlaced, msg: Message) -> None:
        deliveries.append((msg.id, msg.attempt))
        if down[0]:
            raise ConnectionError("payment service down")

    transport = kafka_transport(kafka_bootstrap, prefix)
    bus = EventBus(transport, service="shop", routers=[events])
    await bus.start()
    try:
        await bus.start_consuming()
        message_id = await bus.publish(OrderPlaced(order_id="1", total=1), headers={"t": "a"})
        dlq = dead_letter_queue(bus.queue_for(bus.routes[0]))
        await wait_until_async(lambda: transport.browse(dlq), 1, timeout=30)
        assert deliveries == [(message_id, 1), (message_id, 2)]
        (letter,) = await bus.dead_letters.list()
        assert letter.message.id == message_id
        assert letter.exception_type == "builtins.ConnectionError"
        assert letter.message.headers["t"] == "a"
        down[0] = False
        assert await bus.dead_letters.replay() == 1
        await wait_until(lambda: len(deliveries) == 3, timeout=20)
        assert deliveries[2][0] == message_id
        assert await transport.browse(dlq) == []
    finally:
        await bus.close(grace=1)


@broker
async def test_records_the_bus_cannot_read_are_dead_lettered_and_the_consumer_goes_on(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    got: list[Message] = []

    async def handler(message: Message) -> None:
        got.append(message)

    await transport.consume(sub("shop.read", concurrency=1), handler)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        topic = transport.names.event("orders.placed")
        good = placed(99)
        for n, (header, _) in enumerate(MALFORMED):
            headers = [*encode(placed(n)), header]
            # One key: one partition, so the good message comes after every malformed one.
            await producer.send_and_wait(topic, str(n).encode(), key=b"k", headers=headers)
        await producer.send_and_wait(topic, good.body, key=b"k", headers=encode(good))
    finally:
        await producer.stop()
    await wait_until(lambda: len(got) == 1, timeout=20, what="the good message")
    assert got[0].id == good.id
    dlq = dead_letter_queue("shop.read")
    await wait_until_async(lambda: transport.browse(dlq), len(MALFORMED), timeout=20)
    letters = sorted(await transport.browse(dlq), key=lambda m: int(m.body))
    for letter, (header, reason) in zip(letters, MALFORMED, strict=True):
        assert reason in letter.headers[H.DEAD_LETTER_REASON], header
        assert letter.headers[H.QUEUE] == "shop.read"
    # Everything was committed: nothing waits in the queue, nothing comes again.
    await wait_until_async(lambda: transport.browse("shop.read"), 0, timeout=20)
    assert len(got) == 1


@broker
async def test_handlers_that_wait_run_concurrently_up_to_the_limit(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    release = asyncio.Event()
    running: list[bytes] = []
    most = 0
    done: list[bytes] = []

    async def handler(message: Message) -> None:
        nonlocal most
        running.append(message.body)
        most = max(most, len(running))
        await release.wait()
        running.remove(message.body)
        done.append(message.body)

    subscription = Subscription(
        queue="shop.wrap", patterns=("orders.placed",), prefetch=10, concurrency=4
    )
    await transport.declare(subscription)
    # Waiting before the consumer starts: they come in one fetch.
    await asyncio.gather(*(transport.publish(placed(n, key=f"o{n}")) for n in range(12)))
    await transport.consume(subscription, handler)
    await wait_until(lambda: len(running) == 4, timeout=20)
    release.set()
    await wait_until(lambda: len(done) == 12, timeout=20)
    assert most == 4
    assert sorted(int(b) for b in done) == list(range(12))
    await wait_until_async(lambda: transport.browse("shop.wrap"), 0, timeout=20)


# Handing records to the producer


class _Producer:
    """A producer whose ``send`` waits while its batch is "full", as aiokafka's does."""

    def __init__(self) -> None:
        self.room = asyncio.Event()
        self.room.set()
        self.handed: list[bytes | None] = []
        self.refused: set[bytes] = set()
        #: Kafka's answer to the records handed over from now on, if it refuses them.
        self.later: Exception | None = None

    async def send(self, topic: str, value: bytes | None, **_: object) -> asyncio.Future[None]:
        await self.room.wait()
        if value in self.refused:
            raise ValueError(f"too large: {value!r}")
        self.handed.append(value)
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.later is not None:
            answer.set_exception(self.later)
        else:
            answer.set_result(None)
        return answer


async def test_records_that_wait_for_room_are_handed_over_together_in_order() -> None:
    producer = _Producer()
    handoff = Handoff(producer)
    producer.room.clear()  # the batch is full: the first send waits, the others queue up
    first = asyncio.ensure_future(handoff.hand("t", b"0", [], None))
    await asyncio.sleep(0)
    # Queued behind the first: each call gives the future of its answer at once.
    answers = [await handoff.hand("t", str(n).encode(), [], None) for n in range(1, 6)]
    producer.refused.add(b"3")
    answers[3].cancel()  # record 4's publisher is gone before its turn: not sent
    await asyncio.sleep(0)
    assert producer.handed == []
    producer.room.set()
    await (await first)
    results = await asyncio.gather(*answers, return_exceptions=True)
    assert producer.handed == [b"0", b"1", b"2", b"5"]
    assert isinstance(results[2], ValueError)  # record 3: refused, through its answer
    assert isinstance(results[3], asyncio.CancelledError)
    assert [results[0], results[1], results[4]] == [None, None, None]  # Kafka's answers
    # Free again: the next record is handed over at once, by its own call.
    await handoff.hand("t", b"6", [], None)
    assert producer.handed[-1] == b"6"
    await handoff.close()


async def test_a_queued_record_gets_kafkas_refusal_through_its_answer() -> None:
    producer = _Producer()
    handoff = Handoff(producer)
    producer.room.clear()
    first = asyncio.ensure_future(handoff.hand("t", b"0", [], None))
    await asyncio.sleep(0)
    answer = await handoff.hand("t", b"1", [], None)
    producer.later = ValueError("not taken")  # Kafka refuses the records from now on
    producer.room.set()
    await first
    with pytest.raises(ValueError, match="not taken"):
        await answer
    await handoff.close()


async def read_topic(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """The values of the first ``count`` records of ``topic``, partition by partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await client.start()
    try:
        partitions = await client._client._wait_on_metadata(topic)
        client.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        found: dict[int, list[bytes]] = {}

        async def enough() -> bool:
            batch = await client.getmany(timeout_ms=200)
            for tp, records in batch.items():
                found.setdefault(tp.partition, []).extend(r.value or b"" for r in records)
            return sum(len(v) for v in found.values()) >= count

        deadline = asyncio.get_running_loop().time() + 20
        while not await enough():
            assert asyncio.get_running_loop().time() < deadline, f"only {found} in {topic}"
        return [value for p in sorted(found) for value in found[p]]
    finally:
        await client.stop()


@broker
async def test_concurrent_publishes_are_taken_in_the_order_they_were_called(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    # Enough for several full batches of one partition (one key), so that some wait for room.
    bodies = [str(n).encode() * 40 for n in range(300)]
    huge = b"x" * 2_000_000  # more than the producer's largest request: refused
    messages = [Message(name="orders.placed", body=b) for b in bodies]
    messages.insert(150, Message(name="orders.placed", body=huge))
    results = await asyncio.gather(
        *(transport.publish(m) for m in messages), return_exceptions=True
    )
    failed = [i for i, r in enumerate(results) if r is not None]
    assert failed == [150]
    assert isinstance(results[150], TransportError)
    assert "did not take" in str(results[150])
    topic = transport.names.event("orders.placed")
    assert await read_topic(kafka_bootstrap, topic, len(bodies)) == bodies


@broker
async def test_publish_many_sends_in_order_and_stops_at_a_failure(
    kafka_bootstrap: str, prefix: str, transports: list[KafkaTransport]
) -> None:
    transport = await started(kafka_bootstrap, prefix, transports)
    first = [(placed(n), None) for n in range(200)]
    await transport.publish_many(first)
    topic = transport.names.event("orders.placed")
    assert await read_topic(kafka_bootstrap, topic, 200) == [str(n).encode() for n in range(200)]
    huge = Message(name="orders.placed", body=b"x" * 2_000_000)
    with pytest.raises(TransportError, match="did not take"):
        await transport.publish_many([(placed(200), None), (huge, None), (placed(201), None)])
    await transport.publish(placed(202))
    # The one before the failure was taken; the one after it was not sent.
    values = await read_topic(kafka_bootstrap, topic, 202)
    assert values[200:] == [b"200", b"202"]
