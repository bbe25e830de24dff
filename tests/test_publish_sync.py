"""Publishing from code that runs in a worker thread (``def`` endpoints, handlers, background
tasks), and the keyword options that ``publish`` and ``encode`` accept."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import BackgroundTasks, HTTPException
from fastapi.testclient import TestClient

from fastapi_bus import (
    Bus,
    EventRouter,
    Message,
    Publisher,
    PublishError,
)
from fastapi_bus.testing import drain, publish
from tests.helpers import OrderPlaced, OrderShipped, Recorder, make_app, order_router


def test_a_def_endpoint_publishes_with_publish_sync_when_the_request_succeeds() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders")
    def place(order: OrderPlaced, bus: Bus) -> dict[str, str]:
        message_id = bus.publish_sync(order)
        if order.total < 0:
            raise HTTPException(status_code=422, detail="negative total")
        return {"message_id": message_id}

    with TestClient(app) as client:
        ok = client.post(
            "/orders", json={"order_id": "1", "total": 1}, headers={"X-Request-ID": "r1"}
        )
        refused = client.post("/orders", json={"order_id": "2", "total": -1})
        drain(client)
    assert ok.status_code == 200 and refused.status_code == 422
    assert [e.order_id for e in recorder.events] == ["1"]  # type: ignore[attr-defined]
    assert recorder.messages[0].id == ok.json()["message_id"]
    assert recorder.messages[0].correlation_id == "r1"


def test_publish_sync_with_immediate_and_in_a_background_task_goes_through_the_loop() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    def later(bus: Publisher) -> None:
        bus.publish_sync(OrderPlaced(order_id="after", total=1))

    @app.post("/orders")
    def place(bus: Bus, tasks: BackgroundTasks) -> None:
        bus.publish_sync(OrderPlaced(order_id="now", total=1), immediate=True)
        tasks.add_task(later, bus)
        raise HTTPException(status_code=409)

    @app.post("/ok")
    def ok(bus: Bus, tasks: BackgroundTasks) -> None:
        tasks.add_task(later, bus)

    with TestClient(app) as client:
        assert client.post("/orders").status_code == 409
        assert client.post("/ok").status_code == 200
        drain(client)
    # The failed request's immediate event went out; its background task never ran.
    assert [e.order_id for e in recorder.events] == ["now", "after"]  # type: ignore[attr-defined]


def test_awaitless_publish_in_a_def_endpoint_fails_at_the_call() -> None:
    recorder = Recorder()
    app, extension = make_app(order_router(recorder))

    @app.post("/orders")
    def place(bus: Bus) -> None:
        bus.publish(OrderPlaced(order_id="1", total=1))  # type: ignore[unused-coroutine]

    @app.post("/via-extension")
    def via_extension() -> None:
        extension.bus.publish(OrderPlaced(order_id="2", total=1))  # type: ignore[unused-coroutine]

    with TestClient(app) as client:
        for path in ("/orders", "/via-extension"):
            with pytest.raises(PublishError, match=r"worker thread.*publish_sync"):
                client.post(path)
        drain(client)
    assert recorder.events == []


def test_publish_sync_on_the_event_loop_is_refused() -> None:
    app, _ = make_app(order_router(Recorder()))

    @app.post("/orders")
    async def place(bus: Bus) -> None:
        bus.publish_sync(OrderPlaced(order_id="1", total=1))

    with TestClient(app) as client, pytest.raises(PublishError, match=r"await bus\.publish"):
        client.post("/orders")


def test_publish_sync_from_a_thread_with_no_way_to_the_loop_is_a_clear_error() -> None:
    app, extension = make_app(order_router(Recorder()))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            extension.bus.publish_sync(OrderPlaced(order_id="1", total=1))
        except PublishError as exc:
            errors.append(exc)

    with TestClient(app):
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "from this thread" in str(errors[0])


def test_a_def_handler_publishes_with_publish_sync() -> None:
    recorder = Recorder()
    events = EventRouter()
    seen_threads: list[str] = []

    @events.on("OrderPlaced")
    def ship(event: OrderPlaced, bus: Bus) -> None:
        seen_threads.append(threading.current_thread().name)
        bus.publish_sync(OrderShipped(order_id=event.order_id))

    @events.on("OrderShipped")
    async def notify(event: OrderShipped, msg: Message) -> None:
        recorder.add(event, msg)

    app, _ = make_app(events)
    with TestClient(app) as client:
        placed = publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert recorder.events == [OrderShipped(order_id="1")]
    assert recorder.messages[0].causation_id == placed
    assert seen_threads and seen_threads[0] != threading.main_thread().name


@pytest.mark.parametrize("call", ["publish", "publish_sync", "bus_publish", "encode", "testing"])
def test_an_unknown_publish_keyword_fails_at_the_call(call: str) -> None:
    app, extension = make_app(order_router(Recorder()))
    order = OrderPlaced(order_id="1", total=1)
    bus: Any = extension.bus
    publisher: Any = Publisher(bus)
    with TestClient(app) as client:
        calls: dict[str, Callable[[], object]] = {
            "publish": lambda: publisher.publish(order, dealy=1),
            "publish_sync": lambda: publisher.publish_sync(order, dealy=1),
            "bus_publish": lambda: bus.publish(order, dealy=1),
            "encode": lambda: bus.encode(order, dealy=1),
            "testing": lambda: publish(client, order, dealy=1),  # type: ignore[call-arg]
        }
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'dealy'"):
            calls[call]()
