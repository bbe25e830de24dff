from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fastapi_bus import (
    BusExtension,
    ConfigurationError,
    ConsumeApp,
    Delivery,
    EventRouter,
    FastAPI,
    Middleware,
    RetryPolicy,
)
from fastapi_bus.testing import dead_letters, drain, publish
from tests.helpers import OrderPlaced


class Tagging:
    """Records the order in which middleware runs around a handler."""

    def __init__(self, app: ConsumeApp, *, name: str, log: list[str]) -> None:
        self.app = app
        self.name = name
        self.log = log

    async def __call__(self, delivery: Delivery) -> None:
        self.log.append(f"{self.name} before {delivery.route.name}")
        try:
            await self.app(delivery)
        finally:
            self.log.append(f"{self.name} after")


class Refuse:
    def __init__(self, app: ConsumeApp) -> None:
        self.app = app

    async def __call__(self, delivery: Delivery) -> None:
        raise PermissionError(f"tenant {delivery.message.headers.get('tenant')} is blocked")


def test_middleware_wraps_each_handler_first_outermost() -> None:
    log: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        log.append("handler")

    app = FastAPI()
    app.include_extension(
        BusExtension(
            routers=[events],
            service="shop",
            middleware=[
                Middleware(Tagging, name="outer", log=log),
                Middleware(Tagging, name="inner", log=log),
            ],
        )
    )
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert log == ["outer before reserve", "inner before reserve", "handler", "inner after",
                   "outer after"]  # fmt: skip


def test_a_failing_middleware_goes_through_retries_and_dead_letters() -> None:
    events = EventRouter(retry=RetryPolicy(attempts=2, backoff=0, delays=()))
    calls: list[str] = []

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        calls.append("handler")

    app = FastAPI()
    app.include_extension(
        BusExtension(routers=[events], service="shop", middleware=[Middleware(Refuse)])
    )
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1), headers={"tenant": "t9"})
        drain(client)
        dead = dead_letters(client)
    assert calls == []
    assert dead[0].headers["x-bus-exception-message"] == "tenant t9 is blocked"


def test_unknown_middleware_options_fail_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match=r"Middleware\(Tagging.*colour"):
        Middleware(Tagging, name="x", log=[], colour="red")
    with pytest.raises(ConfigurationError, match="needs a class"):
        Middleware("Tagging")  # type: ignore[arg-type]
    assert repr(Middleware(Refuse)) == "Middleware(Refuse)"
