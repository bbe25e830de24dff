"""The contract every transport keeps. Each test runs on memory:// and on RabbitMQ."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastapi_bus.core.exceptions import UnroutableError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription, dead_letter_queue
from tests.transports.conftest import TransportFactory
from tests.utils import wait_until, wait_until_async

pytestmark = pytest.mark.anyio


def sub(queue: str, *patterns: str, prefetch: int = 10, broadcast: bool = False) -> Subscription:
    return Subscription(
        queue=queue,
        patterns=patterns or ("contract.event",),
        prefetch=prefetch,
        broadcast=broadcast,
    )


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def bodies(self) -> list[bytes]:
        return [m.body for m in self.messages]


async def test_publish_delivers_every_field(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    recorder = Recorder()
    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), recorder)
    sent = Message(
        name="contract.event",
        body=b'{"n": 1}',
        headers={"tenant": "acme", "trace": "abc"},
        correlation_id="corr-1",
        causation_id="cause-1",
        attempt=3,
    )
    await transport.publish(sent)
    await wait_until(lambda: len(recorder.messages) == 1)
    got = recorder.messages[0]
    assert (got.id, got.name, got.body, got.correlation_id, got.causation_id, got.attempt) == (
        sent.id,
        sent.name,
        sent.body,
        "corr-1",
        "cause-1",
        3,
    )
    assert got.headers == {"tenant": "acme", "trace": "abc"}
    assert got.content_type == "application/json"
    assert abs((got.published_at - sent.published_at).total_seconds()) < 1
    assert got.redelivered is False


async def test_fan_out_to_every_bound_queue(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    first, second, other = Recorder(), Recorder(), Recorder()
    for suffix, recorder, pattern in (
        ("a", first, "contract.event"),
        ("b", second, "contract.event"),
        ("c", other, "contract.other"),
    ):
        await transport.declare(sub(f"{queue_name}.{suffix}", pattern))
        await transport.consume(sub(f"{queue_name}.{suffix}", pattern), recorder)
    for n in range(5):
        await transport.publish(Message(name="contract.event", body=str(n).encode()))
    await wait_until(lambda: len(first.messages) == 5 and len(second.messages) == 5)
    assert first.bodies() == second.bodies() == [str(n).encode() for n in range(5)]
    assert other.messages == []


async def test_topic_patterns(new_transport: TransportFactory, queue_name: str) -> None:
    transport = await new_transport()
    star, hash_ = Recorder(), Recorder()
    await transport.declare(sub(f"{queue_name}.star", "orders.*"))
    await transport.declare(sub(f"{queue_name}.hash", "orders.#"))
    await transport.consume(sub(f"{queue_name}.star", "orders.*"), star)
    await transport.consume(sub(f"{queue_name}.hash", "orders.#"), hash_)
    for name in ("orders.placed", "orders.eu.placed", "orders", "invoices.sent"):
        await transport.publish(Message(name=name, body=b"{}"))
    await wait_until(lambda: len(hash_.messages) == 3)
    await wait_until(lambda: len(star.messages) == 1)
    assert [m.name for m in star.messages] == ["orders.placed"]
    assert sorted(m.name for m in hash_.messages) == ["orders", "orders.eu.placed", "orders.placed"]


async def test_competing_consumers_share_one_queue(
    new_transport: TransportFactory, queue_name: str
) -> None:
    replicas = [await new_transport(), await new_transport()]
    seen: list[tuple[int, bytes]] = []

    def consumer_for(index: int) -> Recorder:
        class Replica(Recorder):
            async def __call__(self, message: Message) -> None:
                seen.append((index, message.body))
                await asyncio.sleep(0)

        return Replica()

    for index, transport in enumerate(replicas):
        await transport.declare(sub(queue_name, prefetch=1))
        await transport.consume(sub(queue_name, prefetch=1), consumer_for(index))
    for n in range(40):
        await replicas[0].publish(Message(name="contract.event", body=str(n).encode()))
    await wait_until(lambda: len(seen) >= 40)
    bodies = sorted(int(body) for _, body in seen)
    assert bodies == list(range(40)), "each message is handled exactly once across replicas"


async def test_return_acks(new_transport: TransportFactory, queue_name: str) -> None:
    transport = await new_transport()
    recorder = Recorder()
    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), recorder)
    await transport.publish(Message(name="contract.event", body=b"1"))
    await wait_until(lambda: len(recorder.messages) == 1)
    await transport.close(grace=5)
    # A fresh consumer on the same broker gets nothing: the message was acknowledged.
    again = await new_transport()
    assert await again.browse(queue_name) == []


async def test_publish_many_delivers_in_order(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    recorder = Recorder()
    subscription = Subscription(queue=queue_name, patterns=("contract.event",), concurrency=1)
    await transport.declare(subscription)
    await transport.consume(subscription, recorder)
    bodies = [str(n).encode() for n in range(30)]
    await transport.publish_many([(Message(name="contract.event", body=b), None) for b in bodies])
    await wait_until(lambda: len(recorder.messages) == len(bodies))
    assert recorder.bodies() == bodies


async def test_raise_redelivers(new_transport: TransportFactory, queue_name: str) -> None:
    transport = await new_transport()
    calls: list[Message] = []

    async def flaky(message: Message) -> None:
        calls.append(message)
        if len(calls) == 1:
            raise RuntimeError("boom")

    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), flaky)
    sent = Message(name="contract.event", body=b"x")
    await transport.publish(sent)
    await wait_until(lambda: len(calls) == 2)
    assert [m.id for m in calls] == [sent.id, sent.id]
    assert [m.redelivered for m in calls] == [False, True]


async def test_unfinished_work_returns_to_the_queue_on_close(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    started = asyncio.Event()

    async def stuck(message: Message) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes

    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), stuck)
    sent = Message(name="contract.event", body=b"x")
    await transport.publish(sent)
    await asyncio.wait_for(started.wait(), 10)
    await transport.close(grace=0.05)
    survivor = await new_transport()
    recorder = Recorder()
    await survivor.consume(sub(queue_name), recorder)
    await wait_until(lambda: len(recorder.messages) == 1)
    assert recorder.messages[0].id == sent.id
    assert recorder.messages[0].redelivered is True


async def test_close_lets_in_flight_work_finish(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(message: Message) -> None:
        started.set()
        await release.wait()
        finished.append(message.id)

    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), slow)
    sent = Message(name="contract.event", body=b"x")
    await transport.publish(sent)
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.create_task(transport.close(grace=30))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(closing, 30)
    assert finished == [sent.id]
    later = await new_transport()
    assert await later.browse(queue_name) == [], "the finished message was acknowledged"


async def test_delay_is_a_lower_bound(new_transport: TransportFactory, queue_name: str) -> None:
    transport = await new_transport()
    arrivals: dict[bytes, float] = {}

    async def consumer(message: Message) -> None:
        arrivals[message.body] = time.monotonic()

    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), consumer)
    start = time.monotonic()
    await transport.publish(Message(name="contract.event", body=b"published"), delay=0.3)
    await transport.send(queue_name, Message(name="contract.event", body=b"sent"), delay=0.3)
    await transport.publish(Message(name="contract.event", body=b"now"))
    await wait_until(lambda: len(arrivals) == 3)
    assert arrivals[b"now"] < arrivals[b"published"]
    assert arrivals[b"published"] - start >= 0.3
    assert arrivals[b"sent"] - start >= 0.3


async def test_prefetch_bounds_unacked_messages(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    release = asyncio.Event()
    running = 0
    most = 0
    done = 0

    async def consumer(message: Message) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        done += 1

    subscription = sub(queue_name, prefetch=3)
    await transport.declare(subscription)
    await transport.consume(subscription, consumer)
    for n in range(10):
        await transport.publish(Message(name="contract.event", body=str(n).encode()))
    await wait_until(lambda: running == 3)
    # Give the transport every chance to over-deliver before we look again.
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert most == 3
    release.set()
    await wait_until(lambda: done == 10)
    assert most == 3


async def test_send_and_dead_letter_and_browse(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    await transport.declare(sub(queue_name))
    first = Message(name="contract.event", body=b"1", headers={"reason": "bad"})
    second = Message(name="contract.event", body=b"2")
    await transport.dead_letter(queue_name, first)
    await transport.dead_letter(queue_name, second)
    stored = await transport.browse(dead_letter_queue(queue_name))
    assert [(m.id, m.body, m.headers) for m in stored] == [
        (first.id, b"1", {"reason": "bad"}),
        (second.id, b"2", {}),
    ]
    # Browsing does not consume.
    assert len(await transport.browse(dead_letter_queue(queue_name))) == 2
    recorder = Recorder()
    await transport.consume(sub(queue_name), recorder)
    await transport.send(queue_name, second)
    await wait_until(lambda: len(recorder.messages) == 1)
    assert recorder.messages[0].id == second.id


async def test_broadcast_reaches_every_process(
    new_transport: TransportFactory, queue_name: str
) -> None:
    processes = [await new_transport(), await new_transport()]
    recorders = [Recorder(), Recorder()]
    subscription = sub(queue_name, broadcast=True)
    for transport, recorder in zip(processes, recorders, strict=True):
        await transport.declare(subscription)
        await transport.consume(subscription, recorder)
    await processes[0].publish(Message(name="contract.event", body=b"hello"))
    await wait_until(lambda: all(len(r.messages) == 1 for r in recorders))
    assert [r.bodies() for r in recorders] == [[b"hello"], [b"hello"]]


async def test_send_to_a_missing_queue_is_an_error(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    with pytest.raises(UnroutableError):
        await transport.send(f"{queue_name}.missing", Message(name="contract.event", body=b"x"))


async def test_pull_release_ack_and_purge(new_transport: TransportFactory, queue_name: str) -> None:
    transport = await new_transport()
    await transport.declare(sub(queue_name))
    sent = [Message(name="contract.event", body=str(n).encode()) for n in range(3)]
    for message in sent:
        await transport.send(queue_name, message)
    await wait_until_async(lambda: transport.browse(queue_name), 3)
    first = await transport.pull(queue_name)
    second = await transport.pull(queue_name)
    assert first is not None
    assert second is not None
    assert (first.message.id, second.message.id) == (sent[0].id, sent[1].id)
    await first.ack()
    await second.release()
    remaining = await transport.browse(queue_name)
    assert sorted(m.id for m in remaining) == sorted([sent[1].id, sent[2].id])
    assert (first.message.body, second.message.body) == (b"0", b"1")
    assert await transport.pull(f"{queue_name}.nothing-here") is None
    assert await transport.purge(queue_name) == 2
    assert await transport.browse(queue_name) == []
    assert await transport.pull(queue_name) is None
    assert await transport.purge(f"{queue_name}.nothing-here") == 0


async def test_stop_consuming_keeps_publishing(
    new_transport: TransportFactory, queue_name: str
) -> None:
    transport = await new_transport()
    assert transport.connected
    recorder = Recorder()
    await transport.declare(sub(queue_name))
    await transport.consume(sub(queue_name), recorder)
    await transport.publish(Message(name="contract.event", body=b"before"))
    await wait_until(lambda: len(recorder.messages) == 1)
    await transport.stop_consuming(grace=5)
    await transport.publish(Message(name="contract.event", body=b"after"))
    await wait_until_async(lambda: transport.browse(queue_name), 1)
    assert [m.body for m in await transport.browse(queue_name)] == [b"after"]
    assert recorder.bodies() == [b"before"]
    assert transport.connected
    await transport.close(grace=1)
    assert not transport.connected
