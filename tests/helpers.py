"""Small apps for tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import BackgroundTasks
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_bus import Bus, BusExtension, EventRouter, FastAPI, Message, Publisher, PublishError
from fastapi_bus.testing import drain


class OrderPlaced(BaseModel):
    order_id: str
    total: float


class OrderShipped(BaseModel):
    order_id: str


class Recorder:
    """Collects what handlers saw."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.messages: list[Message] = []

    def add(self, event: object, message: Message) -> None:
        self.events.append(event)
        self.messages.append(message)


def order_router(recorder: Recorder) -> EventRouter:
    """One handler, ``reserve_stock``, that records every ``OrderPlaced``."""
    events = EventRouter()

    @events.on("OrderPlaced")
    async def reserve_stock(event: OrderPlaced, msg: Message) -> None:
        recorder.add(event, msg)

    return events


def make_app(
    *routers: EventRouter, url: str = "memory://", service: str = "shop"
) -> tuple[FastAPI, BusExtension]:
    app = FastAPI()
    extension = BusExtension(url=url, routers=list(routers), service=service)
    app.include_extension(extension)
    return app, extension


def background_task_outcomes(publish: Callable[[Publisher], Awaitable[object]]) -> list[str]:
    """What ``publish`` did in a background task of a failed request (a 422), then of a
    successful one: ``"sent"``, or the message of the ``PublishError`` it raised."""
    app, _ = make_app(order_router(Recorder()))
    outcomes: list[str] = []

    async def later(bus: Publisher) -> None:
        try:
            await publish(bus)
            outcomes.append("sent")
        except PublishError as exc:
            outcomes.append(str(exc))

    @app.post("/orders")
    async def place(bus: Bus, tasks: BackgroundTasks) -> JSONResponse:
        tasks.add_task(later, bus)
        return JSONResponse({"error": "no"}, status_code=422, background=tasks)

    @app.post("/ok")
    async def ok(bus: Bus, tasks: BackgroundTasks) -> None:
        tasks.add_task(later, bus)

    with TestClient(app) as client:
        client.post("/orders")
        client.post("/ok")
        drain(client)
    return outcomes
