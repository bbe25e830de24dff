"""End-to-end latency on RabbitMQ at a fixed rate: publish 1,000 events/s for a few seconds, each
stamped with the time it was published; the consumer notes how long each took to reach it.

* plain: aio-pika publishes with confirms (each publish in a task of its own, so that a slow
  confirm does not hold back the next), a consumer with prefetch 128 validates and acks;
* fastapi-bus: ``bus.publish(event)`` the same way, one handler taking the model.

Both sides publish and consume in one process, on a classic queue. Reported: the median and
the 99th percentile of the latencies, and every event must arrive exactly once.
"""

from __future__ import annotations

import array
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aio_pika.abc
from pydantic import BaseModel

from benchmarks import rabbit
from benchmarks.common import PAYLOAD, PREFETCH, Config, Row, Stopwatch, check_counts, median


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


async def paced(publish: Callable[[Stamped], Awaitable[object]], rate: int, events: int) -> None:
    """Publish ``events`` at ``rate`` per second (each in its own task), then wait for all."""
    tasks: set[asyncio.Task[object]] = set()
    start = time.perf_counter()
    for n in range(events):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(
            publish(Stamped(n=n, payload=PAYLOAD, sent=time.perf_counter()))
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def plain(url: str, rate: int, events: int, timeout: float) -> Latencies:
    tag = uuid.uuid4().hex[:8]
    name = f"bench-plain-{tag}"
    connection = await aio_pika.connect(url)
    try:
        async with connection:
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
            watch = Latencies(events)

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
            await paced(publish, rate, events)
            await watch.wait(timeout)
        check_counts("plain aio-pika latency", events, watch.seen)
        return watch
    finally:
        await rabbit.remove(url, [name], name)


async def bus(url: str, rate: int, events: int, timeout: float) -> Latencies:
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
        await paced(the_bus.publish, rate, events)
        await watch.wait(timeout)
        await the_bus.close(grace=5)
        check_counts("fastapi-bus latency", events, watch.seen)
        return watch
    finally:
        await the_bus.close(grace=0)
        await rabbit.remove_bus(url, the_bus)


async def run(config: Config) -> list[Row]:
    events = int(config.rate * config.seconds)
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "bus": []}
    timeout = config.seconds + config.timeout(events)
    for _ in range(config.rounds):
        results["plain"].append(
            (await plain(config.url, config.rate, events, timeout)).percentiles()
        )
        results["bus"].append((await bus(config.url, config.rate, events, timeout)).percentiles())
    p50 = {side: median([r[0] for r in rounds]) for side, rounds in results.items()}
    p99 = {side: median([r[1] for r in rounds]) for side, rounds in results.items()}
    what = f"RabbitMQ end-to-end latency at {config.rate:,} events/s for {config.seconds:g} s"
    return [
        Row(what, "p50 ms", p50["plain"], p50["bus"], higher_is_better=False),
        Row(what, "p99 ms", p99["plain"], p99["bus"], higher_is_better=False),
    ]
