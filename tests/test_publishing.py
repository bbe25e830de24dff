from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import HTTPException, WebSocket
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, field_serializer

from fastapi_bus import (
    Bus,
    BusExtension,
    EventBus,
    EventRouter,
    EventValidationError,
    FastAPI,
    MemoryTransport,
    Message,
    PublishError,
    RetryPolicy,
    UnknownEventError,
)
from fastapi_bus.core.messages import new_id
from fastapi_bus.pipeline.work import DISCARDED, SETTLED, claimed_work
from fastapi_bus.runtime.publishing import claim
from fastapi_bus.runtime.registry import EventRegistry
from fastapi_bus.testing import drain, publish
from tests.helpers import (
    OrderPlaced,
    OrderShipped,
    Recorder,
    background_task_outcomes,
    make_app,
    order_router,
)


def test_publish_model_and_name_with_dict() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders", status_code=202)
    async def place(order: OrderPlaced, bus: Bus) -> dict[str, str]:
        await bus.publish(order)
        await bus.publish("OrderPlaced", {"order_id": "2", "total": "3.5"})
        return {"accepted": order.order_id}

    with TestClient(app) as client:
        response = client.post(
            "/orders", json={"order_id": "1", "total": 1}, headers={"X-Request-ID": "req-42"}
        )
        assert response.status_code == 202
        drain(client)
    assert recorder.events == [
        OrderPlaced(order_id="1", total=1),
        OrderPlaced(order_id="2", total=3.5),
    ]
    assert [m.correlation_id for m in recorder.messages] == ["req-42", "req-42"]
    assert all(m.name == "OrderPlaced" and m.causation_id is None for m in recorder.messages)
    assert len({m.id for m in recorder.messages}) == 2


def test_a_request_sends_its_held_events_together_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))
    batches: list[list[str]] = []
    publish_many = MemoryTransport.publish_many

    async def spy(self: MemoryTransport, messages: Any) -> None:
        batches.append([message.body.decode() for message, _ in messages])
        await publish_many(self, messages)

    monkeypatch.setattr(MemoryTransport, "publish_many", spy)

    @app.post("/orders", status_code=202)
    async def place(bus: Bus) -> None:
        for n in range(3):
            await bus.publish(OrderPlaced(order_id=str(n), total=n))

    with TestClient(app) as client:
        assert client.post("/orders").status_code == 202
        drain(client)
    # One hand-over to the transport for the request's three events, which keep their order.
    assert len(batches) == 1
    assert [event.order_id for event in recorder.events] == ["0", "1", "2"]  # type: ignore[attr-defined]


def test_a_request_without_request_id_gets_one_shared_correlation_id() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await bus.publish(OrderPlaced(order_id="2", total=1))

    with TestClient(app) as client:
        client.post("/orders")
        client.post("/orders")
        drain(client)
    ids = [m.correlation_id for m in recorder.messages]
    assert ids[0] and ids[0] == ids[1]
    assert ids[2] and ids[2] == ids[3] and ids[2] != ids[0]


def test_the_request_publisher_tells_its_correlation_id() -> None:
    app, _ = make_app(order_router(Recorder()))

    @app.get("/id")
    async def which(bus: Bus) -> str | None:
        return bus.correlation_id

    with TestClient(app) as client:
        assert client.get("/id", headers={"X-Request-ID": " req-7 "}).json() == "req-7"
        made = client.get("/id").json()
        assert isinstance(made, str) and len(made) == 32
        assert client.get("/id").json() != made


@pytest.mark.parametrize("failure", ["http-exception", "error-status", "crash"])
def test_events_of_a_failed_request_are_not_sent(failure: str) -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders")
    async def place(bus: Bus) -> Any:
        await bus.publish(OrderPlaced(order_id="lost", total=1))
        if failure == "http-exception":
            raise HTTPException(409, "conflict")
        if failure == "error-status":
            return JSONResponse({"error": "no"}, status_code=503)
        raise RuntimeError("the endpoint crashed")

    @app.post("/ok")
    async def ok(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="kept", total=1))

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/orders").status_code >= 400
        client.post("/ok")
        drain(client)
    assert [e.order_id for e in recorder.events] == ["kept"]  # type: ignore[attr-defined]


