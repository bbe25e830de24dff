"""Hung handlers: a call that runs past its timeout is cancelled, retried, then dead-lettered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from fastapi import Depends

from fastapi_bus import (
    ConfigurationError,
    EventBus,
    EventRouter,
    HandlerTimeout,
    MemoryTransport,
    Message,
    RetryPolicy,
)
from tests.helpers import OrderPlaced
from tests.utils import wait_until

pytestmark = pytest.mark.anyio

ONCE_THEN_REDELIVER = RetryPolicy(attempts=2, backoff=0, delays=(0.01,))


async def running(*routers: EventRouter, **options: Any) -> EventBus:
    bus = EventBus(MemoryTransport(), service="shop", routers=list(routers), **options)
    await bus.start()
    await bus.start_consuming()
    return bus


async def dead_letter_count(bus: EventBus) -> int:
    return len(await bus.dead_letters.list())


CLEANUPS: list[str] = []


async def session() -> AsyncIterator[str]:
    try:
        yield "session"
    finally:
        await asyncio.sleep(0)  # the cleanup may still await after the cancellation
        CLEANUPS.append("closed")


async def test_a_hung_handler_is_cancelled_retried_then_dead_lettered() -> None:
    calls: list[int] = []
    CLEANUPS.clear()
    events = EventRouter()

    @events.on(OrderPlaced, timeout=0.2, retry=ONCE_THEN_REDELIVER)
    async def hangs(event: OrderPlaced, msg: Message, db: Annotated[str, Depends(session)]) -> None:
        calls.append(msg.attempt)
        await asyncio.Event().wait()  # never set: the handler hangs

    bus = await running(events)
    try:
        message_id = await bus.publish(OrderPlaced(order_id="1", total=1))
        await wait_until(lambda: len(calls) == 4, what="two deliveries of two calls")
        await bus.wait_idle()
        (letter,) = await bus.dead_letters.list()
    finally:
        await bus.close(grace=1)
    assert calls == [1, 1, 2, 2]
    assert CLEANUPS == ["closed"] * 4, "the dependency's cleanup ran after every cancellation"
    assert letter.message.id == message_id
    assert "timed out" in letter.reason
    assert "0.2s" in letter.reason
    assert letter.exception_type == f"{HandlerTimeout.__module__}.HandlerTimeout"


async def test_the_bus_default_applies_and_a_handler_may_allow_longer() -> None:
    done: list[str] = []
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced)
    async def hangs(event: OrderPlaced) -> None:
        await asyncio.Event().wait()

    @events.on(OrderPlaced, timeout=30)
    async def slow(event: OrderPlaced) -> None:
        await asyncio.sleep(0.3)  # the work takes longer than the bus's default allows
        done.append(event.order_id)

    bus = await running(events, handler_timeout=0.1)
    try:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await bus.wait_idle()
        letters = await bus.dead_letters.list()
    finally:
        await bus.close(grace=1)
    assert done == ["1"]
    assert [letter.handler for letter in letters] == ["hangs"]
    assert "timed out" in letters[0].reason


async def test_a_timeout_the_handler_raises_itself_keeps_its_type() -> None:
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced, timeout=30)
    async def upstream_times_out(event: OrderPlaced) -> None:
        raise TimeoutError("the payment service did not answer")

    bus = await running(events)
    try:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await bus.wait_idle()
        (letter,) = await bus.dead_letters.list()
    finally:
        await bus.close(grace=1)
    assert letter.exception_type == "builtins.TimeoutError"
    assert "payment service" in letter.reason


async def test_a_hung_sync_handler_is_abandoned_and_its_message_released() -> None:
    release = threading.Event()
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced, timeout=0.2)
    def blocks(event: OrderPlaced) -> None:
        release.wait(30)

    bus = await running(events)
    try:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await wait_until(lambda: bus.transport.pending() == 0, what="the message released")  # type: ignore[attr-defined]
        assert await dead_letter_count(bus) == 1
    finally:
        release.set()
        await bus.close(grace=1)


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan"), float("inf")])
def test_a_wrong_timeout_fails_at_declaration_naming_the_handler(bad: object) -> None:
    events = EventRouter()
    with pytest.raises(ConfigurationError, match=r"handler 'picky'.*timeout must be a positive"):

        @events.on(OrderPlaced, timeout=bad)  # type: ignore[arg-type]
        async def picky(event: OrderPlaced) -> None: ...


def test_a_wrong_bus_default_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="handler_timeout: timeout must be a positive"):
        EventBus(MemoryTransport(), service="shop", handler_timeout=-3)
