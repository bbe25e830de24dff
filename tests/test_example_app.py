"""The example shop, end to end on memory:// with a SQLite file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from example_app.db import Database, Email, Order, Payment, get_database
from example_app.events import StockReserved
from example_app.main import create_app
from example_app.payments import DECLINED_CARD, FLAKY_CARD, PaymentGateway, get_gateway
from fastapi_bus import FastAPI, get_bus
from fastapi_bus.testing import dead_letters, drain


@pytest.fixture
def gateway() -> PaymentGateway:
    return PaymentGateway(failure_rate=0)  # fails only for the special cards


@pytest.fixture
def app(tmp_path: Path, gateway: PaymentGateway) -> FastAPI:
    app = create_app("memory://", database_url=f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    app.dependency_overrides[get_gateway] = lambda: gateway
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def place(client: TestClient, **order: Any) -> str:
    response = client.post("/orders", json={"item": "widget", "quantity": 1, **order})
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


def history(client: TestClient, order_id: str) -> list[str]:
    return sorted(line["event"] for line in client.get(f"/orders/{order_id}").json()["history"])


def test_the_readme_quickstart(client: TestClient, gateway: PaymentGateway) -> None:
    """The two requests of the README's quickstart, with the answers it shows."""
    response = client.post("/orders", json={"order_id": "o1", "item": "widget", "quantity": 2})
    assert response.status_code == 202, response.text
    assert response.json() == {"order_id": "o1", "status": "placed"}

    drain(client)

    order = client.get("/orders/o1").json()
    assert order["status"] == "confirmed"
    assert order["charge_id"] == gateway.charges["o1"]
    assert order["emails"] == ["Order o1 confirmed"]
    assert history(client, "o1") == [
        "orders.confirmed",
        "orders.payment_captured",
        "orders.placed",
        "orders.stock_reserved",
    ]
    assert dead_letters(client) == []


def test_an_order_without_enough_stock_fails(client: TestClient, gateway: PaymentGateway) -> None:
    order_id = place(client, item="gadget", quantity=6)  # 5 in stock
    drain(client)
    order = client.get(f"/orders/{order_id}").json()
    assert (order["status"], order["reason"]) == ("failed", "not enough gadget in stock")
    assert order["emails"] == [f"Order {order_id} could not go through"]
    assert gateway.calls == []
    # The stock is untouched: five gadgets can still be ordered.
    drain(client)
    assert client.get(f"/orders/{place(client, item='gadget', quantity=5)}").status_code == 200
    drain(client)
    assert client.get("/orders").json()[0]["status"] == "confirmed"


def test_a_declined_card_fails_the_order_and_dead_letters_the_payment(
    client: TestClient, gateway: PaymentGateway
) -> None:
    order_id = place(client, card=DECLINED_CARD)
    drain(client)

    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == "failed"
    assert order["reason"] == "charge_payment: card ending 0002 was declined"
    assert order["charge_id"] is None
    assert "orders.failed" in history(client, order_id)
    # A decline is not worth retrying: one call, then the dead-letter queue.
    assert gateway.calls == [order_id]
    [letter] = dead_letters(client, "charge_payment")
    assert letter.name == "orders.stock_reserved"
    assert letter.correlation_id == order_id


def test_a_replayed_payment_completes_a_failed_order(
    app: FastAPI, client: TestClient, gateway: PaymentGateway
) -> None:
    order_id = place(client, card=DECLINED_CARD)
    drain(client)
    assert client.get(f"/orders/{order_id}").json()["status"] == "failed"

    gateway.declined.clear()  # the customer called their bank
    assert client.portal is not None
    replayed = client.portal.call(get_bus(app).dead_letters.replay)
    assert replayed == 1
    drain(client)

    order = client.get(f"/orders/{order_id}").json()
    assert (order["status"], order["reason"]) == ("confirmed", None)
    assert order["charge_id"] == gateway.charges[order_id]
    assert dead_letters(client) == []


def test_an_unavailable_gateway_is_retried(client: TestClient, gateway: PaymentGateway) -> None:
    order_id = place(client, card=FLAKY_CARD)
    drain(client)
    assert client.get(f"/orders/{order_id}").json()["status"] == "confirmed"
    assert gateway.calls == [order_id, order_id]  # failed once, then charged
    assert dead_letters(client) == []


def test_a_payment_delivered_twice_is_charged_once(
    app: FastAPI, client: TestClient, gateway: PaymentGateway
) -> None:
    """At-least-once delivery: the same message (same id) comes twice, here at the same time;
    one charge, one payment, one e-mail. (The second delivery either finds the payment, or
    fails on the payments table's unique constraint, is retried, and then finds it.)"""
    database: Database = app.dependency_overrides[get_database]()
    bus = get_bus(app)

    async def deliver_twice() -> None:
        async with database.sessions.begin() as session:
            session.add(
                Order(id="twice", item="widget", quantity=1, card="4242", status="reserved")
            )
        message = bus.encode(
            StockReserved(order_id="twice", item="widget", quantity=1, amount=250, card="4242"),
            correlation_id="twice",
        )
        await bus.transport.publish(message)
        await bus.transport.publish(message)

    async def count(model: type[Payment] | type[Email]) -> int:
        async with database.sessions() as session:
            found = await session.scalar(select(func.count()).select_from(model))
            return int(found or 0)

    assert client.portal is not None
    client.portal.call(deliver_twice)
    drain(client)

    assert client.get("/orders/twice").json()["status"] == "confirmed"
    assert list(gateway.charges) == ["twice"]
    assert client.portal.call(count, Payment) == 1
    assert client.portal.call(count, Email) == 1
    assert dead_letters(client) == []


def test_invalid_orders_are_refused_and_publish_nothing(
    client: TestClient, gateway: PaymentGateway
) -> None:
    assert client.post("/orders", json={"item": "widget", "quantity": 0}).status_code == 422
    assert client.post("/orders", json={"item": "nothing", "quantity": 1}).status_code == 422
    assert client.post("/orders", json={"item": "widget", "card": "x"}).status_code == 422
    for bad in ["", "a b", "x" * 65]:
        response = client.post("/orders", json={"order_id": bad, "item": "widget", "quantity": 1})
        assert response.status_code == 422, bad
    assert client.get("/orders/unknown").status_code == 404
    drain(client)
    assert client.get("/orders").json() == []
    assert gateway.calls == []


def test_an_order_id_is_used_once(client: TestClient, gateway: PaymentGateway) -> None:
    place(client, order_id="o1")
    drain(client)
    again = client.post("/orders", json={"order_id": "o1", "item": "widget", "quantity": 1})
    assert again.status_code == 409
    assert "o1" in again.json()["detail"]
    drain(client)
    assert gateway.calls == ["o1"]


def test_health_and_pages(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "bus": "consuming"}
    for page in ("/", "/shop", "/chat"):
        response = client.get(page)
        assert response.status_code == 200
        assert "<script" in response.text or page == "/"
        # No CDN: everything the pages load comes from the app itself.
        assert "http://" not in response.text and "https://" not in response.text
    assert client.get("/static/chat.js").status_code == 200
    # The events page documents what the example publishes and handles.
    document = client.get("/events/asyncapi.json").json()
    assert {"orders.placed", "chat.message", "chat.presence"} <= {
        channel["address"] for channel in document["channels"].values()
    }
