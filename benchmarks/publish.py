"""Publish N events to RabbitMQ with publisher confirms: the time until every one is confirmed.

* plain: aio-pika, ``exchange.publish`` on a channel with publisher confirms, to a durable
  topic exchange with one classic queue bound;
* fastapi-bus: ``bus.publish(event)`` (a started bus that does not consume; its queue is
  classic too).

Two ways: ``sequential`` awaits each publish before the next; ``window 256`` keeps 256 publishes
in flight (256 tasks, each publishing its share in turn). Afterwards each queue must hold N.

A publish with confirms waits for the broker's disk, whose pace drifts over seconds. So both
sides are open at once and take turns: the sequential row alternates every
:data:`SEQUENTIAL_TURN` events (plain, bus, bus, plain, ...), so that a slow spell of the broker
falls on both alike; the window row takes one turn per side and round, the side that goes first
changing from round to round.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika

from benchmarks import rabbit
from benchmarks.common import PAYLOAD, Config, Row, Tick, check_total, median, take_turns

WINDOW = 256
#: Events a side publishes in one turn of the sequential row (about half a second).
SEQUENTIAL_TURN = 500

Publish = Callable[[Tick], Awaitable[object]]


@dataclasses.dataclass
class Side:
    """An open side: how it publishes one event, and the queue its events land in."""

    publish: Publish
    queue: str
    elapsed: float = 0.0


async def publish_range(publish: Publish, start: int, stop: int, window: int) -> float:
    """Publish events ``start .. stop-1`` with ``window`` in flight: the seconds it took."""

    async def worker(offset: int) -> None:
        for n in range(offset, stop, window):
            await publish(Tick(n=n, payload=PAYLOAD))

    began = time.perf_counter()
    await asyncio.gather(*(worker(start + i) for i in range(min(window, stop - start))))
    return time.perf_counter() - began


@contextlib.asynccontextmanager
async def plain(url: str) -> AsyncIterator[Side]:
    tag = uuid.uuid4().hex[:8]
    exchange_name, queue_name = f"bench-plain-{tag}", f"bench-plain-{tag}"
    try:
        async with await aio_pika.connect(url) as connection:
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

            yield Side(publish, queue_name)
    finally:
        await rabbit.remove(url, [queue_name], exchange_name)


@contextlib.asynccontextmanager
async def bus(url: str) -> AsyncIterator[Side]:
    from fastapi_bus import EventRouter

    router = EventRouter()

    @router.on(Tick)
    async def handle(event: Tick) -> None:  # never consumed: it gives the events a queue
        pass

    the_bus = rabbit.make_bus(url, router, "classic")
    try:
        await the_bus.start()
        yield Side(the_bus.publish, rabbit.bus_queue(the_bus))
    finally:
        await the_bus.close(grace=0)
        await rabbit.remove_bus(url, the_bus)


async def one_round(
    url: str, events: int, window: int, turn: int, round_number: int
) -> dict[str, float]:
    """Both sides publish ``events`` each, taking turns of ``turn`` events: their seconds."""
    async with plain(url) as plain_side, bus(url) as bus_side:
        sides = {"plain": plain_side, "bus": bus_side}

        async def step(side: Side, start: int, stop: int) -> None:
            side.elapsed += await publish_range(side.publish, start, stop, window)

        await take_turns(list(sides.values()), events, turn, round_number, step)
        for name, side in sides.items():
            check_total(f"{name} publish (window {window}): in the queue", events,
                        await rabbit.depth(url, side.queue))  # fmt: skip
        return {name: side.elapsed for name, side in sides.items()}


async def run(config: Config) -> list[Row]:
    rows = []
    # Sequential publishes wait a broker round trip each: a quarter of the events is plenty.
    for label, window, n, turn in [
        ("sequential", 1, max(config.events // 4, 1), SEQUENTIAL_TURN),
        (f"window {WINDOW}", WINDOW, config.events, config.events),
    ]:
        seconds: dict[str, list[float]] = {"plain": [], "bus": []}
        for number in range(config.rounds):
            for name, elapsed in (await one_round(config.url, n, window, turn, number)).items():
                seconds[name].append(elapsed)
        rows.append(
            Row(
                f"RabbitMQ publish with confirms, {label}",
                "events/s",
                n / median(seconds["plain"]),
                n / median(seconds["bus"]),
                higher_is_better=True,
                note=f"{n:,} events, turns of {turn}" if turn < n else "",
            )
        )
    return rows
