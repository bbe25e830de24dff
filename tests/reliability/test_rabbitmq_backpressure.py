"""Slow consumers on RabbitMQ: a consumer holds at most ``prefetch`` messages; the rest wait on
the broker, so a producer far faster than the handlers leaves the consumer's memory flat."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from fastapi_bus import EventBus
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from tests.helpers import OrderPlaced
from tests.reliability.test_backpressure import gated
from tests.utils import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


async def test_rabbitmq_a_consumer_holds_at_most_prefetch_messages(rabbitmq_url: str) -> None:
    gate = asyncio.Event()
    started: list[str] = []
    done: list[str] = []
    transport = RabbitMQTransport(
        rabbitmq_url, exchange=f"test-bp-{uuid.uuid4().hex[:8]}", auto_delete_topology=True
    )
    service = f"svc{uuid.uuid4().hex[:10]}"
    bus = EventBus(transport, service=service, routers=[gated(gate, started, done)])
    await bus.start()
    await bus.start_consuming()
    name = bus.queue_for(bus.routes[0])
    connection = await aio_pika.connect(rabbitmq_url)

    async def ready() -> int:
        channel = await connection.channel()
        async with channel:
            declared = await channel.declare_queue(name, passive=True)
            count = declared.declaration_result.message_count
            return int(count or 0)

    try:
        await asyncio.gather(
            *(bus.publish(OrderPlaced(order_id=str(n), total=1)) for n in range(200))
        )
        await wait_until(lambda: len(started) == 1, timeout=30)
        deadline = asyncio.get_running_loop().time() + 30
        while await ready() != 195:  # 5 fetched by the consumer, the rest on the broker
            assert asyncio.get_running_loop().time() < deadline, await ready()
            await asyncio.sleep(0.05)
        assert len(started) == 1, "one call at a time"
        gate.set()
        await wait_until(lambda: len(done) == 200, timeout=60)
    finally:
        gate.set()
        await connection.close()
        await bus.close(grace=1)
    assert sorted(done, key=int) == [str(n) for n in range(200)]