def test_immediate_is_sent_even_if_the_request_fails() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.post("/orders")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="now", total=1), immediate=True)
        await bus.publish(OrderPlaced(order_id="held", total=1))
        raise HTTPException(400)

    with TestClient(app) as client:
        assert client.post("/orders").status_code == 400
        drain(client)
    assert [e.order_id for e in recorder.events] == ["now"]  # type: ignore[attr-defined]


def test_events_are_sent_before_the_response() -> None:
    # No queue takes "Nobody", and this broker refuses unroutable events: if the response were
    # sent before the events, the client would see a 2xx for events that were never sent.
    app = FastAPI()
    app.include_extension(BusExtension(transport=MemoryTransport(unroutable="raise"), service="s"))

    class Nobody(BaseModel):
        n: int

    @app.post("/x")
    async def place(bus: Bus) -> dict[str, str]:
        await bus.publish(Nobody(n=1))
        return {"ok": "yes"}

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/x").status_code == 500


def test_unknown_event_name_is_refused_and_nothing_sent() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))
    errors: list[Exception] = []

    @app.post("/x")
    async def place(bus: Bus) -> None:
        calls: list[Callable[[], Awaitable[str]]] = [
            lambda: bus.publish("OrderPlacd", {"order_id": "1", "total": 1}),
            lambda: bus.publish("OrderPlaced", {"order_id": "1"}),
            lambda: bus.publish("OrderPlaced", {"order_id": "1", "total": "lots"}),
            lambda: bus.publish("OrderPlaced", OrderShipped(order_id="1")),
            lambda: bus.publish(OrderPlaced.model_construct(order_id="1", total="x")),
            lambda: bus.publish("not a name!", {"order_id": "1", "total": 1}),
        ]
        for call in calls:
            try:
                await call()
            except PublishError as exc:
                errors.append(exc)
            except Exception as exc:  # ConfigurationError for the invalid name
                errors.append(exc)

    with TestClient(app) as client:
        client.post("/x")
        drain(client)
    assert recorder.events == []
    assert [type(e) for e in errors[:5]] == [UnknownEventError] + [EventValidationError] * 4
    assert "OrderPlacd" in str(errors[0]) and "publishes" in str(errors[0])
    assert "total" in str(errors[1])
    assert len(errors) == 6


def test_message_ids_are_unique_across_threads() -> None:
    """Ids are made ahead in a pool: threads taking them at once never get the same one."""
    per_thread = 5_000
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(per_thread)], range(4)))
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids) == 4 * per_thread
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_every_publish_of_a_class_validates_its_own_bytes() -> None:
    """What is worked out once per class (its name, its model) does not skip the validation
    of each event's bytes."""

    class Rounded(BaseModel):
        total: float

        @field_serializer("total")
        def words(self, total: float) -> Any:
            return "lots" if total > 100 else total

    registry = EventRegistry()
    registry.add("OrderPlaced", OrderPlaced, "test")
    for _ in range(2):
        assert registry.encode(OrderPlaced(order_id="1", total=1)).name == "OrderPlaced"
        assert registry.encode(Rounded(total=1)).body == b'{"total":1.0}'
    changed = OrderPlaced(order_id="1", total=1)
    changed.total = "x"  # type: ignore[assignment]
    refused = [
        OrderPlaced.model_construct(order_id="1", total="x"),
        changed,
        Rounded(total=101),
    ]
    for event in refused:
        with pytest.raises(EventValidationError):
            registry.encode(event)


