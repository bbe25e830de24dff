"""``bus.publish_many`` on every transport: memory://, RabbitMQ, Redis and Kafka.

Each event is validated before any is sent, the events arrive in the order given, the ids
returned are theirs, and the metrics hooks hear of every event."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from fastapi_bus import (
    EventBus,
    EventRouter,
    EventValidationError,
    Message,
    Metrics,
    Tracing,
    UnknownEventError,
)
from fastapi_bus.transports.base import Transport
from tests.transports.conftest import _FACTORIES, BROKERS
from tests.utils import wait_until

pytestmark = pytest.mark.anyio


class Placed(BaseModel):
    order_id: str
    total: float


class Published(Metrics):
    def __init__(self) -> None:
        self.events: list[str] = []

    def published(self, event: str, seconds: float) -> None:
        self.events.append(event)


@pytest.fixture(params=BROKERS)
def transport(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    """Makes a transport (not started) on one broker; each test runs on all of them."""
    build: Callable[[], Transport] = _FACTORIES[request.param](request)
    return build


async def recording_bus(
    transport: Callable[[], Transport],
    running: list[EventBus],
    seen: list[Message],
    tracing: Tracing | None = None,
) -> tuple[EventBus, Published]:
    """A running bus whose one handler (one call at a time) records every ``Placed``."""
    events = EventRouter()

    @events.on(Placed, concurrency=1)
    async def record(event: Placed, message: Message) -> None:
        seen.append(message)

    metrics = Published()
    bus = EventBus(
        transport(),
        service=f"svc{uuid.uuid4().hex[:8]}",
        routers=[events],
        metrics=metrics,
        tracing=tracing,
    )
    await bus.start()
    running.append(bus)
    await bus.start_consuming()
    return bus, metrics


async def test_every_event_arrives_in_order_with_the_ids_returned(
    transport: Callable[[], Transport], running: list[EventBus]
) -> None:
    seen: list[Message] = []
    bus, metrics = await recording_bus(transport, running, seen)
    events: list[Placed | tuple[str, dict[str, object]]] = []
    for n in range(30):
        if n % 3 == 0:
            events.append(("Placed", {"order_id": str(n), "total": n}))
        else:
            events.append(Placed(order_id=str(n), total=n))

    ids = await bus.publish_many(events, headers={"tenant": "acme"}, correlation_id="batch-1")

    await wait_until(lambda: len(seen) == 30, what="30 deliveries")
    assert [Placed.model_validate_json(m.body).order_id for m in seen] == [
        str(n) for n in range(30)
    ]
    assert [m.id for m in seen] == ids and len(set(ids)) == 30
    assert {(m.headers.get("tenant"), m.correlation_id) for m in seen} == {("acme", "batch-1")}
    assert metrics.events == ["Placed"] * 30  # the hooks hear of every event


async def test_one_invalid_event_sends_none(
    transport: Callable[[], Transport], running: list[EventBus]
) -> None:
    seen: list[Message] = []
    bus, metrics = await recording_bus(transport, running, seen)

    with pytest.raises(EventValidationError):
        await bus.publish_many(
            [
                Placed(order_id="1", total=1),
                ("Placed", {"order_id": "2", "total": "not a number"}),
                Placed(order_id="3", total=3),
            ]
        )
    with pytest.raises(UnknownEventError):
        await bus.publish_many([Placed(order_id="4", total=4), ("Nobody.declares", {"a": 1})])

    # Published after the refused ones, on the same partition (Kafka) or queue: once it is
    # in, nothing of the refused calls can still be on its way.
    await bus.publish(Placed(order_id="after", total=0))
    await wait_until(lambda: len(seen) == 1, what="the event published afterwards")
    assert [Placed.model_validate_json(m.body).order_id for m in seen] == ["after"]
    assert metrics.events == ["Placed"]


async def test_with_tracing_each_event_has_its_publish_span_and_its_process_span_under_it(
    transport: Callable[[], Transport], running: list[EventBus]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[Message] = []
    bus, metrics = await recording_bus(transport, running, seen, Tracing(provider))

    ids = await bus.publish_many([Placed(order_id=str(n), total=n) for n in range(5)])

    await wait_until(lambda: len(seen) == 5, what="5 deliveries")
    sends = [s for s in exporter.get_finished_spans() if s.name == "publish Placed"]
    assert [(s.attributes or {}).get("messaging.message.id") for s in sends] == ids
    send_of = {(s.attributes or {}).get("messaging.message.id"): s for s in sends}
    process_name = f"process {bus.queue_for(bus.routes[0])}"

    def processed() -> list[Any]:
        return [s for s in exporter.get_finished_spans() if s.name == process_name]

    await wait_until(lambda: len(processed()) == 5, what="5 process spans")
    for span in processed():
        parent = send_of[(span.attributes or {}).get("messaging.message.id")].get_span_context()
        assert span.parent is not None and parent is not None
        assert span.parent.span_id == parent.span_id
    assert metrics.events == ["Placed"] * 5
    provider.shutdown()
