"""RabbitMQ's consumer timeout never closes the channel under a slow handler: on a node of the
tests' own whose consumer timeout is 3 s (a shared broker keeps its 30 minutes)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fastapi_bus import EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from tests.helpers import OrderPlaced
from tests.rabbitmq_nodes import RabbitNode
from tests.reliability.conftest import OWN_CONSUMER_TIMEOUT
from tests.test_broker_bus import start
from tests.utils import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


def slow_router(calls: list[tuple[str, bool]], gate: asyncio.Event) -> EventRouter:
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced, prefetch=1)
    async def slow(event: OrderPlaced, msg: Message) -> None:
        calls.append((event.order_id, msg.redelivered))
        if event.order_id == "slow":
            await gate.wait()

    return events


TIMED_OUT = "timed out waiting for delivery acknowledgement"


def bus_on(node: RabbitNode, router: EventRouter, consumer_timeout: float | None) -> EventBus:
    transport = RabbitMQTransport(
        node.url,
        exchange=f"ct-{uuid.uuid4().hex[:8]}",
        auto_delete_topology=True,
        consumer_timeout=consumer_timeout,
    )
    return EventBus(transport, service=f"svc{uuid.uuid4().hex[:8]}", routers=[router])


async def test_unguarded_the_broker_closes_the_channel_under_a_slow_handler(
    own_rabbitmq: RabbitNode, running: list[EventBus]
) -> None:
    """What the guard prevents: told nothing of the limit, the bus lets the handler run and the
    broker closes its channel (and delivers the message again, to wait behind the first call)."""
    calls: list[tuple[str, bool]] = []
    gate = asyncio.Event()
    bus = await start(bus_on(own_rabbitmq, slow_router(calls, gate), None), running)
    before = own_rabbitmq.log().count(TIMED_OUT)
    try:
        await bus.publish(OrderPlaced(order_id="slow", total=1))
        await wait_until(
            lambda: own_rabbitmq.log().count(TIMED_OUT) > before, timeout=30, what="the broker"
        )
    finally:
        gate.set()


async def test_guarded_a_slow_handler_is_cancelled_before_the_broker_acts(
    own_rabbitmq: RabbitNode, running: list[EventBus]
) -> None:
    calls: list[tuple[str, bool]] = []
    gate = asyncio.Event()
    router = slow_router(calls, gate)
    bus = await start(bus_on(own_rabbitmq, router, OWN_CONSUMER_TIMEOUT), running)
    before = own_rabbitmq.log().count(TIMED_OUT)
    try:
        await bus.publish(OrderPlaced(order_id="slow", total=1))
        await bus.publish(OrderPlaced(order_id="next", total=1))
        await wait_until(lambda: ("next", False) in calls, timeout=30, what="the next message")
        (letter,) = await bus.dead_letters.list()
        # Proving an absence takes waiting: past the broker's limit, it has not acted.
        await asyncio.sleep(OWN_CONSUMER_TIMEOUT + 1)
    finally:
        gate.set()
    assert own_rabbitmq.log().count(TIMED_OUT) == before, "the channel was never closed"
    assert "timed out" in letter.reason
    assert calls == [("slow", False), ("next", False)], "nothing was delivered again"
