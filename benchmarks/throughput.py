"""Publish and handle N events, and report the rates.

    .venv/bin/python benchmarks/throughput.py --url memory:// --events 20000
    .venv/bin/python benchmarks/throughput.py --url amqp://guest:guest@localhost/ --events 20000

Publishers run concurrently (``--publishers``); one handler counts deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from pydantic import BaseModel

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.transports import transport_from_url


class Tick(BaseModel):
    n: int
    payload: str


async def run(url: str, events: int, publishers: int, prefetch: int) -> None:
    router = EventRouter()
    handled = 0
    done = asyncio.Event()

    @router.on(Tick)
    async def count(event: Tick) -> None:
        nonlocal handled
        handled += 1
        if handled >= events:
            done.set()

    options = {"exchange": f"bench-{uuid.uuid4().hex[:8]}"} if url.startswith("amqp") else {}
    bus = EventBus(
        transport_from_url(url, **options),
        service=f"bench{uuid.uuid4().hex[:6]}",
        routers=[router],
        prefetch=prefetch,
    )
    await bus.start()
    await bus.start_consuming()
    body = "x" * 200

    async def publisher(offset: int) -> None:
        for n in range(offset, events, publishers):
            await bus.publish(Tick(n=n, payload=body))

    start = time.perf_counter()
    await asyncio.gather(*(publisher(i) for i in range(publishers)))
    published = time.perf_counter() - start
    await asyncio.wait_for(done.wait(), timeout=600)
    total = time.perf_counter() - start
    await bus.close(grace=5)
    if url.startswith("amqp"):
        await remove_topology(url, options["exchange"], [bus.queue_for(r) for r in bus.routes])
    print(f"url={url.split('@')[-1]} events={events} publishers={publishers} prefetch={prefetch}")
    print(f"  publish: {events / published:,.0f} events/s ({published:.2f}s)")
    print(f"  end to end: {events / total:,.0f} events/s ({total:.2f}s)")


async def remove_topology(url: str, exchange: str, queues: list[str]) -> None:
    """Leave the broker as we found it: the benchmark's queues are durable."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
            await channel.queue_delete(f"{queue}.dlq")
        await channel.exchange_delete(exchange)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument("--prefetch", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.events, args.publishers, args.prefetch))


if __name__ == "__main__":
    main()
