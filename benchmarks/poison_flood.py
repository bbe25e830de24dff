"""Poison flood: the throughput of good events when one in ten is poisoned, against a clean run.

    .venv/bin/python benchmarks/poison_flood.py --url memory:// --events 10000
    .venv/bin/python benchmarks/poison_flood.py --url amqp://guest:guest@localhost/ --events 10000

In the poisoned run, one event in twenty does not validate (published raw, as a foreign producer
would) and one in twenty makes its handler raise (retried in process and once through the
broker, then dead-lettered). It checks that exactly those are dead-lettered and every good event
is handled once, and prints the good events' rate in both runs and their ratio (the goal: the
poisoned run within 2x of the clean one). RabbitMQ runs use transient test topology.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import statistics
import time
import uuid
from typing import Any

from pydantic import BaseModel

from fastapi_bus import CounterMetrics, EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.transports import transport_from_url


class Order(BaseModel):
    order_id: str
    total: float


class DeadLetters(CounterMetrics):
    """Counts, and tells when ``expected`` messages have been dead-lettered."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.all_dead = asyncio.Event()
        if expected == 0:
            self.all_dead.set()

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        super().dead_lettered(handler, event, reason)
        if self.counts["dead_lettered", handler] == self.expected:
            self.all_dead.set()


#: The policies compared: redelivery through the broker only, and in-process retries first
#: (whose backoff holds a concurrency slot while it waits).
POLICIES = {
    "broker redelivery only (attempts=1)": RetryPolicy(attempts=1, delays=(0.1,)),
    "3 in-process attempts, then redelivery": RetryPolicy(
        attempts=3, backoff=0.01, max_backoff=0.05, delays=(0.1,)
    ),
}


async def run_once(
    url: str, events: int, poisoned: bool, publishers: int, policy: RetryPolicy
) -> float:
    """Seconds until every good event is handled (then it waits for the dead letters)."""
    router = EventRouter()
    handled: collections.Counter[str] = collections.Counter()

    good = {str(n) for n in range(events) if not poisoned or n % 10 != 0}
    all_good = asyncio.Event()
    metrics = DeadLetters(events // 10 if poisoned else 0)

    @router.on(Order, retry=policy)
    async def process(event: Order) -> None:
        if event.order_id.startswith("raise-"):
            raise RuntimeError("poison")
        handled[event.order_id] += 1
        if len(handled) == len(good):
            all_good.set()

    options: dict[str, Any] = {}
    if url.startswith("amqp"):
        options = {"exchange": f"bench-{uuid.uuid4().hex[:8]}", "auto_delete_topology": True}
    bus = EventBus(
        transport_from_url(url, **options),
        service=f"bench{uuid.uuid4().hex[:6]}",
        routers=[router],
        prefetch=50,
        metrics=metrics,
    )
    await bus.start()
    await bus.start_consuming()
    poison: set[str] = set()

    async def publish(n: int) -> None:
        if poisoned and n % 20 == 0:
            body = json.dumps({"order_id": str(n), "total": "a lot"}).encode()
            message = Message(name="Order", body=body)
            await bus.transport.publish(message)
            poison.add(message.id)
        elif poisoned and n % 20 == 10:
            poison.add(await bus.publish(Order(order_id=f"raise-{n}", total=n)))
        else:
            await bus.publish(Order(order_id=str(n), total=n))

    async def publisher(offset: int) -> None:
        for n in range(offset, events, publishers):
            await publish(n)

    start = time.perf_counter()
    await asyncio.gather(*(publisher(i) for i in range(publishers)))
    await asyncio.wait_for(all_good.wait(), timeout=600)
    elapsed = time.perf_counter() - start
    await asyncio.wait_for(metrics.all_dead.wait(), timeout=600)
    dead = await bus.transport.browse(f"{bus.queue_for(bus.routes[0])}.dlq", limit=events)
    await bus.close(grace=5)
    assert set(handled) == good and set(handled.values()) == {1}, "each good event once"
    assert sorted(m.id for m in dead) == sorted(poison), "exactly the poisoned ones"
    return elapsed


async def run(url: str, events: int, publishers: int, rounds: int) -> None:
    print(
        f"url={url.split('@')[-1]} events={events} publishers={publishers} prefetch=50 "
        f"rounds={rounds} (clean and poisoned runs interleaved; medians)"
    )
    for name, policy in POLICIES.items():
        clean: list[float] = []
        flood: list[float] = []
        for _ in range(rounds):  # interleaved, so that noise on the machine hits both alike
            clean.append(await run_once(url, events, False, publishers, policy))
            flood.append(await run_once(url, events, True, publishers, policy))
        clean_rate = events / statistics.median(clean)
        flood_rate = events * 0.9 / statistics.median(flood)
        ratio = clean_rate / flood_rate
        print(f"  {name}:")
        print(f"    clean run: {clean_rate:,.0f} good events/s")
        print(f"    10% poison: {flood_rate:,.0f} good events/s")
        print(f"    ratio clean/poisoned: {ratio:.2f} ({'within' if ratio <= 2 else 'OVER'} 2x)")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # not a line per failure
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.events, args.publishers, args.rounds))


if __name__ == "__main__":
    main()
