"""Hostile input on the consume path of every transport: no crash, no hang, every message
accounted for (handled, or dead-lettered with a reason that says what was wrong with it).

The number of examples follows the hypothesis profile (see ``tests/reliability/conftest.py``):
``FASTAPI_BUS_HYPOTHESIS_PROFILE=long`` for a long run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings

from fastapi_bus import CounterMetrics, EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.pipeline.decoding import Decoder, InvalidMessage
from fastapi_bus.transports.base import dead_letter_queue
from tests.helpers import OrderPlaced
from tests.reliability.conftest import BusFactory
from tests.reliability.hostile import MAX_SIZE, Raw, inject, raw_messages
from tests.utils import wait_until

pytestmark = pytest.mark.anyio

#: What a dead letter of a hostile message may say: each names what is wrong with it.
KNOWN_REASONS = (
    "unsupported content type",
    "payload of ",  # "payload of 'X' does not validate for handler ..."
    "body is not valid JSON",
    "body is ",  # "body is N bytes, over max_message_size"
)


class Reasons(CounterMetrics):
    """Counts, and keeps every dead-letter reason."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        self.reasons.append(reason)
        super().dead_lettered(handler, event, reason)


class Suite:
    """One bus per test; each example is injected and awaited until it is accounted for."""

    def __init__(self) -> None:
        self.bus: EventBus | None = None
        self.metrics = Reasons()
        self.injected = 0
        self.handled: list[str] = []

    def outcomes(self) -> int:
        return len(self.handled) + len(self.metrics.reasons)

    async def bus_on(self, new_bus: BusFactory) -> EventBus:
        if self.bus is None:
            events = EventRouter()

            @events.on(OrderPlaced, retry=RetryPolicy(attempts=1, delays=(0.01,)))
            async def record(event: OrderPlaced, msg: Message) -> None:
                self.handled.append(msg.id)

            self.bus = await new_bus(events, max_message_size=MAX_SIZE, metrics=self.metrics)
        return self.bus

    async def feed(self, new_bus: BusFactory, raw: Raw) -> None:
        bus = await self.bus_on(new_bus)
        await inject(bus.transport, bus.queue_for(bus.routes[0]), raw)
        self.injected += 1
        await wait_until(
            lambda: self.outcomes() >= self.injected, timeout=20, what=f"an outcome: {raw!r:.300}"
        )
        assert self.outcomes() == self.injected, f"one outcome per message: {raw!r:.300}"
        for reason in self.metrics.reasons:
            assert reason.startswith(KNOWN_REASONS), f"{reason}\n{raw!r:.300}"

    async def check(self) -> None:
        """After the examples: the dead letters are all in the queue, nothing is stuck."""
        if self.bus is None:
            return
        queue = self.bus.queue_for(self.bus.routes[0])
        letters = await self.bus.transport.browse(dead_letter_queue(queue), limit=100_000)
        assert len(letters) == len(self.metrics.reasons)
        assert await self.bus.transport.browse(queue) == [], "nothing is stuck"


@pytest.fixture
async def suite() -> AsyncIterator[Suite]:
    made = Suite()
    yield made
    await made.check()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=raw_messages)
async def test_hostile_messages_are_handled_or_dead_lettered_with_a_reason(
    new_bus: BusFactory, suite: Suite, raw: Raw
) -> None:
    await suite.feed(new_bus, raw)


def test_raw_json_nested_too_deeply_is_invalid_not_a_crash() -> None:
    decode = Decoder(None, "handler 'raw'")
    with pytest.raises(InvalidMessage, match="nested too deeply"):
        decode(Message(name="x", body=b"[" * 100_000 + b"]" * 100_000))
