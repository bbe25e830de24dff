"""Hung handlers on a real RabbitMQ, and the broker's consumer timeout."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fastapi_bus import ConfigurationError, EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.transports.base import dead_letter_queue
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from tests.helpers import OrderPlaced
from tests.test_broker_bus import start
from tests.utils import wait_until, wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


def transport(url: str, consumer_timeout: float | None = 1800.0) -> RabbitMQTransport:
    return RabbitMQTransport(
        url,
        exchange=f"test-timeouts-{uuid.uuid4().hex[:10]}",
        auto_delete_topology=True,
        consumer_timeout=consumer_timeout,
    )


async def test_a_hung_handler_is_retried_through_the_broker_then_dead_lettered(
    rabbitmq_url: str, running: list[EventBus]
) -> None:
    calls: list[int] = []
    events = EventRouter()

    @events.on(OrderPlaced, timeout=0.3, retry=RetryPolicy(attempts=1, delays=(0.1,)))
    async def hangs(event: OrderPlaced, msg: Message) -> None:
        calls.append(msg.attempt)
        await asyncio.Event().wait()

    service = f"svc{uuid.uuid4().hex[:10]}"
    bus = await start(EventBus(transport(rabbitmq_url), service=service, routers=[events]), running)
    message_id = await bus.publish(OrderPlaced(order_id="1", total=1))
    dlq = dead_letter_queue(bus.queue_for(bus.routes[0]))
    await wait_until_async(lambda: bus.transport.browse(dlq), 1, timeout=30)
    (letter,) = await bus.dead_letters.list()
    assert calls == [1, 2]
    assert letter.message.id == message_id
    assert "timed out" in letter.reason


async def test_without_a_timeout_a_handler_gets_one_within_the_consumer_timeout(
    rabbitmq_url: str, running: list[EventBus]
) -> None:
    """With the broker's consumer timeout at 2 s, a hung handler is cancelled before it, and
    the channel goes on delivering: the next message is handled by the same consumer."""
    handled: list[str] = []
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced, prefetch=1)
    async def sometimes_hangs(event: OrderPlaced) -> None:
        if event.order_id == "hang":
            await asyncio.Event().wait()
        handled.append(event.order_id)

    service = f"svc{uuid.uuid4().hex[:10]}"
    bus = EventBus(transport(rabbitmq_url, consumer_timeout=2), service=service, routers=[events])
    bus = await start(bus, running)
    await bus.publish(OrderPlaced(order_id="hang", total=1))
    await bus.publish(OrderPlaced(order_id="next", total=1))
    await wait_until(lambda: handled == ["next"], timeout=30)
    (letter,) = await bus.dead_letters.list()
    assert "timed out" in letter.reason
    assert "1.8s" in letter.reason, "90% of the consumer timeout, for one attempt"


def test_a_timeout_that_does_not_fit_the_consumer_timeout_fails_at_build(
    rabbitmq_url: str,
) -> None:
    events = EventRouter()

    @events.on(OrderPlaced, timeout=700)  # 3 attempts of 700 s exceed 30 minutes
    async def slow(event: OrderPlaced) -> None: ...

    bus = EventBus(transport(rabbitmq_url), service="shop", routers=[events])
    with pytest.raises(ConfigurationError, match=r"handler 'slow'.*consumer timeout \(1800s\)"):
        bus.build()
    fits = EventRouter()

    @fits.on(OrderPlaced, timeout=700, retry=RetryPolicy(attempts=2, delays=()))
    async def slow_but_fits(event: OrderPlaced) -> None: ...

    EventBus(transport(rabbitmq_url), service="shop", routers=[fits]).build()
    unlimited = EventBus(transport(rabbitmq_url, None), service="shop", routers=[events])
    unlimited.build()
