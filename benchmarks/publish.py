"""Publish N events to RabbitMQ with publisher confirms: the time until every one is confirmed.

* plain: aio-pika, ``exchange.publish`` on a channel with publisher confirms, to a durable
  topic exchange with one classic queue bound;
* fastapi-bus: ``bus.publish(event)`` (a started bus that does not consume; its queue is
  classic too).

Two ways: ``sequential`` awaits each publish before the next; ``window 256`` keeps 256 publishes
in flight (256 tasks, each publishing its share in turn). Afterwards the queue must hold N.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika

from benchmarks import rabbit
from benchmarks.common import PAYLOAD, Config, Row, Tick, check_total, interleaved

WINDOW = 256

Publish = Callable[[Tick], Awaitable[object]]


async def publish_all(publish: Publish, events: int, window: int) -> float:
    async def worker(offset: int) -> None:
        for n in range(offset, events, window):
            await publish(Tick(n=n, payload=PAYLOAD))

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(window)))
    return time.perf_counter() - start


async def plain(url: str, events: int, window: int) -> float:
    tag = uuid.uuid4().hex[:8]
    exchange_name, queue_name = f"bench-plain-{tag}", f"bench-plain-{tag}"
    connection = await aio_pika.connect(url)
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                queue_name, durable=True, arguments=rabbit.queue_arguments("classic")
            )
            await queue.bind(exchange, "Tick")

            async def publish(event: Tick) -> object:
                body = event.model_dump_json().encode()
                return await exchange.publish(rabbit.amqp_message(body), routing_key="Tick")

            elapsed = await publish_all(publish, events, window)
        check_total(f"plain aio-pika publish (window {window}): in the queue", events,
                    await rabbit.depth(url, queue_name))  # fmt: skip
        return elapsed
    finally:
        await rabbit.remove(url, [queue_name], exchange_name)


async def bus(url: str, events: int, window: int) -> float:
    from fastapi_bus import EventRouter

    router = EventRouter()

    @router.on(Tick)
    async def handle(event: Tick) -> None:  # never consumed: it gives the events a queue
        pass

    the_bus = rabbit.make_bus(url, router, "classic")
    try:
        await the_bus.start()
        elapsed = await publish_all(the_bus.publish, events, window)
        await the_bus.close(grace=5)
        check_total(f"fastapi-bus publish (window {window}): in the queue", events,
                    await rabbit.depth(url, rabbit.bus_queue(the_bus)))  # fmt: skip
        return elapsed
    finally:
        await the_bus.close(grace=0)
        await rabbit.remove_bus(url, the_bus)


async def run(config: Config) -> list[Row]:
    rows = []
    # Sequential publishes wait a broker round trip each: a quarter of the events is plenty.
    for label, window, n in [
        ("sequential", 1, max(config.events // 4, 1)),
        (f"window {WINDOW}", WINDOW, config.events),
    ]:
        medians = await interleaved(
            config.rounds,
            {
                "plain": lambda w=window, n=n: plain(config.url, n, w),  # type: ignore[misc]
                "bus": lambda w=window, n=n: bus(config.url, n, w),  # type: ignore[misc]
            },
        )
        rows.append(
            Row(
                f"RabbitMQ publish with confirms, {label}",
                "events/s",
                n / medians["plain"],
                n / medians["bus"],
                higher_is_better=True,
                note=f"{n:,} events" if n != config.events else "",
            )
        )
    return rows
