"""A producer far faster than its consumer: the process's memory stays flat.

    .venv/bin/python benchmarks/slow_consumer.py --url memory://
    .venv/bin/python benchmarks/slow_consumer.py --url amqp://guest:guest@localhost/

Publishes N events for each N in ``--events`` (default 2,000, 10,000 and 50,000) as fast as
possible to one handler that takes ``--work`` seconds per event (one at a time), and prints the
peak of Python memory (tracemalloc) during each run. With backpressure the peak does not grow
with N: ``memory://`` queues hold at most ``--max-queue-size`` messages and the publisher waits
for room; on RabbitMQ the consumer holds at most its prefetch and the rest wait on the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
import uuid
from typing import Any

from pydantic import BaseModel

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.transports import transport_from_url


class Tick(BaseModel):
    n: int
    payload: str


async def run_once(url: str, events: int, work: float, max_queue_size: int) -> tuple[int, float]:
    """The peak of traced memory in bytes, and the seconds the run took."""
    router = EventRouter()
    finished = asyncio.Event()
    handled = 0

    @router.on(Tick, prefetch=10, concurrency=1)
    async def slow(event: Tick) -> None:
        nonlocal handled
        await asyncio.sleep(work)
        handled += 1
        if handled == events:
            finished.set()

    options: dict[str, Any] = {}
    if url.startswith("amqp"):
        options = {"exchange": f"bench-{uuid.uuid4().hex[:8]}", "auto_delete_topology": True}
    else:
        options = {"max_queue_size": max_queue_size}
    bus = EventBus(
        transport_from_url(url, **options), service=f"bench{uuid.uuid4().hex[:6]}", routers=[router]
    )
    await bus.start()
    await bus.start_consuming()
    body = "x" * 1000
    tracemalloc.start()
    start = time.perf_counter()
    for n in range(events):
        await bus.publish(Tick(n=n, payload=body))
    await asyncio.wait_for(finished.wait(), timeout=3600)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await bus.close(grace=5)
    return peak, elapsed


async def run(url: str, sizes: list[int], work: float, max_queue_size: int) -> None:
    print(f"url={url.split('@')[-1]} work={work}s/event max_queue_size={max_queue_size}")
    for events in sizes:
        peak, elapsed = await run_once(url, events, work, max_queue_size)
        print(f"  {events:>7,} events: peak {peak / 2**20:6.1f} MiB ({elapsed:.1f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--events", type=int, nargs="+", default=[2_000, 10_000, 50_000])
    parser.add_argument("--work", type=float, default=0.0)
    parser.add_argument("--max-queue-size", type=int, default=1_000)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.events, args.work, args.max_queue_size))


if __name__ == "__main__":
    main()
