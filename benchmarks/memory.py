"""Publish N events and handle them in one process, on one core: the time until all are handled.

* plain: the floor of any in-process bus: a producer serialises each event to JSON and puts it
  on an ``asyncio.Queue`` (at most 1,000 waiting), one consumer loop validates it with pydantic;
* fastapi-bus: ``memory://``, ``bus.publish(event)`` in a loop, one handler taking the model.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import (
    PAYLOAD,
    PREFETCH,
    Config,
    Row,
    Stopwatch,
    Tick,
    check_counts,
    interleaved,
)


async def plain(events: int, timeout: float) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
    watch = Stopwatch(events)

    async def consumer() -> None:
        while True:
            body = await queue.get()
            watch.handled(Tick.model_validate_json(body).n)
            queue.task_done()

    task = asyncio.create_task(consumer())
    watch.start = time.perf_counter()
    for n in range(events):
        await queue.put(Tick(n=n, payload=PAYLOAD).model_dump_json().encode())
    await watch.wait(timeout)
    task.cancel()
    check_counts("plain asyncio.Queue", events, watch.seen)
    return watch.elapsed


async def bus(events: int, timeout: float) -> float:
    from fastapi_bus import EventBus, EventRouter
    from fastapi_bus.transports import transport_from_url

    router = EventRouter()
    watch = Stopwatch(events)

    @router.on(Tick)
    async def handle(event: Tick) -> None:
        watch.handled(event.n)

    the_bus = EventBus(
        transport_from_url("memory://"), service="bench", routers=[router], prefetch=PREFETCH
    )
    await the_bus.start()
    try:
        await the_bus.start_consuming()
        watch.start = time.perf_counter()
        for n in range(events):
            await the_bus.publish(Tick(n=n, payload=PAYLOAD))
        await watch.wait(timeout)
    finally:
        await the_bus.close(grace=5)
    check_counts("fastapi-bus memory://", events, watch.seen)
    return watch.elapsed


async def run(config: Config) -> list[Row]:
    n = config.events
    medians = await interleaved(
        config.rounds,
        {"plain": lambda: plain(n, config.timeout()), "bus": lambda: bus(n, config.timeout())},
    )
    return [
        Row(
            "memory:// publish to handler",
            "events/s",
            n / medians["plain"],
            n / medians["bus"],
            higher_is_better=True,
            note="plain: an asyncio.Queue loop",
        )
    ]
