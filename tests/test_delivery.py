from __future__ import annotations

import pickle
import threading
from datetime import timedelta
from typing import Annotated, Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from fastapi_bus import (
    BusExtension,
    ConfigurationError,
    EventRouter,
    FastAPI,
    Message,
    Reject,
    get_bus,
)
from fastapi_bus.testing import dead_letters, drain, publish
from tests.helpers import OrderPlaced, OrderShipped, make_app


def send_raw(client: TestClient, message: Message) -> None:
    bus = get_bus(client.app)  # type: ignore[arg-type]
    client.portal.call(bus.transport.publish, message)  # type: ignore[union-attr]


def test_every_handler_gets_each_event_once_across_routers() -> None:
    seen: list[str] = []
    sales, stock = EventRouter(), EventRouter()

    @sales.on(OrderPlaced)
    async def invoice(event: OrderPlaced) -> None:
        seen.append(f"invoice {event.order_id}")

    @stock.on("OrderPlaced")
    async def reserve(event: OrderPlaced) -> None:
        seen.append(f"reserve {event.order_id}")

    @stock.on("OrderShipped")
    async def unrelated(event: OrderShipped) -> None:
        seen.append("wrong")

    app, _ = make_app(sales, stock)
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        publish(client, OrderPlaced(order_id="2", total=1))
        drain(client)
    assert sorted(seen) == ["invoice 1", "invoice 2", "reserve 1", "reserve 2"]


def test_handlers_get_the_event_by_position_or_by_keyword() -> None:
    seen: list[str] = []
    router = EventRouter()

    @router.on(OrderPlaced)
    async def positional(event: OrderPlaced) -> None:
        seen.append(f"positional {event.order_id}")

    @router.on(OrderPlaced)
    async def keyword_only(*, order: OrderPlaced) -> None:
        seen.append(f"keyword {order.order_id}")

    app, _ = make_app(router)
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert sorted(seen) == ["keyword 1", "positional 1"]


def test_wildcard_handlers_match_by_pattern() -> None:
    seen: list[tuple[str, str]] = []
    events = EventRouter(prefix="orders")

    class Placed(BaseModel):
        order_id: str

    events.publishes("placed", Placed)
    events.publishes("eu.placed", Placed)

    @events.on("*", name="one_word")
    async def one_word(msg: Message) -> None:
        seen.append(("*", msg.name))

    @events.on("#", name="any_depth")
    async def any_depth(event: dict[str, Any], msg: Message) -> None:
        seen.append(("#", msg.name))
        assert event == {"order_id": "1"}

    app, _ = make_app(events)
    with TestClient(app) as client:
        publish(client, "orders.placed", {"order_id": "1"})
        publish(client, "orders.eu.placed", {"order_id": "1"})
        drain(client)
    assert sorted(seen) == [
        ("#", "orders.eu.placed"),
        ("#", "orders.placed"),
        ("*", "orders.placed"),
    ]


def test_invalid_payloads_are_dead_lettered_with_the_reason() -> None:
    handled: list[OrderPlaced] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        handled.append(event)

    app, _ = make_app(events)
    with TestClient(app) as client:
        send_raw(client, Message(name="OrderPlaced", body=b'{"order_id": "1"}'))
        send_raw(client, Message(name="OrderPlaced", body=b"not json at all"))
        send_raw(client, Message(name="OrderPlaced", body=b"{}", content_type="text/plain"))
        publish(client, OrderPlaced(order_id="ok", total=1))
        drain(client)
        dead = dead_letters(client, "reserve")
    assert [e.order_id for e in handled] == ["ok"], "the consumer survived and kept going"
    assert [m.body for m in dead] == [b'{"order_id": "1"}', b"not json at all", b"{}"]
    first = dead[0].headers
    assert "does not validate" in first["x-bus-dead-letter-reason"]
    assert "total" in first["x-bus-dead-letter-reason"]
    assert first["x-bus-handler"] == "reserve"
    assert first["x-bus-queue"] == "shop.reserve"
    assert first["x-bus-exception-type"] == "pydantic_core._pydantic_core.ValidationError"
    assert "Traceback" in first["x-bus-traceback"]
    assert "content type" in dead[2].headers["x-bus-dead-letter-reason"]


def test_reject_dead_letters_without_retrying() -> None:
    calls: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        calls.append(event.order_id)
        raise Reject("order is for a closed shop")

    app, _ = make_app(events)
    with TestClient(app) as client:
        message_id = publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
        dead = dead_letters(client)
    assert calls == ["1"]
    assert [m.id for m in dead] == [message_id]
    assert dead[0].headers["x-bus-dead-letter-reason"] == (
        "rejected by the handler: order is for a closed shop"
    )
    assert dead[0].headers["x-bus-exception-type"] == "fastapi_bus.core.exceptions.Reject"


