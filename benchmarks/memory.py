"""Publish 5N events and handle them in one process, on one core: the time until all are handled.

* plain: the floor of any in-process bus: a producer serialises each event to JSON and puts it
  on an ``asyncio.Queue`` (at most 1,000 waiting), one consumer loop validates it with pydantic;
* fastapi-bus: ``memory://``, ``bus.publish(event)`` in a loop, one handler taking the model.

Both the time until all are handled and the CPU time spent meanwhile (steadier than the rate on
a busy machine) are reported, per event.

A side's run lasts a fraction of a second, about as long as a slow spell of a shared machine. So
both sides are set up at once and take turns of :data:`TURN` events (plain, bus, bus, plain,
...): a turn publishes its events and waits until the handler has taken every one, and a side's
time is the sum of its turns. The side that goes first changes from round to round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from benchmarks.common import (
    PAYLOAD,
    PREFETCH,
    Config,
    Row,
    Stopwatch,
    Tick,
    check_counts,
    median,
    take_turns,
)

#: Events per turn of a side (some tens of milliseconds).
TURN = 5_000
#: The events of a round are this many times ``--events``: the runs are short.
SCALE = 5

#: Publishes events ``start .. stop-1``.
PublishRange = Callable[[int, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def plain(events: int) -> AsyncIterator[tuple[PublishRange, Stopwatch]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
    watch = Stopwatch(events)

    async def consumer() -> None:
        while True:
            body = await queue.get()
            watch.handled(Tick.model_validate_json(body).n)
            queue.task_done()

    async def publish_range(start: int, stop: int) -> None:
        for n in range(start, stop):
            await queue.put(Tick(n=n, payload=PAYLOAD).model_dump_json().encode())

    task = asyncio.create_task(consumer())
    try:
        yield publish_range, watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    check_counts("plain asyncio.Queue", events, watch.seen)


@contextlib.asynccontextmanager
async def bus(events: int) -> AsyncIterator[tuple[PublishRange, Stopwatch]]:
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

    async def publish_range(start: int, stop: int) -> None:
        publish = the_bus.publish
        for n in range(start, stop):
            await publish(Tick(n=n, payload=PAYLOAD))

    await the_bus.start()
    try:
        await the_bus.start_consuming()
        yield publish_range, watch
    finally:
        await the_bus.close(grace=5)
    check_counts("fastapi-bus memory://", events, watch.seen)


async def one_round(
    events: int, turn: int, timeout: float, round_number: int
) -> dict[str, list[float]]:
    """Both sides handle ``events`` each, taking turns: their wall and CPU seconds."""
    spent = {"plain": [0.0, 0.0], "bus": [0.0, 0.0]}

    async def step(side: tuple[str, PublishRange, Stopwatch], start: int, stop: int) -> None:
        name, publish_range, watch = side
        cpu, wall = time.process_time(), time.perf_counter()
        await publish_range(start, stop)
        await watch.wait_for(stop, timeout)
        spent[name][0] += time.perf_counter() - wall
        spent[name][1] += time.process_time() - cpu

    async with plain(events) as plain_side, bus(events) as bus_side:
        sides = [("plain", *plain_side), ("bus", *bus_side)]
        await take_turns(sides, events, turn, round_number, step)
    return spent


async def run(config: Config) -> list[Row]:
    n = config.events * SCALE
    turn = min(TURN, n)
    wall: dict[str, list[float]] = {"plain": [], "bus": []}
    cpu: dict[str, list[float]] = {"plain": [], "bus": []}
    for number in range(config.rounds):
        spent = await one_round(n, turn, config.timeout(n), number)
        for name, (seconds, cpu_seconds) in spent.items():
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    what = "memory:// publish to handler"
    return [
        Row(
            what,
            "events/s",
            n / median(wall["plain"]),
            n / median(wall["bus"]),
            higher_is_better=True,
            note=f"plain: an asyncio.Queue loop; {n:,} events, turns of {turn:,}",
        ),
        Row(
            what,
            "CPU us/event",
            median(cpu["plain"]) * 1e6 / n,
            median(cpu["bus"]) * 1e6 / n,
            higher_is_better=False,
        ),
    ]
