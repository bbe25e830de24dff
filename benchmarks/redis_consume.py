"""Consume N waiting events on Redis: fastapi-bus against a plain redis-py loop doing the same
work, interleaved over several rounds, reported as medians and ratios.

    .venv/bin/python benchmarks/redis_consume.py --events 20000 --rounds 3

Each round fills a stream with N events (~230-byte JSON bodies), then times how long each side
takes to read, decode, validate with pydantic and acknowledge all of them:

* ``plain``: ``XREADGROUP COUNT prefetch``, validate each, then ``XACK`` and ``XDEL`` of the
  batch in one pipeline (the bus also deletes what it acknowledges, so streams stay small);
* ``plain-ack-only``: the same with ``XACK`` alone (streams keep growing);
* ``fastapi-bus``: an ``EventBus`` on ``RedisTransport`` with one handler taking the model.

Besides the rates, it prints the CPU time each side's process spent per event (less sensitive
than the rates to other work on a busy machine; Redis's own CPU is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import redis.asyncio
from pydantic import BaseModel

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.redis import RedisTransport
from fastapi_bus.transports.redis.mapping import encode


class Tick(BaseModel):
    n: int
    payload: str


#: What ``XREADGROUP`` answers: per stream, its entries (id, fields).
Entries = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


def body(n: int) -> bytes:
    return Tick(n=n, payload="x" * 200).model_dump_json().encode()


async def fill(client: redis.asyncio.Redis, stream: str, events: int) -> None:
    for start in range(0, events, 1000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + 1000, events)):
            pipe.xadd(stream, {"m": encode(Message(name="Tick", body=body(n)))})
        await pipe.execute()


async def plain(url: str, events: int, prefetch: int, delete: bool) -> tuple[float, float]:
    client = redis.asyncio.Redis.from_url(url)
    stream = f"bench-plain-{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    await fill(client, stream, events)
    seen = 0
    start, cpu = time.perf_counter(), time.process_time()
    while seen < events:
        reply = cast(
            "Entries",
            await client.xreadgroup("g", "c", {stream: ">"}, count=prefetch, block=1000),
        )
        ids = []
        for _, entries in reply:
            for entry_id, fields in entries:
                meta, _, payload = fields[b"m"].partition(b"\n")
                json.loads(meta)
                Tick.model_validate_json(payload)
                ids.append(entry_id)
        if ids:
            pipe = client.pipeline(transaction=True)
            pipe.xack(stream, "g", *ids)
            if delete:
                pipe.xdel(stream, *ids)
            await pipe.execute()
            seen += len(ids)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await client.delete(stream)
    await client.aclose()
    return elapsed, cpu


async def bus(url: str, events: int, prefetch: int) -> tuple[float, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    router = EventRouter()
    handled = 0
    done = asyncio.Event()

    @router.on(Tick)
    async def count(event: Tick) -> None:
        nonlocal handled
        handled += 1
        if handled >= events:
            done.set()

    the_bus = EventBus(
        RedisTransport(url, prefix=prefix), service="bench", routers=[router], prefetch=prefetch
    )
    await the_bus.start()
    client = redis.asyncio.Redis.from_url(url)
    await fill(client, "{" + prefix + "}:q:" + the_bus.queue_for(the_bus.routes[0]), events)
    start, cpu = time.perf_counter(), time.process_time()
    await the_bus.start_consuming()
    await asyncio.wait_for(done.wait(), 600)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    await the_bus.close(grace=5)
    keys = [key async for key in client.scan_iter(match="{" + prefix + "}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    return elapsed, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=128)
    args = parser.parse_args()
    sides: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "plain": lambda: plain(args.url, args.events, args.prefetch, delete=True),
        "plain-ack-only": lambda: plain(args.url, args.events, args.prefetch, delete=False),
        "fastapi-bus": lambda: bus(args.url, args.events, args.prefetch),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():  # interleaved, so noise hits every side alike
            elapsed, cpu = await side()
            times[name].append(elapsed)
            cpus[name].append(cpu)
    rates = {name: args.events / statistics.median(t) for name, t in times.items()}
    costs = {name: statistics.median(c) / args.events * 1e6 for name, c in cpus.items()}
    print(f"{args.events} events, {args.rounds} rounds, prefetch {args.prefetch} (medians)")
    for name, rate in rates.items():
        print(
            f"  {name:15} {rate:9,.0f} events/s   {rate / rates['plain']:.2f}x plain"
            f"   {rate / rates['plain-ack-only']:.2f}x plain-ack-only"
            f"   CPU {costs[name]:5.1f} us/event ({costs['plain'] / costs[name]:.2f}x plain)"
        )


if __name__ == "__main__":
    asyncio.run(main())
