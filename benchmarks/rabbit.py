"""RabbitMQ helpers shared by the workloads: filling a queue, counting what a queue holds,
building a bus, and leaving the broker as it was found."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import aio_pika

from benchmarks.common import PREFETCH, tick_body

if TYPE_CHECKING:
    from fastapi_bus import EventBus, EventRouter

#: Messages published at once while filling a queue (each awaits its confirm).
FILL_WINDOW = 500


def amqp_message(body: bytes, name: str = "Tick") -> aio_pika.Message:
    """A persistent message with the properties and headers fastapi-bus gives its own, so that
    both sides read the same bytes."""
    now = datetime.now(timezone.utc)
    return aio_pika.Message(
        body,
        headers={"x-bus-attempt": 1, "x-bus-published-at": now.isoformat()},
        content_type="application/json",
        message_id=uuid.uuid4().hex,
        type=name,
        timestamp=now,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def fill(url: str, queue: str, events: int, body: Callable[[int], bytes] = tick_body) -> None:
    """Publish events ``0 .. events-1`` straight to ``queue``, each confirmed by the broker."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        for start in range(0, events, FILL_WINDOW):
            await asyncio.gather(
                *(
                    exchange.publish(amqp_message(body(n)), routing_key=queue)
                    for n in range(start, min(start + FILL_WINDOW, events))
                )
            )


async def depth(url: str, queue: str) -> int:
    """How many messages ``queue`` holds ready (unacknowledged ones count once their channel
    closed, which is why the sides close before they are counted)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


async def remove(url: str, queues: list[str], exchange: str | None = None) -> None:
    """Delete what a side declared: the benchmark's queues are durable. When the broker is
    gone (it restarted under the run), say what is left rather than hide the run's error."""
    try:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            if exchange:
                await channel.exchange_delete(exchange)
    except Exception as exc:
        left = ", ".join([*queues, *([exchange] if exchange else [])])
        print(f"could not delete {left}: {type(exc).__name__}: {exc}", file=sys.stderr)


def queue_arguments(queue_type: str) -> dict[str, Any]:
    return {"x-queue-type": queue_type}


def make_bus(url: str, router: EventRouter, queue_type: str = "classic") -> EventBus:
    """A bus on its own exchange and queues (``queue_type``), with one router."""
    from fastapi_bus import EventBus
    from fastapi_bus.transports import transport_from_url

    tag = uuid.uuid4().hex[:8]
    return EventBus(
        transport_from_url(url, exchange=f"bench-{tag}", queue_type=queue_type),
        service=f"bench{tag}",
        routers=[router],
        prefetch=PREFETCH,
    )


def bus_queue(bus: EventBus) -> str:
    return bus.queue_for(bus.routes[0])


async def remove_bus(url: str, bus: EventBus) -> None:
    queue = bus_queue(bus)
    exchange = getattr(bus.transport, "exchange", None)
    await remove(url, [queue, f"{queue}.dlq"], exchange)
