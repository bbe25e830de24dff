"""Consume N waiting events on RabbitMQ: the time until every one is validated and acknowledged.

* plain: aio-pika, ``queue.consume`` with a callback that validates the event with pydantic and
  acks it, prefetch 128;
* fastapi-bus: an ``EventBus`` with one handler taking the model, prefetch 128;
* fastapi-bus with features (the ``consume-features`` workload, classic queue): the handler
  also takes a FastAPI dependency (``Depends``, solved for every message) and is
  ``idempotent=True`` (every message id looked up and remembered in the default in-memory
  store), so the pipeline runs the dependency solver and the idempotency step as well as
  validation and the retry policy. The plain side stays the same: what the features cost is
  the bus's to carry.

Both queues are filled beforehand with the same persistent messages; the clock starts when
consuming starts. Afterwards each queue must be empty (every message acknowledged) and each
event handled exactly once.
"""

from __future__ import annotations

import time
import uuid

import aio_pika
import aio_pika.abc

from benchmarks import rabbit
from benchmarks.common import (
    PREFETCH,
    Config,
    Row,
    Stopwatch,
    Tick,
    check_counts,
    check_total,
    interleaved,
)


async def plain(url: str, events: int, queue_type: str, timeout: float) -> float:
    name = f"bench-plain-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(url)
    try:
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(
                name, durable=True, arguments=rabbit.queue_arguments(queue_type)
            )
            await rabbit.fill(url, name, events)
            watch = Stopwatch(events)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                event = Tick.model_validate_json(message.body)
                await message.ack()
                watch.handled(event.n)

            watch.start = time.perf_counter()
            tag = await queue.consume(on_message)
            await watch.wait(timeout)
            await queue.cancel(tag)
        check_counts(f"plain aio-pika, {queue_type} queue", events, watch.seen)
        check_total(f"plain aio-pika, {queue_type} queue: left in the queue", 0,
                    await rabbit.depth(url, name))  # fmt: skip
        return watch.elapsed
    finally:
        await rabbit.remove(url, [name])


async def bus(
    url: str, events: int, queue_type: str, timeout: float, features: bool = False
) -> float:
    from fastapi_bus import EventRouter

    router = EventRouter()
    watch = Stopwatch(events)

    if features:
        from benchmarks.features import counting_router

        router = counting_router(lambda event: watch.handled(event.n), dependency=True,
                                 idempotent=True)  # fmt: skip
    else:

        @router.on(Tick)
        async def handle(event: Tick) -> None:
            watch.handled(event.n)

    the_bus = rabbit.make_bus(url, router, queue_type)
    await the_bus.start()
    try:
        queue = rabbit.bus_queue(the_bus)
        await rabbit.fill(url, queue, events)
        watch.start = time.perf_counter()
        await the_bus.start_consuming()
        await watch.wait(timeout)
        await the_bus.close(grace=5)
        check_counts(f"fastapi-bus, {queue_type} queue", events, watch.seen)
        check_total(f"fastapi-bus, {queue_type} queue: left in the queue", 0,
                    await rabbit.depth(url, queue))  # fmt: skip
        return watch.elapsed
    finally:
        await the_bus.close(grace=0)
        await rabbit.remove_bus(url, the_bus)


async def run(config: Config, queue_type: str, features: bool = False) -> list[Row]:
    n = config.events
    medians = await interleaved(
        config.rounds,
        {
            "plain": lambda: plain(config.url, n, queue_type, config.timeout()),
            "bus": lambda: bus(config.url, n, queue_type, config.timeout(), features),
        },
    )
    what = f"RabbitMQ consume, {queue_type} queue"
    if features:
        what += ", handler with a dependency and idempotent=True"
    return [
        Row(
            what,
            "events/s",
            n / medians["plain"],
            n / medians["bus"],
            higher_is_better=True,
        )
    ]


async def run_classic(config: Config) -> list[Row]:
    return await run(config, "classic")


async def run_quorum(config: Config) -> list[Row]:
    return await run(config, "quorum")


async def run_features(config: Config) -> list[Row]:
    return await run(config, "classic", features=True)
