"""Publish N events and handle them in one process, on one core: the time until all are handled.

* plain: the floor of any in-process bus: a producer serialises each event to JSON and puts it
  on an ``asyncio.Queue`` (at most 1,000 waiting), one consumer loop validates it with pydantic;
* fastapi-bus: ``memory://``, ``bus.publish(event)`` in a loop, one handler taking the model.

Both the time until all are handled and the CPU time spent meanwhile (steadier than the rate on
a busy machine) are reported, per event.
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
    median,
)


class Sample:
    """The wall and CPU seconds of one side's run."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def started(self) -> float:
        self.cpu = time.process_time()
        return time.perf_counter()

    def stopped(self) -> None:
        self.cpu = time.process_time() - self.cpu


async def plain(events: int, timeout: float, sample: Sample | None = None) -> float:
    sample = sample or Sample()
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
    watch = Stopwatch(events)

    async def consumer() -> None:
        while True:
            body = await queue.get()
            watch.handled(Tick.model_validate_json(body).n)
            queue.task_done()

    task = asyncio.create_task(consumer())
    watch.start = sample.started()
    for n in range(events):
        await queue.put(Tick(n=n, payload=PAYLOAD).model_dump_json().encode())
    await watch.wait(timeout)
    sample.stopped()
    task.cancel()
    check_counts("plain asyncio.Queue", events, watch.seen)
    return watch.elapsed


async def bus(events: int, timeout: float, sample: Sample | None = None) -> float:
    sample = sample or Sample()
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
        watch.start = sample.started()
        for n in range(events):
            await the_bus.publish(Tick(n=n, payload=PAYLOAD))
        await watch.wait(timeout)
        sample.stopped()
    finally:
        await the_bus.close(grace=5)
    check_counts("fastapi-bus memory://", events, watch.seen)
    return watch.elapsed


async def run(config: Config) -> list[Row]:
    n = config.events
    cpu: dict[str, list[float]] = {"plain": [], "bus": []}

    async def side(name: str) -> float:
        sample = Sample()
        elapsed = await (plain if name == "plain" else bus)(n, config.timeout(), sample)
        cpu[name].append(sample.cpu)
        return elapsed

    medians = await interleaved(
        config.rounds, {"plain": lambda: side("plain"), "bus": lambda: side("bus")}
    )
    what = "memory:// publish to handler"
    return [
        Row(
            what,
            "events/s",
            n / medians["plain"],
            n / medians["bus"],
            higher_is_better=True,
            note="plain: an asyncio.Queue loop",
        ),
        Row(
            what,
            "CPU us/event",
            median(cpu["plain"]) * 1e6 / n,
            median(cpu["bus"]) * 1e6 / n,
            higher_is_better=False,
        ),
    ]