def test_publishes_declares_the_name_a_model_is_sent_under() -> None:
    seen: list[Message] = []
    events = EventRouter(prefix="orders")
    events.publishes("shipped", OrderShipped)

    everything = EventRouter()

    @everything.on("#", name="audit")
    async def audit(msg: Message) -> None:
        seen.append(msg)

    class Undeclared(BaseModel):
        x: int

    app, _ = make_app(events, everything)

    @app.post("/x")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderShipped(order_id="1"))
        await bus.publish("orders.shipped", {"order_id": "2"})
        await bus.publish(Undeclared(x=1))

    with TestClient(app) as client:
        client.post("/x")
        drain(client)
    assert [m.name for m in seen] == ["orders.shipped", "orders.shipped", "Undeclared"]


def test_delay_holds_the_event_back() -> None:
    arrivals: list[float] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def on_order(event: OrderPlaced) -> None:
        arrivals.append(time.monotonic())

    app, _ = make_app(events)
    sent: list[float] = []

    @app.post("/x")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="1", total=1), delay=0.2)
        sent.append(time.monotonic())

    with TestClient(app) as client:
        client.post("/x")
        drain(client)
    assert len(arrivals) == 1 and arrivals[0] - sent[0] >= 0.15


def test_handler_publishes_with_correlation_and_causation() -> None:
    shipped: list[Message] = []
    events = EventRouter()
    placed_ids: list[str] = []

    @events.on(OrderPlaced)
    async def ship(event: OrderPlaced, msg: Message, bus: Bus) -> None:
        placed_ids.append(msg.id)
        await bus.publish(OrderShipped(order_id=event.order_id))

    @events.on(OrderShipped)
    async def notify(event: OrderShipped, msg: Message) -> None:
        shipped.append(msg)

    app, _ = make_app(events)

    @app.post("/x")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="1", total=1))

    with TestClient(app) as client:
        client.post("/x", headers={"X-Request-ID": "r1"})
        drain(client)
    assert len(shipped) == 1
    assert shipped[0].correlation_id == "r1"
    assert shipped[0].causation_id == placed_ids[0]


def test_a_failing_handler_sends_nothing_and_its_message_comes_back() -> None:
    shipped: list[str] = []
    attempts: list[bool] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def ship(event: OrderPlaced, msg: Message, bus: Bus) -> None:
        attempts.append(msg.redelivered)
        await bus.publish(OrderShipped(order_id=f"try-{len(attempts)}"))
        if len(attempts) == 1:
            raise RuntimeError("database hiccup")

    @events.on(OrderShipped)
    async def notify(event: OrderShipped) -> None:
        shipped.append(event.order_id)

    app, _ = make_app(events)
    with TestClient(app) as client:
        client.portal.call(app.state.fastapi_bus.publish, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert len(attempts) == 2, "the handler was retried"
    assert shipped == ["try-2"], "only the successful attempt's events were sent"


@pytest.mark.parametrize("fails", [False, True])
def test_a_task_started_by_a_handler_publishes_after_it_ended(fails: bool) -> None:
    """The handler publishes nothing itself (so its publisher is made only when its task asks):
    after a success the task's events go out at once; after a failure they are refused."""
    shipped: list[str] = []
    outcomes: list[BaseException | None] = []
    ended = asyncio.Event()
    events = EventRouter()
    tasks: set[asyncio.Task[None]] = set()

    async def later(event: OrderPlaced) -> None:
        await ended.wait()
        try:  # joins the handler's unit of work: the task runs in a copy of its context
            await extension.bus.publish(OrderShipped(order_id=event.order_id))
            outcomes.append(None)
        except PublishError as exc:
            outcomes.append(exc)

    @events.on(OrderPlaced, retry=RetryPolicy(attempts=1, delays=()))
    async def ship(event: OrderPlaced) -> None:
        task = asyncio.create_task(later(event))
        tasks.add(task)
        if fails:
            raise RuntimeError("handler failed")

    @events.on(OrderShipped)
    async def notify(event: OrderShipped) -> None:
        shipped.append(event.order_id)

    app, extension = make_app(events)
    with TestClient(app) as client:
        client.portal.call(extension.bus.publish, OrderPlaced(order_id="1", total=1))
        drain(client)
        client.portal.call(ended.set)
        client.portal.call(asyncio.gather, *tasks)
        drain(client)
    assert len(outcomes) == 1
    if fails:
        assert isinstance(outcomes[0], PublishError) and shipped == []
    else:
        assert outcomes == [None] and shipped == ["1"]


def test_publishing_outside_the_lifespan_is_a_clear_error() -> None:
    _, extension = make_app(order_router(Recorder()))
    with pytest.raises(PublishError, match="TestClient"):
        asyncio.run(extension.bus.publish(OrderPlaced(order_id="1", total=1)))


def test_publish_from_outside_a_request() -> None:
    recorder = Recorder()
    app, extension = make_app(order_router(recorder))
    with TestClient(app) as client:
        message_id = client.portal.call(extension.bus.publish, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert [m.id for m in recorder.messages] == [message_id]
    assert recorder.messages[0].correlation_id is None


def test_background_tasks_of_a_failed_request_cannot_publish() -> None:
    outcomes = background_task_outcomes(
        lambda bus: bus.publish(OrderPlaced(order_id="late", total=1))
    )
    assert "failed" in outcomes[0]
    assert outcomes[1] == "sent"


def test_an_app_can_run_its_lifespan_again() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))
    for n in range(2):
        with TestClient(app) as client:
            publish(client, OrderPlaced(order_id=str(n), total=1))
            drain(client)
    assert [e.order_id for e in recorder.events] == ["0", "1"]  # type: ignore[attr-defined]


