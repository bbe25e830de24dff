"""Poison flood: one event in ten fails validation or makes its handler raise. Exactly those
end in the dead-letter queue; every other one is handled once.

The full 10,000-event run, with the throughput of the good events against a clean run, is a
benchmark: ``benchmarks/poison_flood.py``.
"""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

from fastapi_bus import EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.transports.base import dead_letter_queue
from tests.helpers import OrderPlaced
from tests.reliability.conftest import BusFactory
from tests.utils import wait_until

pytestmark = pytest.mark.anyio

#: Events per run, by transport protocol (any other transport: the RabbitMQ count).
EVENTS = {"memory": 2_000, "amqp": 1_000}


async def publish_flood(bus: EventBus, count: int) -> tuple[set[str], set[str]]:
    """Publish ``count`` events, one in ten poisoned; returns (good order ids, poison ids)."""
    good: set[str] = set()
    poison: set[str] = set()

    async def one(n: int) -> None:
        if n % 20 == 0:  # a payload that does not validate, from a foreign producer
            body = json.dumps({"order_id": str(n), "total": "a lot"}).encode()
            message = Message(name="OrderPlaced", body=body)
            await bus.transport.publish(message)
            poison.add(message.id)
        elif n % 20 == 10:  # valid, but its handler raises
            poison.add(await bus.publish(OrderPlaced(order_id=f"raise-{n}", total=n)))
        else:
            await bus.publish(OrderPlaced(order_id=str(n), total=n))
            good.add(str(n))

    for start in range(0, count, 100):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 100, count))))
    return good, poison


async def test_exactly_the_poisoned_events_end_in_the_dead_letter_queue(
    new_bus: BusFactory,
) -> None:
    handled: collections.Counter[str] = collections.Counter()
    events = EventRouter()

    @events.on(OrderPlaced, prefetch=50, retry=RetryPolicy(attempts=2, backoff=0, delays=(0.01,)))
    async def process(event: OrderPlaced) -> None:
        if event.order_id.startswith("raise-"):
            raise RuntimeError(f"cannot process order {event.order_id}")
        handled[event.order_id] += 1

    bus = await new_bus(events)
    count = EVENTS.get(bus.transport.protocol, EVENTS["amqp"])
    good, poison = await publish_flood(bus, count)
    assert len(poison) == count // 10
    counts = bus.metrics.counts  # type: ignore[attr-defined]
    await wait_until(
        lambda: len(handled) == len(good) and counts["dead_lettered", "process"] == len(poison),
        timeout=120,
        what="every good event handled and every poisoned one dead-lettered",
    )
    dlq = dead_letter_queue(bus.queue_for(bus.routes[0]))
    letters = await bus.transport.browse(dlq, limit=10 * len(poison))
    assert sorted(letter.id for letter in letters) == sorted(poison)
    assert set(handled) == good
    assert [order for order, times in handled.items() if times != 1] == [], "each handled once"
    assert await bus.transport.browse(bus.queue_for(bus.routes[0])) == []
