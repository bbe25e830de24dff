"""The example's chat and live feeds: the hub, WebSockets, and a client that never reads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from example_app.hub import Hub, Overflow
from example_app.live import get_hub
from example_app.main import create_app
from fastapi_bus import FastAPI
from fastapi_bus.testing import drain
from tests.utils import wait_until_sync


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app("memory://", database_url=f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def next_of(socket: Any, kind: str) -> dict[str, Any]:
    """The next item of ``kind`` on a test WebSocket (skipping the others)."""
    while True:
        item: dict[str, Any] = socket.receive_json()
        if item["type"] == kind:
            return item


def test_two_people_in_a_room_see_each_other(client: TestClient) -> None:
    with client.websocket_connect("/rooms/lobby/ws?user=ada") as ada:
        assert next_of(ada, "presence")["users"] == ["ada"]
        with client.websocket_connect("/rooms/lobby/ws?user=bob") as bob:
            assert next_of(ada, "presence")["users"] == ["ada", "bob"]
            assert next_of(bob, "presence")["users"] == ["ada", "bob"]
            assert client.get("/rooms/lobby/members").json() == ["ada", "bob"]
            bob.send_json({"text": "hi ada"})
            said = next_of(ada, "message")
            assert (said["user"], said["text"], said["room"]) == ("bob", "hi ada", "lobby")
            assert next_of(bob, "message")["text"] == "hi ada"
            # Over HTTP too, and an empty text is ignored rather than fatal.
            bob.send_json({"text": ""})
            response = client.post("/rooms/lobby/messages", json={"user": "api", "text": "hello"})
            assert response.status_code == 202
            assert next_of(ada, "message")["text"] == "hello"
        assert next_of(ada, "presence")["users"] == ["ada"]


def test_rooms_are_separate(client: TestClient) -> None:
    with (
        client.websocket_connect("/rooms/a/ws?user=ada") as ada,
        client.websocket_connect("/rooms/b/ws?user=bob") as bob,
    ):
        next_of(ada, "presence")
        next_of(bob, "presence")
        client.post("/rooms/b/messages", json={"user": "x", "text": "for b"})
        client.post("/rooms/a/messages", json={"user": "x", "text": "for a"})
        assert next_of(ada, "message")["text"] == "for a"
        assert next_of(bob, "message")["text"] == "for b"


def test_bad_room_names_and_messages_are_refused(client: TestClient) -> None:
    assert client.post("/rooms/a b/messages", json={"user": "x", "text": "t"}).status_code == 422
    assert client.post("/rooms/a/messages", json={"user": "x", "text": ""}).status_code == 422
    assert client.post("/rooms/a/messages", json={"user": "", "text": "t"}).status_code == 422


def test_a_stuck_client_does_not_hold_up_the_room(app: FastAPI, client: TestClient) -> None:
    """A client that never reads keeps at most ``maxsize`` items; the others get everything,
    and the broadcast handler never waits for it."""
    hub: Hub = app.dependency_overrides[get_hub]()
    assert client.portal is not None
    stuck = client.portal.call(hub.subscribe, "room:busy")  # connected, and never reads
    with client.websocket_connect("/rooms/busy/ws?user=ada") as ada:
        next_of(ada, "presence")
        texts = []
        for n in range(hub.maxsize * 3):
            client.post("/rooms/busy/messages", json={"user": "bob", "text": f"m{n}"})
            texts.append(next_of(ada, "message")["text"])  # ada keeps up, the stuck one not
    assert texts == [f"m{n}" for n in range(hub.maxsize * 3)]
    assert stuck.qsize() == hub.maxsize
    assert stuck.dropped > hub.maxsize


def test_the_hub_never_waits_and_stays_bounded() -> None:
    async def main() -> None:
        hub = Hub(maxsize=10)
        reader, stuck = hub.subscribe("t"), hub.subscribe("t")
        seen: list[int] = []

        async def read() -> None:
            while (item := await reader.get()) is not None:
                seen.append(item["n"])

        task = asyncio.create_task(read())
        for n in range(1000):
            assert hub.publish("t", {"n": n}) == 2  # synchronous: nothing to await
            await asyncio.sleep(0)  # the reader's turn
        assert (stuck.qsize(), stuck.dropped) == (10, 990)
        hub.unsubscribe(reader)
        await task
        assert seen == list(range(1000))
        assert hub.clients("t") == 1

    asyncio.run(main())


def test_the_disconnect_policy_closes_a_slow_client() -> None:
    async def main() -> None:
        hub = Hub(maxsize=2, overflow=Overflow.DISCONNECT)
        slow = hub.subscribe("t")
        for n in range(3):
            hub.publish("t", {"n": n})
        assert slow.closed
        assert await slow.get() is None  # its connection ends; the browser reconnects
        hub.unsubscribe(slow)
        assert hub.clients("t") == 0

    asyncio.run(main())


def test_a_hub_queue_holds_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Hub(maxsize=0)


def test_order_events_reach_the_live_feed(client: TestClient, app: FastAPI) -> None:
    hub: Hub = app.dependency_overrides[get_hub]()
    assert client.portal is not None
    feed = client.portal.call(hub.subscribe, "orders")
    client.post("/orders", json={"order_id": "live1", "item": "widget", "quantity": 1})
    drain(client)
    wait_until_sync(lambda: feed.qsize() >= 4, 10, "the order's events")
    assert client.get("/orders/live1").json()["status"] in ("confirmed", "failed")
