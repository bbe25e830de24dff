"""The example orders service, end to end on memory://."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from example_app.main import Conflict, Session, Store, create_app, get_session, get_store
from fastapi_bus import FastAPI
from fastapi_bus.testing import dead_letters, drain


@pytest.fixture
def store() -> Store:
    return Store({"widget": 5, "gadget": 1})


@pytest.fixture
def app(store: Store) -> FastAPI:
    # A bus runs once, so each test gets an app of its own, here with a fresh store: the
    # override applies to the routes and to the event handlers alike.
    app = create_app("memory://")
    app.dependency_overrides[get_store] = lambda: store
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def audited(store: Store) -> list[str]:
    return sorted(entry.event for entry in store.audit.values())


def place(client: TestClient, item: str, quantity: int) -> str:
    response = client.post("/orders", json={"item": item, "quantity": quantity})
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "bus": "consuming"}


def test_placed_order_reserves_stock_and_is_confirmed(client: TestClient, store: Store) -> None:
    response = client.post(
        "/orders", json={"item": "widget", "quantity": 2}, headers={"X-Request-ID": "req-42"}
    )
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    assert response.json()["status"] == "placed"

    drain(client)

    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == "reserved"
    assert order["stock_reserved"] is True
    assert order["confirmation_sent"] is True  # the follow-up StockReserved was handled
    assert store.stock["widget"] == 3
    assert audited(store) == ["orders.placed", "orders.stock_reserved"]
    # The follow-up event carries the request's id as its correlation id.
    assert {entry.correlation_id for entry in store.audit.values()} == {"req-42"}
    assert {entry.order_id for entry in store.audit.values()} == {order_id}
    assert dead_letters(client) == []


def test_order_without_enough_stock(client: TestClient, store: Store) -> None:
    order_id = place(client, "gadget", 3)
    drain(client)

    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == "out_of_stock"
    assert order["confirmation_sent"] is False
    assert store.stock["gadget"] == 1
    assert audited(store) == ["orders.placed"]


def test_cancelling_returns_the_stock(client: TestClient, store: Store) -> None:
    order_id = place(client, "widget", 4)
    drain(client)
    assert store.stock["widget"] == 1

    response = client.post(f"/orders/{order_id}/cancel")
    assert response.status_code == 202
    drain(client)

    order = client.get(f"/orders/{order_id}").json()
    assert order["status"] == "cancelled"
    assert order["stock_reserved"] is False
    assert store.stock["widget"] == 5
    assert audited(store) == ["orders.cancelled", "orders.placed", "orders.stock_reserved"]

    # Cancelling twice is refused, and publishes nothing more.
    assert client.post(f"/orders/{order_id}/cancel").status_code == 409
    drain(client)
    assert len(store.audit) == 3
    assert store.stock["widget"] == 5


def test_invalid_requests_publish_nothing(client: TestClient, store: Store) -> None:
    assert client.post("/orders", json={"item": "widget", "quantity": 0}).status_code == 422
    assert client.post("/orders", json={"item": "nothing", "quantity": 1}).status_code == 422
    assert client.post("/orders/unknown/cancel").status_code == 404
    assert client.get("/orders/unknown").status_code == 404
    drain(client)

    assert store.orders == {}
    assert store.audit == {}
    assert store.stock == {"widget": 5, "gadget": 1}


def test_events_of_a_failed_request_are_not_sent(
    app: FastAPI, client: TestClient, store: Store
) -> None:
    # The endpoint publishes OrderPlaced, then its session fails to commit: the request
    # answers 409 and the event is dropped with it.
    def conflicting_session() -> Iterator[Session]:
        yield Session(store)
        raise Conflict("someone else changed the order")

    app.dependency_overrides[get_session] = conflicting_session

    response = client.post("/orders", json={"item": "widget", "quantity": 1})
    assert response.status_code == 409
    drain(client)

    assert store.orders == {}
    assert store.audit == {}
    assert store.stock["widget"] == 5


def test_the_readme_quickstart(client: TestClient) -> None:
    """The two requests of the README's quickstart, with the answers it shows."""
    response = client.post("/orders", json={"order_id": "o1", "item": "widget", "quantity": 2})
    assert response.status_code == 202, response.text
    assert response.json() == {"order_id": "o1", "status": "placed"}

    drain(client)

    order = client.get("/orders/o1").json()
    assert order["status"] == "reserved"
    assert order["confirmation_sent"] is True


def test_an_order_id_is_used_once(client: TestClient, store: Store) -> None:
    first = client.post("/orders", json={"order_id": "o1", "item": "widget", "quantity": 1})
    assert first.status_code == 202, first.text
    drain(client)
    again = client.post("/orders", json={"order_id": "o1", "item": "widget", "quantity": 1})
    assert again.status_code == 409
    assert "o1" in again.json()["detail"]
    drain(client)
    assert store.stock["widget"] == 4, "the refused order reserved nothing"


def test_a_malformed_order_id_is_refused(client: TestClient) -> None:
    for bad in ["", "a b", "x" * 65]:
        response = client.post("/orders", json={"order_id": bad, "item": "widget", "quantity": 1})
        assert response.status_code == 422, bad
