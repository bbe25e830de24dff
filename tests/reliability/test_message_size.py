"""Oversized events: refused on publish, dead-lettered unread on consume."""

from __future__ import annotations

import pytest

from fastapi_bus import (
    ConfigurationError,
    EventBus,
    EventRouter,
    MemoryTransport,
    Message,
    MessageTooLarge,
)
from fastapi_bus.transports.base import dead_letter_queue
from tests.helpers import OrderPlaced
from tests.reliability.conftest import BusFactory
from tests.utils import wait_until, wait_until_async

pytestmark = pytest.mark.anyio


def recording_router(seen: list[str]) -> EventRouter:
    events = EventRouter()

    @events.on(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(event.order_id)

    return events


async def test_an_event_over_the_limit_is_refused_on_publish(new_bus: BusFactory) -> None:
    seen: list[str] = []
    bus = await new_bus(recording_router(seen), max_message_size=200)
    with pytest.raises(MessageTooLarge, match=r"'OrderPlaced' is \d+ bytes encoded, over max"):
        await bus.publish(OrderPlaced(order_id="x" * 300, total=1))
    await bus.publish(OrderPlaced(order_id="small", total=1))
    await wait_until(lambda: seen == ["small"], timeout=30)
    assert await bus.dead_letters.list() == [], "the big one was never sent"


async def test_an_oversized_message_from_elsewhere_is_dead_lettered_unread(
    new_bus: BusFactory,
) -> None:
    seen: list[str] = []
    bus = await new_bus(recording_router(seen), max_message_size=1000)
    queue = bus.queue_for(bus.routes[0])
    body = b'{"order_id": "' + b"x" * 5000 + b'", "total": 1}'
    await bus.transport.send(queue, Message(name="OrderPlaced", body=body))
    await bus.publish(OrderPlaced(order_id="after", total=1))
    dlq = dead_letter_queue(queue)
    await wait_until_async(lambda: bus.transport.browse(dlq), 1, timeout=30)
    (letter,) = await bus.dead_letters.list()
    assert "over max_message_size (1,000 bytes)" in letter.reason
    assert letter.message.body == body, "kept whole, for inspection"
    assert letter.attempts == 1, "not retried"
    await wait_until(lambda: seen == ["after"], timeout=30)


def test_the_default_limit_is_one_mebibyte_and_none_lifts_it() -> None:
    assert EventBus(MemoryTransport(), service="s").registry.max_message_size == 1024 * 1024
    unlimited = EventBus(MemoryTransport(), service="s", max_message_size=None)
    assert unlimited.registry.max_message_size is None


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1MB", True])
def test_a_wrong_limit_fails_at_construction(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_message_size must be a positive number"):
        EventBus(MemoryTransport(), service="s", max_message_size=bad)  # type: ignore[arg-type]
