"""End-to-end latency on RabbitMQ at a fixed rate: publish 1,000 events/s for a few seconds, each
stamped with the time it was published; the consumer notes how long each took to reach it.

* plain: aio-pika publishes with confirms (each publish in a task of its own, so that a slow
  confirm does not hold back the next), a consumer with prefetch 128 validates and acks;
* fastapi-bus: ``bus.publish(event)`` the same way, one handler taking the model.

Both sides publish and consume in one process, on a classic queue. Reported: the median and
the 99th percentile of the latencies, and every event must arrive exactly once.

A 99th percentile is made by a few dozen events, which one slow spell of a shared machine can
hold up. So both sides are open at once and take turns of one second (plain, bus, bus, plain,
...; the side that goes first changing from round to round): a turn publishes a second's
events at the rate and waits until all were handled, and a round's percentiles are those of all
its turns.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aio_pika.abc
from pydantic import BaseModel

from benchmarks import rabbit
from benchmarks.common import (
    PAYLOAD,
    PREFETCH,
    Config,
    Row,
    Stopwatch,
    check_counts,
    median,
    take_turns,
)


class Stamped(BaseModel):
    """The event, with the ``time.perf_counter()`` at which it was published."""

    n: int
    payload: str
    sent: float


class Latencies(Stopwatch):
    """A stopwatch that also keeps each event's latency (in a buffer allocated up front)."""

    def __init__(self, expected: int) -> None:
        super().__init__(expected)
        self._latencies = array.array("d", bytes(8 * expected))
        self._arrived = 0

    def arrived(self, event: Stamped) -> None:
        if self._arrived < len(self._latencies):
            self._latencies[self._arrived] = time.perf_counter() - event.sent
            self._arrived += 1
        self.handled(event.n)

    def percentiles(self) -> tuple[float, float]:
        """The median and the 99th percentile, in milliseconds."""
        latencies = list(self._latencies[: self._arrived]) or [0.0]
        if len(latencies) < 2:
            return latencies[0] * 1000, latencies[0] * 1000
        cuts = statistics.quantiles(latencies, n=100)
        return statistics.median(latencies) * 1000, cuts[98] * 1000


Publish = Callable[[Stamped], Awaitable[object]]


async def paced(publish: Publish, rate: int, first: int, stop: int) -> None:
    """Publish events ``first .. stop-1`` at ``rate`` per second (each in its own task), then
    wait for all."""
    tasks: set[asyncio.Task[object]] = set()
    start = time.perf_counter()
    for n in range(first, stop):
        delay = start + (n - first) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(
            publish(Stamped(n=n, payload=PAYLOAD, sent=time.perf_counter()))
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def plain(url: str, events: int) -> AsyncIterator[tuple[Publish, Latencies]]:
    tag = uuid.uuid4().hex[:8]
    name = f"bench-plain-{tag}"
    watch = Latencies(events)
    try:
        async with await aio_pika.connect(url) as connection:
            publishing = await connection.channel(publisher_confirms=True)
            exchange = await publishing.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            consuming = await connection.channel()
            await consuming.set_qos(prefetch_count=PREFETCH)
            queue = await consuming.declare_queue(
                name, durable=True, arguments=rabbit.queue_arguments("classic")
            )
            await queue.bind(name, "Stamped")

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                event = Stamped.model_validate_json(message.body)
                watch.arrived(event)
                await message.ack()

            async def publish(event: Stamped) -> object:
                body = event.model_dump_json().encode()
                return await exchange.publish(
                    rabbit.amqp_message(body, "Stamped"), routing_key="Stamped"
                )

            await queue.consume(on_message)
            yield publish, watch
        check_counts("plain aio-pika latency", events, watch.seen)
    finally:
        await rabbit.remove(url, [name], name)


@contextlib.asynccontextmanager
async def bus(url: str, events: int) -> AsyncIterator[tuple[Publish, Latencies]]:
    from fastapi_bus import EventRouter

    router = EventRouter()
    watch = Latencies(events)

    @router.on(Stamped)
    async def handle(event: Stamped) -> None:
        watch.arrived(event)

    the_bus = rabbit.make_bus(url, router, "classic")
    try:
        await the_bus.start()
        await the_bus.start_consuming()
        yield the_bus.publish, watch
        await the_bus.close(grace=5)
        check_counts("fastapi-bus latency", events, watch.seen)
    finally:
        await the_bus.close(grace=0)
        await rabbit.remove_bus(url, the_bus)


async def one_round(
    config: Config, events: int, round_number: int
) -> dict[str, tuple[float, float]]:
    """Both sides publish ``events`` at the rate, taking turns of a second: their percentiles."""
    timeout = config.timeout(config.rate)

    async def step(side: tuple[Publish, Latencies], start: int, stop: int) -> None:
        publish, watch = side
        await paced(publish, config.rate, start, stop)
        await watch.wait_for(stop, timeout)

    async with plain(config.url, events) as plain_side, bus(config.url, events) as bus_side:
        await take_turns([plain_side, bus_side], events, config.rate, round_number, step)
    return {"plain": plain_side[1].percentiles(), "bus": bus_side[1].percentiles()}


async def run(config: Config) -> list[Row]:
    events = int(config.rate * config.seconds)
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "bus": []}
    for number in range(config.rounds):
        for name, percentiles in (await one_round(config, events, number)).items():
            results[name].append(percentiles)
    p50 = {side: median([r[0] for r in rounds]) for side, rounds in results.items()}
    p99 = {side: median([r[1] for r in rounds]) for side, rounds in results.items()}
    what = f"RabbitMQ end-to-end latency at {config.rate:,} events/s for {config.seconds:g} s"
    return [
        Row(what, "p50 ms", p50["plain"], p50["bus"], higher_is_better=False, note="turns of 1 s"),
        Row(what, "p99 ms", p99["plain"], p99["bus"], higher_is_better=False, note="turns of 1 s"),
    ]


async def steady(side: str, url: str, rate: int, events: int, timeout: float) -> None:
    """One side alone, ``events`` at ``rate`` in one go (the flow of the memory soak)."""
    opened = plain if side == "plain" else bus
    async with opened(url, events) as (publish, watch):
        await paced(publish, rate, 0, events)
        await watch.wait_for(events, timeout)
