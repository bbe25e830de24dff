"""``publish_many``: several events validated first, then sent in order, in requests, in
handlers and outside them, with the options of ``publish``. (On the real brokers:
tests/transports/test_publish_many.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastapi_bus import (
    Bus,
    EventBus,
    EventRouter,
    EventValidationError,
    MemoryTransport,
    Message,
    PublishError,
    Reject,
    Tracing,
)
from fastapi_bus.testing import drain
from tests.helpers import (
    OrderPlaced,
    OrderShipped,
    Recorder,
    background_task_outcomes,
    make_app,
    order_router,
)


def orders(*ids: str) -> list[OrderPlaced]:
    return [OrderPlaced(order_id=order_id, total=1) for order_id in ids]


def order_ids(recorder: Recorder) -> list[str]:
    return [event.order_id for event in recorder.events]  # type: ignore[attr-defined]


def test_a_request_holds_them_with_its_other_events_and_sends_them_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))
    batches: list[list[str]] = []
    returned: list[str] = []
    publish_many = MemoryTransport.publish_many

    async def spy(self: MemoryTransport, messages: Any) -> None:
        batches.append([message.id for message, _ in messages])
        await publish_many(self, messages)

    monkeypatch.setattr(MemoryTransport, "publish_many", spy)

    @app.post("/orders", status_code=202)
    async def place(bus: Bus) -> None:
        returned.append(await bus.publish(OrderPlaced(order_id="a", total=1)))
        more: list[OrderPlaced | tuple[str, dict[str, Any]]] = [
            *orders("b", "c"),
            ("OrderPlaced", {"order_id": "d", "total": 2}),
        ]
        returned.extend(await bus.publish_many(more))

    with TestClient(app) as client:
        response = client.post("/orders", headers={"X-Request-ID": "req-9"})
        assert response.status_code == 202
        drain(client)
    assert order_ids(recorder) == ["a", "b", "c", "d"]
    assert [m.id for m in recorder.messages] == returned
    assert {m.correlation_id for m in recorder.messages} == {"req-9"}
    assert batches == [returned]  # held, then handed to the transport at once, in order


@pytest.mark.parametrize("failure", ["http-exception", "error-status", "crash"])
def test_a_failed_request_sends_none_of_them(failure: str) -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders")
    async def place(bus: Bus) -> Any:
        await bus.publish_many(orders("lost-1", "lost-2"))
        if failure == "http-exception":
            raise HTTPException(409, "conflict")
        if failure == "error-status":
            return JSONResponse({"error": "no"}, status_code=503)
        raise RuntimeError("the endpoint crashed")

    @app.post("/ok")
    async def ok(bus: Bus) -> None:
        await bus.publish_many(orders("kept"))

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/orders").status_code >= 400
        client.post("/ok")
        drain(client)
    assert order_ids(recorder) == ["kept"]


def test_immediate_sends_them_even_if_the_request_fails() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders")
    async def place(bus: Bus) -> None:
        await bus.publish_many(orders("now-1", "now-2"), immediate=True)
        await bus.publish_many(orders("held"))
        raise HTTPException(400)

    with TestClient(app) as client:
        assert client.post("/orders").status_code == 400
        drain(client)
    assert order_ids(recorder) == ["now-1", "now-2"]


def test_one_invalid_event_sends_none_and_the_request_fails() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))
    errors: list[Exception] = []

    @app.post("/orders")
    async def place(bus: Bus) -> None:
        try:
            await bus.publish_many(
                [*orders("1"), ("OrderPlaced", {"order_id": "2", "total": "lots"}), *orders("3")],
                immediate=True,
            )
        except EventValidationError as exc:
            errors.append(exc)
        await bus.publish(OrderPlaced(order_id="after", total=1))

    with TestClient(app) as client:
        assert client.post("/orders").status_code == 200
        drain(client)
    assert len(errors) == 1 and "total" in str(errors[0])
    assert order_ids(recorder) == ["after"]


def test_a_handler_sends_them_when_it_returns_with_the_message_as_their_cause() -> None:
    recorder = Recorder()
    shipped: list[Message] = []
    events = EventRouter()

    @events.on("OrderPlaced")
    async def ship(event: OrderPlaced, message: Message, bus: Bus) -> None:
        recorder.add(event, message)
        await bus.publish_many([OrderShipped(order_id=f"{event.order_id}-{n}") for n in range(3)])

    @events.on("OrderShipped")
    async def record_shipped(event: OrderShipped, message: Message) -> None:
        shipped.append(message)

    app, extension = make_app(events)
    with TestClient(app) as client:
        client.portal.call(extension.bus.publish, OrderPlaced(order_id="o", total=1))
        drain(client)
    placed = recorder.messages[0]
    assert [OrderShipped.model_validate_json(m.body).order_id for m in shipped] == [
        "o-0",
        "o-1",
        "o-2",
    ]
    assert {(m.causation_id, m.correlation_id) for m in shipped} == {(placed.id, placed.id)}


def test_a_failed_handler_sends_none_of_them() -> None:
    shipped: list[str] = []
    calls: list[str] = []
    events = EventRouter()

    @events.on("OrderPlaced")
    async def ship(event: OrderPlaced, bus: Bus) -> None:
        calls.append(event.order_id)
        await bus.publish_many([OrderShipped(order_id="never")])
        raise Reject("the handler failed after publishing")  # dead-lettered, not retried

    @events.on("OrderShipped")
    async def record_shipped(event: OrderShipped) -> None:
        shipped.append(event.order_id)

    app, extension = make_app(events)
    with TestClient(app) as client:
        client.portal.call(extension.bus.publish, OrderPlaced(order_id="o", total=1))
        client.portal.call(extension.bus.publish, OrderShipped(order_id="direct"))
        drain(client)
    assert calls and shipped == ["direct"]


def test_a_background_task_of_a_failed_request_cannot_publish_them() -> None:
    outcomes = background_task_outcomes(lambda bus: bus.publish_many(orders("late-1", "late-2")))
    assert "2 event(s) (OrderPlaced)" in outcomes[0] and "failed" in outcomes[0]
    assert outcomes[1] == "sent"


def test_outside_requests_they_are_sent_at_once_and_options_apply_to_each() -> None:
    recorder = Recorder()
    app, extension = make_app(order_router(recorder))

    async def publish() -> list[str]:
        return await extension.bus.publish_many(
            orders("k1", "k2"),
            headers=lambda event: {"partition-key": event.order_id},
            correlation_id="job-1",
        )

    with TestClient(app) as client:
        ids = client.portal.call(publish)
        assert client.portal.call(extension.bus.publish_many, []) == []
        drain(client)
    assert [m.id for m in recorder.messages] == ids
    assert [m.headers for m in recorder.messages] == [
        {"partition-key": "k1"},
        {"partition-key": "k2"},
    ]
    assert {m.correlation_id for m in recorder.messages} == {"job-1"}


def test_wrong_arguments_are_refused_at_the_call_and_nothing_is_sent() -> None:
    recorder = Recorder()
    app, extension = make_app(order_router(recorder))
    bus = extension.bus
    errors: list[Exception] = []

    async def attempts() -> None:
        calls: list[Callable[[], Awaitable[list[str]]]] = [
            lambda: bus.publish_many(OrderPlaced(order_id="1", total=1)),
            lambda: bus.publish_many("OrderPlaced"),  # type: ignore[arg-type]
            lambda: bus.publish_many([*orders("2"), "OrderPlaced"]),  # type: ignore[list-item]
            lambda: bus.publish_many([*orders("3"), ("OrderPlaced",)]),  # type: ignore[list-item]
            lambda: bus.publish_many(orders("4"), dealy=3),  # type: ignore[call-arg]
            lambda: bus.publish_many(orders("5"), delay=-1),
        ]
        for call in calls:
            try:
                await call()
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        await bus.publish(OrderPlaced(order_id="after", total=1))

    with TestClient(app) as client:
        client.portal.call(attempts)
        drain(client)
    assert [type(e) for e in errors] == [TypeError] * 5 + [ValueError]
    assert "publish()" in str(errors[0]) and "dealy" in str(errors[4])
    assert order_ids(recorder) == ["after"]


def test_from_a_worker_thread_it_says_to_publish_sync_there() -> None:
    app, _ = make_app(order_router(Recorder()))
    errors: list[str] = []

    @app.post("/orders")
    def place(bus: Bus) -> None:
        try:
            bus.publish_many(orders("1")).close()
        except PublishError as exc:
            errors.append(str(exc))

    with TestClient(app) as client:
        client.post("/orders")
    assert len(errors) == 1 and "publish_sync" in errors[0]


class FakeOutbox:
    """A transactional outbox that keeps what it is given."""

    def __init__(self) -> None:
        self.added: list[tuple[Any, str, float | None, str | None]] = []

    async def add(
        self, session: Any, message: Message, *, delay: float | None, key: str | None
    ) -> None:
        self.added.append((session, message.id, delay, key))

    async def start(self, send: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.mark.anyio
async def test_with_a_session_they_go_to_the_transactional_outbox_with_their_keys() -> None:
    outbox = FakeOutbox()
    bus = EventBus(MemoryTransport(), service="shop", outbox=outbox)
    await bus.start()
    try:
        session = object()
        ids = await bus.publish_many(
            orders("a", "b"), session=session, key=lambda event: f"customer-{event.order_id}"
        )
        same = await bus.publish_many(orders("c"), session=session, key="one", delay=5)
    finally:
        await bus.close()
    assert outbox.added == [
        (session, ids[0], None, "customer-a"),
        (session, ids[1], None, "customer-b"),
        (session, same[0], 5, "one"),
    ]


@pytest.mark.anyio
async def test_each_event_gets_its_own_publish_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router = order_router(Recorder())
    bus = EventBus(MemoryTransport(), service="shop", routers=[router], tracing=Tracing(provider))
    await bus.start()
    await bus.start_consuming()
    try:
        ids = await bus.publish_many(orders("1", "2", "3"))
        await bus.wait_idle()
    finally:
        await bus.close()
        provider.shutdown()
    sends = [s for s in exporter.get_finished_spans() if s.name == "publish OrderPlaced"]
    assert [s.attributes["messaging.message.id"] for s in sends if s.attributes] == ids
