from __future__ import annotations

import pytest
from fastapi import Depends, Header, HTTPException
from fastapi.testclient import TestClient

from fastapi_bus import BusExtension, ConfigurationError, EventRouter, FastAPI, Reject
from fastapi_bus.testing import drain, publish
from tests.helpers import OrderPlaced


def require_admin(x_admin_token: str = Header(default="")) -> None:
    if x_admin_token != "secret":
        raise HTTPException(status_code=401, detail="admins only")


def admin_app() -> FastAPI:
    events = EventRouter()
    healed: list[str] = []

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        if event.order_id not in healed:
            raise Reject(f"cannot reserve {event.order_id}")

    app = FastAPI()
    app.state.healed = healed
    app.include_extension(
        BusExtension(
            routers=[events],
            service="shop",
            admin_url="/admin/bus",
            admin_dependencies=[Depends(require_admin)],
        )
    )
    return app


AUTH = {"X-Admin-Token": "secret"}


def test_admin_routes_list_show_replay_and_purge() -> None:
    app = admin_app()
    with TestClient(app) as client:
        first = publish(client, OrderPlaced(order_id="1", total=1))
        second = publish(client, OrderPlaced(order_id="2", total=1))
        drain(client)

        assert client.get("/admin/bus/dead-letters").status_code == 401
        listed = client.get("/admin/bus/dead-letters", headers=AUTH).json()
        assert [item["message_id"] for item in listed] == [first, second]
        assert listed[0]["reason"] == "rejected by the handler: cannot reserve 1"
        assert listed[0]["traceback"] is None
        shown = client.get(f"/admin/bus/dead-letters/{first}", headers=AUTH).json()
        assert "Reject" in shown["traceback"]
        assert client.get("/admin/bus/dead-letters/nope", headers=AUTH).status_code == 404
        assert client.get("/admin/bus/dead-letters?handler=nope", headers=AUTH).status_code == 404
        for query, expected in [("limit=1", [first]), (f"message_ids={second}", [second])]:
            found = client.get(f"/admin/bus/dead-letters?{query}", headers=AUTH).json()
            assert [item["message_id"] for item in found] == expected
        assert client.get("/admin/bus/dead-letters?limit=0", headers=AUTH).status_code == 422

        app.state.healed.append("1")
        replay = client.post(
            "/admin/bus/dead-letters/replay", json={"message_ids": [first]}, headers=AUTH
        )
        assert replay.json() == {"replayed": 1}
        drain(client)
        purge = client.post(
            "/admin/bus/dead-letters/purge", json={"handler": "reserve"}, headers=AUTH
        )
        assert purge.json() == {"purged": 1}
        assert client.get("/admin/bus/dead-letters", headers=AUTH).json() == []


def test_admin_routes_are_off_by_default_and_need_protection() -> None:
    app = FastAPI()
    app.include_extension(BusExtension(service="shop"))
    with TestClient(app) as client:
        assert client.get("/events/admin/dead-letters").status_code == 404
    with pytest.raises(ConfigurationError, match="admin_dependencies"):
        BusExtension(service="shop", admin_url="/admin")