def test_websocket_endpoints_publish_at_once() -> None:
    recorder = Recorder()
    app, _ = make_app(order_router(recorder))

    @app.websocket("/ws")
    async def orders_socket(websocket: WebSocket, bus: Bus) -> None:
        await websocket.accept()
        order = OrderPlaced.model_validate(await websocket.receive_json())
        await bus.publish(order)
        await websocket.send_json({"accepted": order.order_id})
        await websocket.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers={"X-Request-ID": "ws-1"}) as socket:
            socket.send_json({"order_id": "w1", "total": 2})
            assert socket.receive_json() == {"accepted": "w1"}
        drain(client)
    assert [e.order_id for e in recorder.events] == ["w1"]  # type: ignore[attr-defined]
    assert recorder.messages[0].correlation_id == "ws-1"


@pytest.mark.anyio
async def test_a_handlers_work_settles_before_or_after_its_first_publish() -> None:
    """Ending a call that published nothing makes nothing; a publish after the end sends at
    once (or is refused, after a failure); publishes before it are held until then."""
    bus = EventBus(MemoryTransport(), service="shop", routers=[order_router(Recorder())])
    await bus.start()
    try:
        cause = Message("OrderPlaced", b"{}")
        idle = [bus, cause]
        assert claimed_work(idle, SETTLED) is None
        await claim(idle).publisher.publish(OrderPlaced(order_id="late", total=1))
        assert await bus.transport.browse("shop.reserve_stock") != []

        failed = [bus, cause]
        assert claimed_work(failed, DISCARDED) is None
        with pytest.raises(PublishError, match="failed"):
            await claim(failed).publisher.publish(OrderPlaced(order_id="refused", total=1))

        busy = [bus, cause]
        await claim(busy).publisher.publish(OrderPlaced(order_id="held", total=1))
        assert claim(busy) is claim(busy)  # one unit of work per call
        assert len(await bus.transport.browse("shop.reserve_stock")) == 1
        work = claimed_work(busy, SETTLED)
        assert work is not None
        await work.flush()
        shipped = await bus.transport.browse("shop.reserve_stock")
        assert [m.causation_id for m in shipped] == [cause.id, cause.id]
    finally:
        await bus.close()