def test_sync_handlers_run_in_a_thread() -> None:
    threads: list[int] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    def reserve(event: OrderPlaced) -> None:
        threads.append(threading.get_ident())

    app, _ = make_app(events)
    with TestClient(app) as client:
        loop_thread: int = client.portal.call(threading.get_ident)
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert len(threads) == 1 and threads[0] != loop_thread


class Card(BaseModel):
    kind: Literal["card"]
    last4: str


class Cash(BaseModel):
    kind: Literal["cash"]


def test_discriminated_union_events() -> None:
    seen: list[object] = []
    events = EventRouter()

    @events.on("payments.received")
    async def record(event: Annotated[Card | Cash, Field(discriminator="kind")]) -> None:
        seen.append(event)

    app, _ = make_app(events)
    with TestClient(app) as client:
        send_raw(
            client, Message(name="payments.received", body=b'{"kind": "card", "last4": "4242"}')
        )
        send_raw(client, Message(name="payments.received", body=b'{"kind": "cash"}'))
        send_raw(client, Message(name="payments.received", body=b'{"kind": "iou"}'))
        drain(client)
        dead = dead_letters(client, "record")
    assert seen == [Card(kind="card", last4="4242"), Cash(kind="cash")]
    assert len(dead) == 1


def test_two_services_each_get_the_event_and_replicas_compete() -> None:
    counts: dict[str, list[str]] = {"shop-1": [], "shop-2": [], "billing": []}

    def service_app(service: str, replica: str) -> FastAPI:
        events = EventRouter()

        @events.on(OrderPlaced)
        async def on_order(event: OrderPlaced) -> None:
            counts[replica].append(event.order_id)

        app = FastAPI()
        app.include_extension(
            BusExtension("memory://two-services", routers=[events], service=service)
        )
        return app

    apps = [
        service_app("shop", "shop-1"),
        service_app("shop", "shop-2"),
        service_app("billing", "billing"),
    ]
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two, TestClient(apps[2]) as three:
        for n in range(20):
            publish(one, OrderPlaced(order_id=str(n), total=1))
        for client in (one, two, three):
            drain(client)
    shop = sorted(counts["shop-1"] + counts["shop-2"], key=int)
    assert shop == [str(n) for n in range(20)], "replicas of one service share the work"
    assert sorted(counts["billing"], key=int) == [str(n) for n in range(20)]


def test_broadcast_handlers_get_every_event_in_every_process() -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def process(name: str) -> FastAPI:
        events = EventRouter()

        @events.on(OrderPlaced, broadcast=True)
        async def fan_out(event: OrderPlaced) -> None:
            seen[name].append(event.order_id)

        app = FastAPI()
        app.include_extension(BusExtension("memory://broadcast", routers=[events], service="chat"))
        return app

    with TestClient(process("a")) as a, TestClient(process("b")) as b:
        publish(a, OrderPlaced(order_id="1", total=1))
        drain(a)
        drain(b)
    assert seen == {"a": ["1"], "b": ["1"]}


def test_an_event_type_that_cannot_be_resolved_fails_at_declaration() -> None:
    events = EventRouter()

    class Local(BaseModel):
        n: int

    def handler(event: Local) -> None:
        pass

    handler.__annotations__["event"] = "Missing"
    with pytest.raises(ConfigurationError, match=r"handler 'handler'.*'event'.*Missing"):
        events.add_handler("x", handler)


def test_a_message_is_a_frozen_dataclass_with_defaults() -> None:
    import dataclasses
    from datetime import datetime, timezone

    message = Message(name="OrderPlaced", body=b"{}")
    assert len(message.id) == 32 and int(message.id, 16) >= 0
    assert message.headers == {} and message.attempt == 1 and not message.redelivered
    assert message.published_at.tzinfo is timezone.utc
    assert message.content_type == "application/json"
    assert Message(name="a", body=b"").id != Message(name="a", body=b"").id
    assert Message(name="a", body=b"").headers is not Message(name="a", body=b"").headers
    fields = dataclasses.asdict(message)
    assert list(fields) == [field.name for field in dataclasses.fields(Message)]
    assert Message(**fields) == message
    later = message.replace(attempt=3, published_at=datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert (later.attempt, later.id, message.attempt) == (3, message.id, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.attempt = 4  # type: ignore[misc]


def test_a_messages_time_and_headers_are_made_when_first_read_and_then_kept() -> None:
    import dataclasses
    from datetime import datetime, timezone

    before = datetime.now(timezone.utc)
    message = Message(name="a", body=b"")
    after = datetime.now(timezone.utc)
    published = message.published_at
    assert before - published < timedelta(milliseconds=1) and published <= after
    assert message.published_at is published, "made once, then the same"
    message.headers["x-seen"] = "1"
    assert message.headers == {"x-seen": "1"}, "headers written through the dict are kept"
    given = {"k": "v"}
    assert Message(name="a", body=b"", headers=given).headers is given
    for field in ("headers", "published_at"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, field, None)
    assert pickle.loads(pickle.dumps(message)) == message
    assert message.replace(redelivered=True).headers == {"x-seen": "1"}
