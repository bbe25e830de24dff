"""Slow consumers: a producer far faster than its consumers is held back, so memory stays flat.

On ``memory://`` the queue is bounded (``max_queue_size``) and a publisher waits for room; on
RabbitMQ a consumer holds at most ``prefetch`` messages and the rest wait on the broker.
"""

from __future__ import annotations

import asyncio

import pytest

from fastapi_bus import EventBus, EventRouter, MemoryTransport
from tests.helpers import OrderPlaced
from tests.utils import wait_until

pytestmark = pytest.mark.anyio


def gated(gate: asyncio.Event, started: list[str], done: list[str]) -> EventRouter:
    events = EventRouter()

    @events.on(OrderPlaced, prefetch=5, concurrency=1)
    async def slow(event: OrderPlaced) -> None:
        started.append(event.order_id)
        await gate.wait()
        done.append(event.order_id)

    return events


async def test_memory_a_full_queue_makes_the_publisher_wait() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    done: list[str] = []
    transport = MemoryTransport("memory://", max_queue_size=50)
    bus = EventBus(transport, service="shop", routers=[gated(gate, started, done)])
    await bus.start()
    await bus.start_consuming()
    queue = transport._require_broker().queues[bus.queue_for(bus.routes[0])]
    longest = 0

    async def produce() -> None:
        nonlocal longest
        for n in range(1_000):
            await bus.publish(OrderPlaced(order_id=str(n), total=1))
            longest = max(longest, len(queue))

    try:
        producer = asyncio.create_task(produce())
        await wait_until(lambda: len(queue) == 50, what="the queue to fill")
        assert not producer.done(), "the publisher waits for room"
        assert started == ["0"], "one call at a time"
        gate.set()
        await asyncio.wait_for(producer, 60)
        await wait_until(lambda: len(done) == 1_000, timeout=60)
    finally:
        gate.set()
        await bus.close(grace=1)
    assert longest <= 50
    assert done == [str(n) for n in range(1_000)]
