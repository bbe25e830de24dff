"""What only the embedded broker has to show: bounded queues and named brokers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

import pytest

from fastapi_bus.core.exceptions import ConfigurationError, TransportClosedError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription
from fastapi_bus.transports.memory import MemoryTransport
from fastapi_bus.transports.memory_queues import MemoryQueue
from tests.utils import wait_until

pytestmark = pytest.mark.anyio


async def test_a_full_queue_makes_publishers_wait() -> None:
    transport = MemoryTransport("memory://?max_queue_size=2")
    await transport.start()
    subscription = Subscription(queue="bounded", patterns=("e",), prefetch=1)
    await transport.declare(subscription)
    for n in range(2):
        await transport.publish(Message(name="e", body=str(n).encode()))
    blocked = asyncio.create_task(transport.publish(Message(name="e", body=b"2")))
    for _ in range(20):  # give the publisher every chance to get through
        await asyncio.sleep(0)
    assert not blocked.done(), "the third publish waits for room"
    seen: list[bytes] = []

    async def consumer(message: Message) -> None:
        seen.append(message.body)

    await transport.consume(subscription, consumer)
    await asyncio.wait_for(blocked, 10)
    await wait_until(lambda: len(seen) == 3)
    assert seen == [b"0", b"1", b"2"]
    await transport.close()


async def test_publish_nowait_sends_only_what_needs_no_waiting() -> None:
    """``publish_nowait`` (the bus's fast path) publishes into one queue with room, and
    leaves to ``publish`` what would wait or route elsewhere: a full queue keeps its
    backpressure."""
    transport = MemoryTransport("memory://?max_queue_size=1")
    assert not transport.publish_nowait(Message(name="e", body=b"early")), "not started"
    await transport.start()
    await transport.declare(Subscription(queue="one", patterns=("e",)))
    await transport.declare(Subscription(queue="a", patterns=("fan",)))
    await transport.declare(Subscription(queue="b", patterns=("fan",)))
    assert transport.publish_nowait(Message(name="e", body=b"first"))
    assert not transport.publish_nowait(Message(name="e", body=b"second")), "the queue is full"
    assert not transport.publish_nowait(Message(name="fan", body=b"x")), "two queues"
    assert not transport.publish_nowait(Message(name="nobody", body=b"x")), "no queue"
    assert [m.body for m in await transport.browse("one")] == [b"first"]
    assert await transport.browse("a") == await transport.browse("b") == []
    await transport.close()
    assert not transport.publish_nowait(Message(name="e", body=b"late")), "closed"


async def test_requeued_messages_always_fit() -> None:
    transport = MemoryTransport(max_queue_size=1)
    await transport.start()
    subscription = Subscription(queue="tight", patterns=("e",), prefetch=2)
    await transport.declare(subscription)
    calls: list[bytes] = []

    async def flaky(message: Message) -> None:
        calls.append(message.body)
        if len(calls) <= 2:
            raise RuntimeError("fails twice")

    await transport.consume(subscription, flaky)
    await transport.publish(Message(name="e", body=b"a"))
    await transport.publish(Message(name="e", body=b"b"))
    await wait_until(lambda: transport.pending() == 0)
    assert sorted(set(calls)) == [b"a", b"b"]
    await transport.close()


async def test_named_brokers_are_shared_and_private_ones_are_not() -> None:
    one, two = MemoryTransport("memory://shared-x"), MemoryTransport("memory://shared-x")
    alone = MemoryTransport()
    for transport in (one, two, alone):
        await transport.start()
    await one.declare(Subscription(queue="q", patterns=("e",)))
    await two.publish(Message(name="e", body=b"x"))
    assert [m.body for m in await one.browse("q")] == [b"x"]
    assert await alone.browse("q") == []
    for transport in (one, two, alone):
        await transport.close()


async def test_bad_settings_and_closed_transports_are_explained() -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        MemoryTransport("amqp://localhost/")
    with pytest.raises(ConfigurationError, match="max_queue_size"):
        MemoryTransport(max_queue_size=0)
    transport = MemoryTransport()
    with pytest.raises(TransportClosedError):
        await transport.publish(Message(name="e", body=b"x"))


async def test_a_message_wakes_one_waiting_consumer() -> None:
    queue = MemoryQueue("q", maxsize=10)
    woken: list[str] = []

    async def consumer(name: str) -> None:
        await queue.get()
        woken.append(name)

    tasks = [asyncio.create_task(consumer(name)) for name in "abc"]
    await wait_until(lambda: queue.waiting == 3)
    assert queue.offer(Message(name="e", body=b"1"))
    assert queue.waiting == 2, "the other consumers sleep on"
    await wait_until(lambda: woken == ["a"])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_wake_up_is_passed_on_by_a_consumer_that_leaves() -> None:
    queue = MemoryQueue("q", maxsize=10)
    first = asyncio.create_task(queue.get())
    await wait_until(lambda: queue.waiting == 1)
    second = asyncio.create_task(queue.get())
    await wait_until(lambda: queue.waiting == 2)
    queue.offer(Message(name="e", body=b"1"))
    first.cancel()  # woken, but cancelled before it could take the message
    message = await asyncio.wait_for(second, 10)
    assert message.body == b"1"
    assert first.cancelled()


async def test_waiting_messages_are_data_and_each_consumer_gets_its_own() -> None:
    transport = MemoryTransport()
    await transport.start()
    one = Subscription(queue="one", patterns=("e",))
    two = Subscription(queue="two", patterns=("e",))
    for subscription in (one, two):
        await transport.declare(subscription)
    sent = Message(name="e", body=b"x", headers={"k": "v"}, correlation_id="c")
    read = Message(name="e", body=b"z")
    assert read.headers == {}  # made when read: an empty dict
    await transport.publish(sent)
    await transport.publish(Message(name="e", body=b"y"))
    await transport.publish(read)
    queue = transport._require_broker().queues["one"]
    # What waits holds no object the garbage collector would have to sweep, once it has
    # looked at it (a tuple is let go at its first collection).
    gc.collect()
    assert [gc.is_tracked(state) for state in queue._items] == [False, False, False]
    browsed, _, _ = await transport.browse("one")
    browsed.headers["k"] = "changed by a browser"
    got: dict[str, list[Message]] = {"one": [], "two": []}

    def consumer(name: str) -> Callable[[Message], Awaitable[None]]:
        async def consume(message: Message) -> None:
            if message.body == b"x":
                message.headers[name] = "changed by a consumer"
            got[name].append(message)

        return consume

    await transport.consume(one, consumer("one"))
    await wait_until(lambda: len(got["one"]) == 3)
    await transport.consume(two, consumer("two"))
    await wait_until(lambda: len(got["two"]) == 3)
    first, second = got["one"][0], got["two"][0]
    assert first == sent.replace(headers={"k": "v", "one": "changed by a consumer"})
    assert second.headers == {"k": "v", "two": "changed by a consumer"}
    assert sent.headers == {"k": "v"}
    assert got["one"][1].headers == {} and got["one"][1].published_at.tzinfo is not None
    assert [m.body for m in got["two"]] == [b"x", b"y", b"z"]
    await transport.close()
