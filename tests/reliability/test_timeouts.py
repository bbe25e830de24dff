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
from fastapi_bus.pipeline.delivery import Delivery
from fastapi_bus.pipeline.timeouts import TimeoutMiddleware
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


def hanging_step(seconds: float) -> TimeoutMiddleware:
    """The timeout step around a call that hangs unless its delivery says ``quick``."""

    async def call(delivery: Delivery) -> None:
        if delivery.queue != "quick":
            await asyncio.Event().wait()

    return TimeoutMiddleware(call, seconds=seconds, label="handler 'hang'")


def delivery(queue: str) -> Delivery:
    events = EventRouter()
    events.on("Hang")(noop)
    return Delivery(Message(name="Hang", body=b"{}"), events.routes[0], queue)


async def noop() -> None:
    pass


async def test_calls_that_overlap_each_time_out() -> None:
    # The calls of one handler share one timer: it rings for the oldest, then for the next.
    step = hanging_step(0.05)
    first = asyncio.create_task(step(delivery("hang")))
    await asyncio.sleep(0.02)
    second = asyncio.create_task(step(delivery("hang")))
    await step(delivery("quick"))
    for task in (first, second):
        with pytest.raises(HandlerTimeout, match="timed out"):
            await asyncio.wait_for(task, 10)


async def test_a_call_after_the_oldest_returned_still_times_out() -> None:
    step = hanging_step(0.05)
    await step(delivery("quick"))  # the timer was set for this call, which returned
    with pytest.raises(HandlerTimeout):
        await asyncio.wait_for(step(delivery("hang")), 10)


def test_the_timeout_step_works_on_the_next_event_loop_too() -> None:
    # An app's lifespan may run again on a new loop (tests do): the timer follows.
    step = hanging_step(0.05)

    async def hang() -> None:
        with pytest.raises(HandlerTimeout):
            await asyncio.wait_for(step(delivery("hang")), 10)

    asyncio.run(hang())
    asyncio.run(hang())
