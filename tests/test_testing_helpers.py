"""fastapi_bus.testing: recording what was published, the async helpers, the pytest plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from fastapi_bus import Bus, BusExtension, EventRouter, FastAPI, Message, RetryPolicy
from fastapi_bus.testing import (
    PublishedEvents,
    adead_letters,
    adrain,
    apublish,
    drain,
    record_published,
)
from tests.helpers import OrderPlaced, OrderShipped

pytest_plugins = ["fastapi_bus.pytest_plugin"]


def create_app() -> FastAPI:
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced)
    async def ship(event: OrderPlaced, bus: Bus) -> None:
        if event.order_id == "bad":
            raise ValueError("cannot ship")
        await bus.publish(OrderShipped(order_id=event.order_id), headers={"tenant": "acme"})

    events.publishes("OrderShipped", OrderShipped)
    app = FastAPI()
    app.include_extension(BusExtension("memory://", service="shop", routers=[events]))

    @app.post("/orders", status_code=202)
    async def place(order: OrderPlaced, bus: Bus) -> None:
        await bus.publish(order)
        if order.total < 0:
            raise HTTPException(400, "negative total")

    return app


def test_records_what_endpoints_and_handlers_send() -> None:
    with TestClient(create_app()) as client, record_published(client) as published:
        assert client.post("/orders", json={"order_id": "1", "total": 2.5}).status_code == 202
        assert client.post("/orders", json={"order_id": "2", "total": -1}).status_code == 400
        drain(client)

        published.assert_published("OrderPlaced", payload={"order_id": "1"}, count=1)
        published.assert_published(payload=OrderShipped(order_id="1"), headers={"tenant": "acme"})
        # The request that failed sent nothing.
        published.assert_not_published("OrderPlaced", payload={"order_id": "2"})
        assert published.payloads("OrderShipped") == [{"order_id": "1"}]
        assert [m.name for m in published.messages] == ["OrderPlaced", "OrderShipped"]
        assert published.find(headers={"tenant": "other"}) == []


def test_a_failed_assertion_says_what_was_published() -> None:
    with TestClient(create_app()) as client, record_published(client) as published:
        client.post("/orders", json={"order_id": "1", "total": 2.5})
        drain(client)
        with pytest.raises(AssertionError, match=r"found 0; published: OrderPlaced \{"):
            published.assert_published("OrderCancelled")
        with pytest.raises(AssertionError, match="exactly 2"):
            published.assert_published("OrderPlaced", count=2)
        with pytest.raises(AssertionError, match="expected no published message"):
            published.assert_not_published("OrderShipped")


def test_recording_stops_after_the_block() -> None:
    with TestClient(create_app()) as client:
        with record_published(client) as published:
            pass
        client.post("/orders", json={"order_id": "1", "total": 2.5})
        drain(client)
        assert len(published) == 0


@pytest.mark.anyio
async def test_async_helpers() -> None:
    app = create_app()
    async with app.router.lifespan_context(app):
        with record_published(app) as published:
            await apublish(app, OrderPlaced(order_id="1", total=1.0))
            await apublish(app, OrderPlaced(order_id="bad", total=1.0))
            await adrain(app)
        published.assert_published("OrderShipped", payload={"order_id": "1"})
        [letter] = await adead_letters(app, "ship")
        assert isinstance(letter, Message)
        assert letter.headers["x-bus-exception-type"] == "builtins.ValueError"


def test_the_pytest_fixture(bus_published: Callable[[Any], PublishedEvents]) -> None:
    with TestClient(create_app()) as client:
        published = bus_published(client)
        client.post("/orders", json={"order_id": "1", "total": 2.5})
        drain(client)
        published.assert_published("OrderShipped", count=1)
